// POST /outbound/3rdparty/{service}/{path} on the stack's gateway and worker, with the sandbox
// payment provider as the third party.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, test } from 'node:test';
import { gatewayClient } from '../helpers/api';
import { sandboxControl } from '../helpers/sandbox';
import { testStack } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();
const sandbox = sandboxControl(`http://127.0.0.1:${stack.layout.ports.paymentSandbox}`);
const chargeBody = (source = 'pm_card_visa') => ({ request_body: { amount: 700, currency: 'usd', source } });

async function caller() {
  const { tenant, apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'out');
  const api = gatewayClient(stack.gatewayUrl, apiKey);
  return { tenant, api, outbound: (path: string, body: unknown, headers?: Record<string, string>) => api.call('POST', `/outbound/3rdparty/${path}`, body, headers) };
}

describe('outbound proxy', () => {
  test("answers with the third party's data and the correlation id; the call is an execution of the tenant's", async () => {
    const { tenant, api, outbound } = await caller();
    const r = await outbound('payments-sandbox/v1/charges', chargeBody(), { 'x-request-id': 'corr-outbound-1' });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.status, 'success');
    assert.equal(r.body.correlation_id, 'corr-outbound-1');
    assert.equal(r.body.data.object, 'charge');
    assert.equal(r.body.data.amount, 700);
    assert.equal((await sandbox.charges(tenant))[0]!.id, r.body.data.id, 'made with the platform credential for this tenant');
    assert.ok(!r.text.includes('sk_test_'), 'the credential never reaches the caller');
    const s = await api.status(r.headers.get('x-workflow-execution-id')!);
    assert.equal(s.body.workflow_type, 'third-party-call');
    assert.equal(s.body.status, 'COMPLETED');
  });

  test("a third party's 4xx is passed through as the caller's to fix", async () => {
    const { outbound } = await caller();
    const r = await outbound('payments-sandbox/v1/charges', chargeBody('pm_card_declined'));
    assert.equal(r.status, 402, r.text);
    assert.equal(r.body.error.code, 'third_party_rejected');
    assert.equal(r.body.data.error.decline_code, 'generic_decline');
  });

  test('bad requests are refused with the offending field', async () => {
    const { tenant, outbound } = await caller();
    const unknown = await outbound('nope/v1/x', {});
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, 'unknown_service');
    assert.equal(unknown.body.error.details[0].field, 'params.service');
    const key = await outbound('payments-sandbox/v1/charges', { internal_api_key: 'xxx', request_body: {} });
    assert.equal(key.status, 400);
    assert.equal(key.body.error.details[0].field, 'body.internal_api_key');
    const other = await outbound('payments-sandbox/v1/charges', { ...chargeBody(), tenant_id: `${tenant}-other` });
    assert.equal(other.status, 403);
    assert.equal(other.body.error.code, 'tenant_mismatch');
    const method = await outbound('payments-sandbox/v1/charges', { ...chargeBody(), method: 'TRACE' });
    assert.equal(method.status, 400);
    assert.equal(method.body.error.details[0].field, 'body.method');
    const wait = await outbound('payments-sandbox/v1/charges?wait=600', chargeBody());
    assert.equal(wait.status, 400);
    assert.equal(wait.body.error.details[0].field, 'query.wait');
    const anonymous = await fetch(`${stack.gatewayUrl}/outbound/3rdparty/payments-sandbox/v1/charges`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    assert.equal(anonymous.status, 401);
  });

  test("only the service's outbound list is open: no listing, refunding or revoking with the platform's key", async () => {
    const { outbound } = await caller();
    for (const [method, path] of [['GET', 'v1/charges'], ['POST', 'v1/refunds'], ['DELETE', 'v1/api_keys/key_1'], ['POST', 'v1/charges/x/..'], ['GET', 'v1/x/../charges']]) {
      const r = await outbound(`payments-sandbox/${path}`, { method, request_body: { charge: 'ch_someone_elses' } });
      assert.equal(r.status, 403, `${method} ${path}: ${r.text}`);
      assert.equal(r.body.error.code, 'outbound_not_allowed');
      assert.equal(r.body.error.details[0].field, 'params.path');
    }
  });

  test("the same Idempotency-Key from two tenants makes two charges: a client's key is its tenant's at the provider", async () => {
    const [a, b] = [await caller(), await caller()];
    const key = randomUUID();
    const ra = await a.outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': key });
    const rb = await b.outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': key });
    assert.equal(ra.status, 200, ra.text);
    assert.equal(rb.status, 200, rb.text);
    assert.notEqual(rb.body.data.id, ra.body.data.id, "not the other tenant's charge");
    assert.equal((await sandbox.charges(b.tenant)).length, 1, 'the second tenant was charged');
  });

  test("a URL in the path cannot take the call, and the platform's credential, to another host", async () => {
    const { outbound } = await caller();
    const seen: string[] = [];
    const elsewhere = createServer((req, res) => {
      seen.push(`${req.method} ${req.url} ${req.headers.authorization ?? ''}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"stolen":true}');
    });
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = elsewhere.address() as AddressInfo;
      for (const path of [`http:%2F%2F127.0.0.1:${port}%2Fsteal`, `http://127.0.0.1:${port}/steal`, `%2F%2F127.0.0.1:${port}%2Fsteal`]) {
        const r = await outbound(`payments-sandbox/${path}?wait=20`, { method: 'GET' });
        assert.notEqual(r.status, 200, `${path}: ${r.text}`);
        assert.ok(!r.text.includes('stolen'), r.text);
      }
      assert.deepEqual(seen, [], 'nothing reached the other host');
    } finally {
      elsewhere.close();
    }
  });

  test('past the deadline: 202 with the execution id, and the answer later from the status API', async () => {
    const { tenant, api, outbound } = await caller();
    await sandbox.faults(tenant, { latency_ms: 2500 });
    try {
      const r = await outbound('payments-sandbox/v1/charges?wait=0.5', chargeBody());
      assert.equal(r.status, 202, r.text);
      const id = r.body.execution_id as string;
      assert.equal(r.headers.get('x-workflow-execution-id'), id);
      const done = await api.result(id, 20);
      assert.equal(done.body.status, 'COMPLETED');
      assert.equal(done.body.result.status, 200);
      assert.equal(done.body.result.data.object, 'charge');
    } finally {
      await sandbox.clearFaults(tenant);
    }
  });

  test('the same Idempotency-Key gives the same execution and calls the third party once', async () => {
    const { tenant, outbound } = await caller();
    const key = randomUUID();
    const a = await outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': key });
    const b = await outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': key });
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(a.headers.get('x-workflow-execution-id'), b.headers.get('x-workflow-execution-id'));
    assert.equal(a.body.data.id, b.body.data.id);
    assert.equal((await sandbox.charges(tenant)).length, 1);
    const changed = await outbound('payments-sandbox/v1/charges', { request_body: { amount: 1, currency: 'usd', source: 'pm_card_visa' } }, { 'idempotency-key': key });
    assert.equal(changed.status, 422);
  });

  test('a failing third party: 502 with retry_after, then 503 once the breaker opens, then 200 after it recovers', async () => {
    const { tenant, outbound } = await caller();
    await sandbox.faults(tenant, { fail_next: 10_000 });
    try {
      const first = await outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': randomUUID() });
      assert.equal(first.status, 502, first.text);
      assert.equal(first.body.error.code, 'third_party_failed');
      assert.equal(first.body.retry_after, 5);
      assert.equal((await sandbox.requests(tenant, '/v1/charges')).length, 4, 'the first try and three in-call retries (a charge with an Idempotency-Key)');
      // Without a key a failed POST is not sent again: it may have been made.
      const unkeyed = await outbound('payments-sandbox/v1/charges', chargeBody());
      assert.equal(unkeyed.status, 502, unkeyed.text);
      assert.equal((await sandbox.requests(tenant, '/v1/charges')).length, 5, 'one try');
      let open = first;
      for (let i = 0; i < 5 && open.status !== 503; i++) open = await outbound('payments-sandbox/v1/charges', chargeBody());
      assert.equal(open.status, 503, open.text);
      assert.equal(open.body.error.code, 'third_party_unavailable');
      assert.equal(open.body.error.message, '3rd-party service unavailable');
      const retryAfter = Number(open.headers.get('retry-after'));
      assert.ok(retryAfter >= 1 && retryAfter <= 3, `Retry-After ${retryAfter} (the test stack's breaker probes after 3 s)`);
      assert.equal(open.body.retry_after, retryAfter);
      await sandbox.clearFaults(tenant);
      await new Promise((r) => setTimeout(r, retryAfter * 1000 + 200));
      const back = await outbound('payments-sandbox/v1/charges', chargeBody());
      assert.equal(back.status, 200, back.text);
    } finally {
      await sandbox.clearFaults(tenant);
    }
  });

  test("the provider refusing the platform's own key is 503 credentials_unavailable, not a 401 to a caller whose key is fine", async () => {
    const { tenant, outbound } = await caller();
    await sandbox.faults(tenant, { reject_key_next: 2 });
    const key = { 'idempotency-key': randomUUID() };
    try {
      const r = await outbound('payments-sandbox/v1/charges', chargeBody(), key);
      assert.equal(r.status, 503, r.text);
      assert.equal(r.body.error.code, 'credentials_unavailable');
      assert.ok(Number(r.headers.get('retry-after')) > 0);
      assert.deepEqual((await sandbox.requests(tenant, '/v1/charges')).map((x) => x.status), [401, 401], 'the key was read again once');
      // Retried with the same Idempotency-Key once the key works again, as Retry-After says: a new attempt, not the old answer.
      await sandbox.clearFaults(tenant);
      const retry = await outbound('payments-sandbox/v1/charges', chargeBody(), key);
      assert.equal(retry.status, 200, retry.text);
    } finally {
      await sandbox.clearFaults(tenant);
    }
  });

  test('a call that failed can be retried with the same Idempotency-Key: the retry calls the third party again', async () => {
    const { tenant, api, outbound } = await caller();
    const key = randomUUID();
    await sandbox.faults(tenant, { fail_next: 10_000 });
    const failed = await outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': key });
    await sandbox.clearFaults(tenant);
    // 502, or 503 if the breaker is still open from the test before.
    assert.ok([502, 503].includes(failed.status), failed.text);
    const id = failed.headers.get('x-workflow-execution-id');
    const failedStatus = await api.call('GET', `/api/workflows/${id}`);
    assert.equal(failedStatus.body.status, 'FAILED', failedStatus.text);
    // The provider has recovered; the client retries as told (a breaker the failures opened answers 503 meanwhile).
    let retry = failed;
    for (let i = 0; i < 10 && retry.status !== 200; i++) {
      await new Promise((r) => setTimeout(r, retry.status === 503 ? Number(retry.headers.get('retry-after')) * 1000 + 200 : 200));
      retry = await outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': key });
    }
    assert.equal(retry.status, 200, retry.text);
    assert.equal(retry.headers.get('x-workflow-execution-id'), id, 'the same execution id');
    const status = await api.call('GET', `/api/workflows/${id}`);
    assert.equal(status.body.status, 'COMPLETED', `the status follows the retry's run, not the failed one read before: ${status.text}`);
    assert.equal((await sandbox.charges(tenant)).length, 1, 'one charge');
    // And once it succeeded, the key replays the success without another call.
    const calls = (await sandbox.requests(tenant, '/v1/charges')).length;
    const again = await outbound('payments-sandbox/v1/charges', chargeBody(), { 'idempotency-key': key });
    assert.equal(again.status, 200);
    assert.equal(again.body.data.id, retry.body.data.id);
    assert.equal((await sandbox.requests(tenant, '/v1/charges')).length, calls);
  });
});
