// The core journey against the real stack: start, idempotency, track, steer, isolation, bad input.
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { before, describe, test } from 'node:test';
import { connect } from 'nats';
import { ExecutionIds } from '../../lib/execution-ids';
import { gatewayClient } from '../helpers/api';
import { eventually, testStack } from '../helpers/stack';
import { consumerKey, newTenant } from '../helpers/tenant';

const stack = testStack();
type Client = ReturnType<typeof gatewayClient>;

async function untilStatus(api: Client, id: string, wanted: string | ((b: any) => boolean), timeoutMs = 20_000) { // eslint-disable-line @typescript-eslint/no-explicit-any
  let last: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  const notOk: string[] = []; // checked afterwards: eventually() retries past a failed assertion
  await eventually(`execution ${id} to reach ${String(wanted)}`, async () => {
    const r = await api.status(id);
    if (r.status !== 200) notOk.push(`${r.status} ${r.text}`);
    last = r.body;
    return r.status === 200 && (typeof wanted === 'string' ? last.status === wanted : wanted(last));
  }, timeoutMs);
  assert.deepEqual(notOk, [], 'every status answer on the way was 200');
  return last;
}

describe('core journey', () => {
  let a: Client; // tenant A
  let a2: Client; // tenant A, another consumer (an approver)
  let b: Client; // tenant B
  let tenantA: string;
  before(async () => {
    const ta = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'ja');
    const tb = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'jb');
    tenantA = ta.tenant;
    a = gatewayClient(stack.gatewayUrl, ta.apiKey);
    a2 = gatewayClient(stack.gatewayUrl, await consumerKey(stack.env.FLOWGATE_DATABASE_URL!, ta.tenant, 'approver'));
    b = gatewayClient(stack.gatewayUrl, tb.apiKey);
  });

  describe('idempotency', () => {
    test('the same key and body give the same execution id and answer; one workflow runs', async () => {
      const key = randomUUID();
      const first = await a.start('hello', { name: 'idem' }, { 'idempotency-key': key });
      const second = await a.start('hello', { name: 'idem' }, { 'idempotency-key': key });
      assert.equal(first.status, 202);
      assert.equal(second.status, 202);
      assert.deepEqual(second.body, first.body);
      assert.equal(second.headers.get('x-workflow-execution-id'), first.body.execution_id);
      await untilStatus(a, first.body.execution_id, 'COMPLETED');
      const third = await a.start('hello', { name: 'idem' }, { 'idempotency-key': key });
      assert.equal(third.body.execution_id, first.body.execution_id, 'still the same id after completion');
      const list = await a.list('?type=hello&limit=100');
      assert.equal(list.body.executions.filter((e: { execution_id: string }) => e.execution_id === first.body.execution_id).length, 1);
    });

    test('the same key with another body is refused with 422', async () => {
      const key = randomUUID();
      assert.equal((await a.start('hello', { name: 'one' }, { 'idempotency-key': key })).status, 202);
      const other = await a.start('hello', { name: 'two' }, { 'idempotency-key': key });
      assert.equal(other.status, 422);
      assert.equal(other.body.error.code, 'idempotency_key_reused');
      assert.equal(other.body.error.details[0].field, 'headers.idempotency-key');
    });

    test('once the key is forgotten (after 24 h), the same key with another body is a new execution; with the same body, the first', async () => {
      const key = randomUUID();
      // What the key store's 24-hour TTL does: the gateway's entry for the key goes.
      const forget = async () => {
        const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
        try {
          await (await nc.jetstream().views.kv('flowgate_idempotency')).purge(`${tenantA}.${createHash('sha256').update(key).digest('hex')}`);
        } finally { await nc.close(); }
      };
      const first = await a.start('hello', { name: 'one' }, { 'idempotency-key': key });
      assert.equal(first.status, 202, first.text);
      assert.deepEqual((await untilStatus(a, first.body.execution_id, 'COMPLETED')).result, { greeting: 'Hello, one!' });
      await forget();
      const other = await a.start('hello', { name: 'two' }, { 'idempotency-key': key });
      assert.equal(other.status, 202, other.text);
      assert.notEqual(other.body.execution_id, first.body.execution_id, 'another body is another execution, not the old one with the body dropped');
      assert.deepEqual((await untilStatus(a, other.body.execution_id, 'COMPLETED')).result, { greeting: 'Hello, two!' });
      assert.equal((await a.start('hello', { name: 'one' }, { 'idempotency-key': key })).status, 422, 'remembered again, with the new body');
      await forget();
      const again = await a.start('hello', { name: 'one' }, { 'idempotency-key': key });
      assert.equal(again.body.execution_id, first.body.execution_id, 'the first body still names the first execution');
    });

    test("a key in the platform's own namespaces (an event rule's, the outbound proxy's) is refused", async () => {
      for (const key of [`event:${randomUUID()}:evt-1`, `outbound:${randomUUID()}`]) {
        const r = await a.start('hello', { name: 'x' }, { 'idempotency-key': key });
        assert.equal(r.status, 400, key);
        assert.equal(r.body.error.details[0].field, 'headers.idempotency-key');
      }
      assert.equal((await a.start('hello', { name: 'x' }, { 'idempotency-key': `order:event:${randomUUID()}` })).status, 202);
    });

    test('the same key from another tenant is another execution', async () => {
      const key = randomUUID();
      const ra = await a.start('hello', { name: 'x' }, { 'idempotency-key': key });
      const rb = await b.start('hello', { name: 'x' }, { 'idempotency-key': key });
      assert.equal(rb.status, 202);
      assert.notEqual(rb.body.execution_id, ra.body.execution_id);
    });
  });

  describe('track and steer', () => {
    test('waiting_for names the approval; a signal from another person completes it', async () => {
      const start = await a.start('approval-request', { subject: 'deploy', requester: 'alice', timeout_seconds: 3600 });
      assert.equal(start.status, 202);
      const id = start.body.execution_id;
      const waiting = await untilStatus(a, id, (s) => s.status === 'RUNNING' && s.waiting_for?.kind === 'approval');
      assert.equal(waiting.current_step, 'await-decision');
      assert.equal(waiting.waiting_for.name, 'approve');
      assert.ok(Date.parse(waiting.waiting_for.since) > 0);
      assert.equal(waiting.workflow_type, 'approval-request');

      const unknown = await a.signal(id, 'launch', {});
      assert.equal(unknown.status, 400);
      assert.equal(unknown.body.error.code, 'unknown_signal');
      for (const inherited of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
        const r = await a.signal(id, inherited, {});
        assert.equal(r.status, 400, `${inherited}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error.code, 'unknown_signal');
        assert.equal(r.body.error.details[0].field, 'params.name');
      }
      const bad = await a.signal(id, 'approve', { approver: 42 });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.details[0].field, 'signal.approver');

      assert.equal((await b.signal(id, 'approve', { approver: 'mallory' })).status, 404, "another tenant can't signal");
      // One correlation id through the whole flow: the requester's own approve (ignored by the
      // workflow), then bob's from another consumer's key. Each is its own signal, not a duplicate of the other.
      const flow = { 'x-request-id': `flow-${id}` };
      assert.equal((await a.call('POST', `/api/workflows/${id}/signals/approve`, { approver: 'alice' }, flow)).status, 202);
      const ok = await a2.call('POST', `/api/workflows/${id}/signals/approve`, { approver: 'bob' }, flow);
      assert.equal(ok.status, 202);
      const done = await untilStatus(a, id, 'COMPLETED');
      assert.equal(done.result.approver, 'bob');
      assert.equal(done.progress, 100);
      assert.equal(done.waiting_for, null);
    });

    test('cancel ends a running workflow as CANCELED; a closed one answers 409', async () => {
      const start = await a.start('approval-request', { subject: 'c', requester: 'alice' });
      const id = start.body.execution_id;
      await untilStatus(a, id, 'RUNNING');
      assert.equal((await b.cancel(id)).status, 404, "another tenant can't cancel");
      const c = await a.cancel(id);
      assert.equal(c.status, 202);
      await untilStatus(a, id, 'CANCELED');
      const again = await a.cancel(id);
      assert.equal(again.status, 409);
      assert.equal(again.body.error.code, 'execution_closed');
    });

    test('a failure is reported with its type and message', async () => {
      const start = await a.start('approval-request', { subject: 'r', requester: 'alice' });
      const id = start.body.execution_id;
      await untilStatus(a, id, 'RUNNING');
      await a2.signal(id, 'reject', { approver: 'carol', comment: 'no' });
      const failed = await untilStatus(a, id, 'FAILED');
      assert.equal(failed.error.type, 'ApprovalRejected');
      assert.match(failed.error.message, /carol/);
    });

    test('result long-polls: a closed execution returns at once, an open one 202 at the deadline', async () => {
      const hello = await a.start('hello', { name: 'poll' });
      await untilStatus(a, hello.body.execution_id, 'COMPLETED');
      const t = Date.now();
      const r = await a.result(hello.body.execution_id, 10);
      assert.ok(Date.now() - t < 1000, `a closed execution's result at once, not at the deadline (${Date.now() - t} ms)`);
      assert.equal(r.status, 200);
      assert.equal(r.body.status, 'COMPLETED');
      assert.deepEqual(r.body.result, { greeting: 'Hello, poll!' });
      const waiting = await a.start('approval-request', { subject: 'w', requester: 'alice' });
      const t0 = Date.now();
      const open = await a.result(waiting.body.execution_id, 1);
      assert.equal(open.status, 202);
      assert.ok(['ACCEPTED', 'RUNNING'].includes(open.body.status));
      assert.ok(Date.now() - t0 >= 900);
      await a.cancel(waiting.body.execution_id);
    });

    test('the list holds only the tenant\'s executions, filtered, newest first, with a cursor', async () => {
      const ids: string[] = [];
      // One after the other, so that start and close order agree.
      for (let i = 0; i < 3; i++) {
        ids.push((await a.start('hello', { name: `list-${i}` })).body.execution_id);
        await untilStatus(a, ids[i]!, 'COMPLETED');
      }
      // An execution of another type and one still running, which the filters must leave out.
      const other = (await a.start('approval-request', { subject: 'list', requester: 'alice' })).body.execution_id as string;
      await untilStatus(a, other, 'RUNNING');
      type Entry = { execution_id: string; workflow_type: string; status: string };
      let filtered: Entry[] = [];
      let running: Entry[] = [];
      await eventually('visibility to show them', async () => {
        filtered = (await a.list('?status=COMPLETED&type=hello&limit=100')).body.executions;
        running = (await a.list('?status=RUNNING&limit=100')).body.executions;
        const seen = new Set(filtered.map((e) => e.execution_id));
        return ids.every((id) => seen.has(id)) && running.some((e) => e.execution_id === other);
      });
      assert.ok(filtered.every((e) => e.workflow_type === 'hello' && e.status === 'COMPLETED'), JSON.stringify(filtered));
      assert.ok(running.every((e) => e.status === 'RUNNING'), JSON.stringify(running));
      await a.cancel(other);
      assert.deepEqual(filtered.map((e) => e.execution_id).filter((id) => ids.includes(id)), [...ids].reverse(), 'newest first');
      const page1 = await a.list('?type=hello&limit=2');
      assert.equal(page1.status, 200);
      assert.deepEqual(page1.body.executions.map((e: Entry) => e.execution_id), [ids[2], ids[1]], 'the newest two first');
      assert.ok(page1.body.next_cursor);
      const page2 = await a.list(`?type=hello&limit=2&cursor=${page1.body.next_cursor}`);
      const overlap = page2.body.executions.filter((e: { execution_id: string }) => page1.body.executions.some((p: { execution_id: string }) => p.execution_id === e.execution_id));
      assert.equal(overlap.length, 0);
      const bList = await b.list('?limit=100');
      assert.ok(bList.body.executions.every((e: { execution_id: string }) => !ids.includes(e.execution_id)), 'B sees none of A');
      const bad = await a.list('?status=SLEEPING');
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.details[0].field, 'query.status');
      // A cursor the gateway did not hand out to this tenant: 400 naming it, at once (Temporal
      // itself answers an unreadable page token with an error its client retries for seconds).
      assert.equal((await b.list(`?limit=2&cursor=${page1.body.next_cursor}`)).status, 400, "another tenant's cursor");
      for (const cursor of ['abc', 'not%20a%20cursor', `${page1.body.next_cursor}x`, `AAAA.${'A'.repeat(22)}`]) {
        const r = await a.list(`?type=hello&limit=2&cursor=${cursor}`);
        assert.equal(r.status, 400, `${cursor}: ${JSON.stringify(r.body)}`);
        assert.equal(r.body.error.code, 'validation_failed');
        assert.equal(r.body.error.details[0].field, 'query.cursor');
      }
    });
  });

  describe('isolation', () => {
    test("another tenant's execution is 404 on status and result, never 403", async () => {
      const start = await a.start('hello', { name: 'mine' });
      const id = start.body.execution_id;
      await untilStatus(a, id, 'COMPLETED');
      for (const r of [await b.status(id), await b.result(id, 0)]) {
        assert.equal(r.status, 404);
        assert.equal(r.body.error.code, 'not_found');
      }
    });

    test('X-Tenant-ID must agree with the credential', async () => {
      const r = await b.start('hello', { name: 'x' }, { 'x-tenant-id': tenantA });
      assert.equal(r.status, 403);
      assert.equal(r.body.error.code, 'tenant_mismatch');
    });

    test('made-up ids are 404', async () => {
      assert.equal((await a.status('fgx_AAAAAAAAAAAAAAAAAAAAAA_AAAAAAAAAAAAAAAA')).status, 404);
      assert.equal((await a.status('not-an-id')).status, 404);
    });

    test('an id Temporal does not know, with nothing of the tenant waiting to start, is 404, not ACCEPTED for ever', async () => {
      const t = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'jr');
      const api = gatewayClient(stack.gatewayUrl, t.apiKey);
      const done = await api.start('hello', { name: 'kept' });
      assert.equal(done.status, 202, done.text);
      await untilStatus(api, done.body.execution_id, 'COMPLETED');
      // An id the gateway minted for the tenant that Temporal does not know: what a run deleted at
      // the end of the namespace's retention looks like to the gateway (Temporal answers "not
      // found" for both), and what an id whose start answered 503 is. Nothing of the tenant waits
      // in JetStream, so it is neither queued nor running: 404.
      const gone = await api.status(new ExecutionIds(stack.env.FLOWGATE_EXECUTION_ID_SECRET!).mint(t.tenant));
      assert.equal(gone.status, 404, gone.text);
      assert.equal(gone.body.error.code, 'not_found');
    });
  });

  describe('bad input', () => {
    test('unknown workflow type is 404 with a stable code', async () => {
      const r = await a.start('no-such-type', {});
      assert.equal(r.status, 404);
      assert.equal(r.body.error.code, 'unknown_workflow_type');
      assert.ok(r.body.correlation_id);
    });

    test('invalid input is 400 naming each offending field', async () => {
      const r = await a.start('approval-request', { subject: '', requester: 7, timeout_seconds: -1 });
      assert.equal(r.status, 400);
      assert.equal(r.body.error.code, 'validation_failed');
      const fields = r.body.error.details.map((d: { field: string }) => d.field).sort();
      assert.deepEqual(fields, ['body.requester', 'body.subject', 'body.timeout_seconds']);
    });

    test('malformed JSON is 400, a body over the limit 413', async () => {
      const bad = await a.call('POST', '/api/workflows/hello', '{"name": ', {});
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, 'malformed_json');
      const big = await a.call('POST', '/api/workflows/hello', JSON.stringify({ name: 'x'.repeat(2_000_000) }));
      assert.equal(big.status, 413);
      assert.equal(big.body.error.code, 'body_too_large');
    });

    test('a missing or wrong key is 401', async () => {
      const none = await fetch(`${stack.gatewayUrl}/api/workflows/hello`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"name":"x"}' });
      assert.equal(none.status, 401);
      assert.equal(((await none.json()) as { error: { code: string } }).error.code, 'unauthenticated');
      const wrong = await gatewayClient(stack.gatewayUrl, 'fgk_nope_nope').start('hello', { name: 'x' });
      assert.equal(wrong.status, 401);
      assert.equal(wrong.body.error.code, 'invalid_credential');
      const viaHeader = await fetch(`${stack.gatewayUrl}/api/workflow-types`, { headers: { 'x-api-key': 'wrong' } });
      assert.equal(viaHeader.status, 200, 'workflow types are public');
    });
  });

  test('GET /api/workflow-types publishes JSON Schemas', async () => {
    const r = await a.call('GET', '/api/workflow-types');
    assert.equal(r.status, 200);
    const hello = r.body.workflow_types.find((t: { name: string }) => t.name === 'hello');
    assert.deepEqual(hello.input_schema.required, ['name']);
  });

  test('metrics count triggers by tenant, workflow and outcome', async () => {
    const text = await (await fetch(`http://127.0.0.1:${stack.layout.ports.gatewayStatus}/metrics`)).text();
    assert.match(text, new RegExp(`workflow_triggers_total\\{[^}]*tenant="${tenantA}"[^}]*workflow="hello"[^}]*outcome="accepted"[^}]*\\} \\d+`));
    assert.match(text, /workflow_trigger_publish_duration_seconds_bucket/);
    assert.match(text, /workflow_status_request_duration_seconds_count/);
    const triggers = await (await fetch(`http://127.0.0.1:${stack.layout.ports.triggersStatus}/metrics`)).text();
    assert.match(triggers, /workflow_trigger_to_start_lag_seconds_count\{[^}]*\} [1-9]/);
  });
});
