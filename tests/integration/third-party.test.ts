// The third-party client against the real OpenBao, NATS, Kafka and the sandbox payment provider:
// in-call retries, what the breaker counts, fail-fast while open, the fleet following an open,
// the credential re-read on a 401, the contract headers and the Kafka record of every call.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { connect } from 'nats';
import { createKafka, TOPICS } from '../../lib/kafka';
import { KafkaBatcher } from '../../lib/kafka-batcher';
import { createLogger } from '../../lib/logger';
import { BreakerOpenError, BreakerRegistry, type BreakerEvent } from '../../lib/third-party/breakers';
import { ThirdPartyClient, ThirdPartyUnavailable } from '../../lib/third-party/client';
import { CredentialCache, thirdPartySecretPath } from '../../lib/third-party/credentials';
import { thirdPartyService } from '../../lib/third-party/services';
import { createVault } from '../../lib/vault';
import { sandboxControl } from '../helpers/sandbox';
import { eventually, testStack } from '../helpers/stack';

const stack = testStack();
const sandbox = sandboxControl(`http://127.0.0.1:${stack.layout.ports.paymentSandbox}`);
const vault = createVault(stack.env.FLOWGATE_VAULT_ADDR!, stack.env.FLOWGATE_VAULT_TOKEN);
const logger = createLogger('worker', 'silent');
const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'third-party-test');
const recorder = new KafkaBatcher(kafka, logger);
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await recorder.close();
});

/** A service of its own (own Vault path, own breaker) pointing at the sandbox, with a fresh key in Vault. */
async function service(settings: Record<string, unknown> = {}, baseUrl = sandbox.url) {
  const name = `tp-${randomBytes(4).toString('hex')}`;
  const key = await sandbox.newKey();
  await vault.write(`secret/data/${thirdPartySecretPath(name)}`, { data: { value: key.secret } });
  const svc = thirdPartyService.parse({ name, base_url: baseUrl, ...settings });
  const breakers = new BreakerRegistry([svc], { instance: `test-${name}` });
  cleanups.push(async () => breakers.shutdown());
  const client = new ThirdPartyClient([svc], { credentials: new CredentialCache(vault), breakers, recorder });
  return { name, key, svc, breakers, client, tenant: `tenant-${name}` };
}

/** A charge as payments make one: with an Idempotency-Key, so a failed attempt may be sent again. */
const charge = (s: Awaited<ReturnType<typeof service>>, body: Record<string, unknown> = { amount: 100, currency: 'eur', source: 'pm_card_visa' }, opts: { key?: string | null; signal?: AbortSignal; path?: string } = {}) =>
  s.client.call({
    tenant: s.tenant, service: s.name, method: 'POST', path: opts.path ?? '/v1/charges', body, correlationId: randomUUID(), signal: opts.signal,
    ...(opts.key === null ? {} : { idempotencyKey: opts.key ?? `test-${randomUUID()}` }),
  });

describe('in-call retries', () => {
  test('5xx is retried after 100/200 ms and the third attempt succeeds', async () => {
    const s = await service();
    await sandbox.faults(s.tenant, { fail_next: 2 });
    const t0 = performance.now();
    const res = await charge(s);
    assert.equal(res.status, 200);
    assert.equal(res.attempts, 3);
    assert.ok(performance.now() - t0 >= 300, 'waited 100 + 200 ms between attempts');
    assert.deepEqual((await sandbox.requests(s.tenant, '/v1/charges')).map((r) => r.status), [503, 503, 200]);
  });

  test('a 4xx is answered at once: never retried, never counted against the breaker', async () => {
    const s = await service({ breaker: { volume_threshold: 3 } });
    for (let i = 0; i < 6; i++) {
      const res = await charge(s, { amount: -1, currency: 'eur', source: 'pm_card_visa' });
      assert.equal(res.status, 400);
      assert.equal(res.attempts, 1);
    }
    assert.equal(s.breakers.state(s.name), 'closed');
    assert.equal((await sandbox.requests(s.tenant, '/v1/charges')).length, 6);
  });

  test('a timeout is a failure: retried, then ThirdPartyUnavailable with error code timeout', async () => {
    const s = await service({ timeout_ms: 150, retry_delays_ms: [10] });
    await sandbox.faults(s.tenant, { latency_ms: 600 });
    await assert.rejects(charge(s), (err: unknown) => {
      assert.ok(err instanceof ThirdPartyUnavailable);
      assert.equal(err.errorCode, 'timeout');
      assert.equal(err.attempts, 2);
      return true;
    });
  });

  test('a POST without an Idempotency-Key is not sent again: the failed attempt may have taken effect', async () => {
    const s = await service();
    // The provider commits the charge, then answers 500.
    await sandbox.faults(s.tenant, { fail_after_commit_next: 1 });
    await assert.rejects(charge(s, undefined, { key: null }), (err: unknown) => {
      assert.ok(err instanceof ThirdPartyUnavailable);
      assert.equal(err.attempts, 1);
      return true;
    });
    assert.equal((await sandbox.charges(s.tenant)).length, 1, 'one charge, not a second one from a retry');
    // With a key the retry is the same request, answered from the provider's idempotency record.
    await sandbox.faults(s.tenant, { fail_after_commit_next: 1 });
    const keyed = await charge(s);
    assert.equal(keyed.status, 200);
    assert.equal(keyed.attempts, 2);
    assert.equal((await sandbox.charges(s.tenant)).length, 2);
  });

  test("a path the URL parser would read as a host (//x:y/..) is called, and recorded, under the service's base", async () => {
    const s = await service();
    const res = await charge(s, undefined, { path: '//x:y/../v1/charges' });
    assert.equal(res.status, 200);
    assert.equal(s.breakers.state(s.name), 'closed');
  });
});

describe('breaker', () => {
  test('what is not the third party failing does not count: Vault away, a cancelled call', async () => {
    const s = await service({ breaker: { volume_threshold: 3 } });
    const noVault = new ThirdPartyClient([s.svc], { credentials: new CredentialCache(createVault('http://127.0.0.1:1', 'no-token')), breakers: s.breakers, recorder });
    for (let i = 0; i < 5; i++) {
      await assert.rejects(noVault.call({ tenant: s.tenant, service: s.name, method: 'GET', path: '/v1/charges', correlationId: randomUUID() }), { name: 'CredentialUnavailable' });
    }
    assert.equal(s.breakers.state(s.name), 'closed', 'Vault away is not the service failing');
    await sandbox.faults(s.tenant, { latency_ms: 2000 });
    for (let i = 0; i < 5; i++) {
      await assert.rejects(charge(s, undefined, { signal: AbortSignal.timeout(50) }));
    }
    assert.equal(s.breakers.state(s.name), 'closed', 'a call its caller cancelled is not the service failing');
    await sandbox.clearFaults(s.tenant);
  });

  test('opens above 50 % failures once the volume is reached, fails fast while open, closes after a good probe', async () => {
    const s = await service({ retry_delays_ms: [], breaker: { volume_threshold: 4, reset_timeout_ms: 1500 } });
    await sandbox.faults(s.tenant, { fail_next: 1000 });
    // Below the volume threshold even 100 % failures do not open it.
    for (let i = 0; i < 3; i++) await assert.rejects(charge(s), ThirdPartyUnavailable);
    assert.equal(s.breakers.state(s.name), 'closed', 'three calls are below the volume threshold');
    await assert.rejects(charge(s), ThirdPartyUnavailable);
    assert.equal(s.breakers.state(s.name), 'open');
    const before = (await sandbox.requests(s.tenant)).length;
    await assert.rejects(charge(s), (err: unknown) => {
      assert.ok(err instanceof BreakerOpenError);
      assert.ok(err.retryAfterMs > 1000 && err.retryAfterMs <= 1500, `retry after ${err.retryAfterMs} ms`);
      return true;
    });
    assert.equal((await sandbox.requests(s.tenant)).length, before, 'nothing reached the service while open');
    await sandbox.clearFaults(s.tenant);
    await eventually('half-open', () => s.breakers.state(s.name) === 'half_open', 5000, 50);
    assert.equal((await charge(s)).status, 200);
    assert.equal(s.breakers.state(s.name), 'closed');
  });

  test('an open is published on NATS and another process opens its own breaker for the service', async () => {
    const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
    cleanups.push(() => nc.drain());
    const s = await service({ retry_delays_ms: [], breaker: { volume_threshold: 2, reset_timeout_ms: 60_000 } });
    const a = new BreakerRegistry([s.svc], { instance: 'worker-a', nats: nc });
    const b = new BreakerRegistry([s.svc], { instance: 'worker-b', nats: nc });
    cleanups.push(async () => { a.shutdown(); b.shutdown(); });
    void b.followFleet();
    const events: BreakerEvent[] = [];
    const sub = nc.subscribe(`third-party.breakers.${s.name}`);
    void (async () => { for await (const m of sub) events.push(m.json<BreakerEvent>()); })();
    await nc.flush();
    const failing = () => a.fire(s.name, () => Promise.reject(new Error('503')));
    await assert.rejects(failing());
    await assert.rejects(failing());
    assert.equal(a.state(s.name), 'open');
    await eventually('b follows a', () => b.state(s.name) === 'open', 5000, 20);
    await assert.rejects(b.fire(s.name, () => Promise.resolve('never called')), BreakerOpenError);
    await eventually('both events seen', () => events.length >= 2, 5000, 20);
    const own = events.find((e) => e.instance === 'worker-a')!;
    assert.equal(own.state, 'open');
    assert.ok(Date.parse(own.retry_at!) > Date.now() + 50_000, 'retry_at is the reset time ahead');
    const adopted = events.find((e) => e.instance === 'worker-b')!;
    assert.equal(adopted.adopted, true, "b's open says it was adopted, so nobody adopts it back");
    sub.unsubscribe();
  });
});

describe('credentials', () => {
  test('a key rotated in Vault is picked up on the first 401, once, without a second 401', async () => {
    const s = await service();
    assert.equal((await charge(s)).status, 200, 'the old key is cached');
    const rolled = await sandbox.roll(s.key.secret, s.key.id, 0);
    await vault.write(`secret/data/${thirdPartySecretPath(s.name)}`, { data: { value: rolled.secret } });
    const res = await charge(s);
    assert.equal(res.status, 200);
    assert.deepEqual((await sandbox.requests(s.tenant, '/v1/charges')).map((r) => r.status), [200, 401, 200]);
  });

  test('the credential follows the `current` label, not the newest version', async () => {
    const s = await service();
    const path = thirdPartySecretPath(s.name);
    const meta = (await vault.read(`secret/metadata/${path}`)) as { data: { current_version: number } };
    await vault.write(`secret/metadata/${path}`, { custom_metadata: { current: String(meta.data.current_version) } });
    // A pending version (a rotation in progress) must not be used yet.
    await vault.write(`secret/data/${path}`, { data: { value: 'sk_test_pending_not_yet_valid' } });
    assert.equal((await charge(s)).status, 200);
  });
});

describe('what reaches the third party and Kafka', () => {
  test('contract headers on the request; a record per attempt on third-party.interactions; no credential anywhere', async () => {
    const seen: IncomingHttpHeaders[] = [];
    const capture = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(seen.length === 1 ? 502 : 200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true }));
    });
    await new Promise<void>((r) => capture.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise((r) => capture.close(r)));
    const s = await service({}, `http://127.0.0.1:${(capture.address() as AddressInfo).port}`);
    const correlationId = randomUUID();
    const consumer = kafka.consumer({ groupId: `tp-test-${s.name}` });
    const records: { key: string; value: string }[] = [];
    await consumer.connect();
    await consumer.subscribe({ topic: TOPICS.thirdParty, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => {
      const value = message.value!.toString();
      if (value.includes(correlationId)) records.push({ key: message.key!.toString(), value });
    } });
    cleanups.push(() => consumer.disconnect());
    const res = await s.client.call({ tenant: s.tenant, service: s.name, method: 'POST', path: '/v1/things?x=1', body: { a: 1 }, correlationId, idempotencyKey: 'idem-1' });
    assert.equal(res.status, 200);
    assert.equal(seen.length, 2);
    const h = seen[1]!;
    assert.equal(h.authorization, `Bearer ${s.key.secret}`);
    assert.equal(h['x-correlation-id'], correlationId);
    assert.equal(h['x-tenant-id'], s.tenant);
    assert.equal(h['x-request-timeout'], '5s');
    assert.equal(h['idempotency-key'], 'idem-1');
    await eventually('both attempts recorded', () => records.length === 2, 20_000);
    for (const r of records) {
      assert.equal(r.key, `${s.tenant}:${s.name}`, 'partitioned by tenant and service');
      assert.ok(!r.value.includes(s.key.secret), 'no credential in the record');
    }
    const [first, second] = records.map((r) => JSON.parse(r.value)).sort((x, y) => x.attempt - y.attempt);
    assert.equal(first.status_code, 502);
    assert.equal(first.error_code, 'http_502');
    assert.equal(second.status_code, 200);
    for (const k of ['timestamp', 'tenant_id', 'service', 'method', 'endpoint', 'request_id', 'status_code', 'latency_ms', 'request_size', 'response_size', 'error_code', 'circuit_breaker_state']) {
      assert.ok(k in second, `record has ${k}`);
    }
    assert.equal(second.endpoint, '/v1/things');
    assert.equal(second.request_size, 7);
    assert.equal(second.circuit_breaker_state, 'CLOSED');
  });
});
