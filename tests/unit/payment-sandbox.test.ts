// The payment sandbox: auth, charges, declines, idempotency, refunds, key rolling and fault switches.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FastifyInstance } from 'fastify';
import { buildPaymentSandbox, type Charge } from '../../sandboxes/payment-provider/app';

function sandbox(t: TestContext, now?: () => number) {
  const built = buildPaymentSandbox({ now });
  t.after(() => built.app.close());
  return built;
}

async function newKey(app: FastifyInstance): Promise<{ id: string; secret: string }> {
  const res = await app.inject({ method: 'POST', url: '/_sandbox/api-keys' });
  assert.equal(res.statusCode, 200);
  return res.json();
}

type Call = { secret?: string; tenant?: string; idempotencyKey?: string };
function call(app: FastifyInstance, method: 'GET' | 'POST' | 'DELETE', url: string, body: object | undefined, { secret, tenant, idempotencyKey }: Call = {}) {
  const headers: Record<string, string> = {};
  if (secret) headers.authorization = `Bearer ${secret}`;
  if (tenant) headers['x-tenant-id'] = tenant;
  if (idempotencyKey) headers['idempotency-key'] = idempotencyKey;
  return app.inject({ method, url, headers, ...(body ? { payload: body } : {}) });
}

const setFaults = (app: FastifyInstance, faults: object) => app.inject({ method: 'PUT', url: '/_sandbox/faults', payload: faults });
const chargesOf = async (app: FastifyInstance, tenant: string): Promise<Charge[]> =>
  (await app.inject({ url: `/_sandbox/charges?tenant=${tenant}` })).json().data;
const card = { amount: 1250, currency: 'EUR', source: 'pm_card_visa' };

test('a missing, unknown or revoked key is refused with 401, and the key is never echoed', async (t) => {
  const { app } = sandbox(t);
  const missing = await call(app, 'GET', '/v1/account', undefined);
  assert.equal(missing.statusCode, 401);
  assert.deepEqual(missing.json().error.type, 'authentication_error');
  assert.match(String(missing.headers['request-id']), /^req_\w+$/);
  const unknown = await call(app, 'GET', '/v1/account', undefined, { secret: 'sk_test_not-a-real-key-at-all' });
  assert.equal(unknown.json().error.code, 'invalid_api_key');
  assert.ok(!unknown.body.includes('not-a-real-key'));

  const key = await newKey(app);
  assert.match(key.secret, /^sk_test_[A-Za-z0-9_-]{24,}$/);
  const ok = await call(app, 'GET', '/v1/account', undefined, { secret: key.secret });
  assert.deepEqual(ok.json(), { id: 'acct_sandbox', object: 'account', api_key_id: key.id });
  const revoked = await call(app, 'DELETE', `/v1/api_keys/${key.id}`, undefined, { secret: key.secret });
  assert.deepEqual(revoked.json(), { id: key.id, revoked: true }, 'a key may revoke itself');
  assert.equal((await call(app, 'GET', '/v1/account', undefined, { secret: key.secret })).statusCode, 401);
});

test('a charge succeeds, is stored with its tenant, and bad parameters name the field', async (t) => {
  const { app } = sandbox(t);
  const { secret, id: keyId } = await newKey(app);
  const res = await call(app, 'POST', '/v1/charges', { ...card, description: 'order 7', metadata: { order: '7' } }, { secret, tenant: 'ta' });
  assert.equal(res.statusCode, 200);
  const charge = res.json();
  assert.match(charge.id, /^ch_/);
  assert.deepEqual({ ...charge, id: undefined, created: undefined }, {
    id: undefined, object: 'charge', amount: 1250, currency: 'eur', source: 'pm_card_visa', status: 'succeeded', captured: true, refunded: false,
    amount_refunded: 0, failure_code: null, description: 'order 7', metadata: { order: '7' }, created: undefined, idempotency_key: null, api_key_id: keyId, tenant: 'ta',
  });
  assert.deepEqual((await call(app, 'GET', `/v1/charges/${charge.id}`, undefined, { secret })).json(), charge);
  assert.equal((await call(app, 'GET', '/v1/charges/ch_nope', undefined, { secret })).json().error.code, 'resource_missing');
  assert.deepEqual((await app.inject({ url: '/_sandbox/charges?tenant=ta&metadata.order=7' })).json().data.map((c: Charge) => c.id), [charge.id]);
  assert.deepEqual((await app.inject({ url: '/_sandbox/charges?metadata.order=8' })).json().data, []);

  const invalid = async (body: object) => (await call(app, 'POST', '/v1/charges', body, { secret })).json().error;
  const negative = await invalid({ ...card, amount: -1 });
  assert.deepEqual(negative, { type: 'invalid_request_error', code: 'parameter_invalid', param: 'amount', message: negative.message });
  assert.equal((await invalid({ ...card, amount: 1.5 })).param, 'amount');
  assert.equal((await invalid({ ...card, currency: 'euro' })).param, 'currency');
  assert.deepEqual(await invalid({ amount: 1, currency: 'usd' }).then((e) => [e.code, e.param]), ['parameter_missing', 'source']);
  assert.equal((await invalid({ ...card, metadata: { n: 1 } })).param, 'metadata.n');
  assert.deepEqual(await invalid({ ...card, amont: 1 }).then((e) => [e.code, e.param]), ['parameter_unknown', 'amont']);

  await call(app, 'POST', '/v1/charges', card, { secret });
  const list = (await call(app, 'GET', '/v1/charges?limit=1', undefined, { secret })).json();
  assert.equal(list.data.length, 1);
  assert.notEqual(list.data[0].id, charge.id, 'newest first');
  assert.equal(list.has_more, true);
});

test('declines answer 402 and are recorded as failed charges', async (t) => {
  const { app } = sandbox(t);
  const { secret } = await newKey(app);
  const declined = await call(app, 'POST', '/v1/charges', { ...card, source: 'pm_card_declined' }, { secret, tenant: 'td' });
  assert.equal(declined.statusCode, 402);
  const error = declined.json().error;
  assert.deepEqual([error.type, error.code, error.decline_code], ['card_error', 'card_declined', 'generic_decline']);
  const stored = (await call(app, 'GET', `/v1/charges/${error.charge}`, undefined, { secret })).json();
  assert.deepEqual([stored.status, stored.captured], ['failed', false]);

  const poor = await call(app, 'POST', '/v1/charges', { ...card, source: 'pm_card_insufficient_funds' }, { secret, tenant: 'td' });
  assert.equal(poor.json().error.decline_code, 'insufficient_funds');
  await setFaults(app, { tenant: 'td', decline_rate: 1 });
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'td' })).json().error.decline_code, 'generic_decline');
  assert.deepEqual((await chargesOf(app, 'td')).map((c) => c.status), ['failed', 'failed', 'failed']);
});

test('Idempotency-Key: same parameters replay the stored answer, different ones are refused', async (t) => {
  const { app, state } = sandbox(t);
  const { secret } = await newKey(app);
  const first = await call(app, 'POST', '/v1/charges', { ...card, metadata: { a: '1', b: '2' } }, { secret, idempotencyKey: 'order-1' });
  assert.equal(first.headers['idempotent-replayed'], undefined);
  const again = await call(app, 'POST', '/v1/charges', { metadata: { b: '2', a: '1' }, source: 'pm_card_visa', currency: 'EUR', amount: 1250 }, { secret, idempotencyKey: 'order-1' });
  assert.equal(again.statusCode, 200);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(again.json().id, first.json().id);
  assert.equal(state.charges.size, 1);
  assert.deepEqual((await call(app, 'GET', '/v1/charges?idempotency_key=order-1', undefined, { secret })).json().data.map((c: Charge) => c.id), [first.json().id]);

  const other = await call(app, 'POST', '/v1/charges', { ...card, amount: 999 }, { secret, idempotencyKey: 'order-1' });
  assert.equal(other.statusCode, 400);
  assert.deepEqual(other.json().error, { type: 'idempotency_error', code: 'idempotency_key_in_use', param: 'Idempotency-Key', message: other.json().error.message });
  assert.equal(state.charges.size, 1);

  const declined = await call(app, 'POST', '/v1/charges', { ...card, source: 'pm_card_declined' }, { secret, idempotencyKey: 'order-2' });
  const replayedDecline = await call(app, 'POST', '/v1/charges', { ...card, source: 'pm_card_declined' }, { secret, idempotencyKey: 'order-2' });
  assert.deepEqual([replayedDecline.statusCode, replayedDecline.json()], [402, declined.json()], 'a decline is an answer too');

  const bad = await call(app, 'POST', '/v1/charges', { ...card, amount: 0 }, { secret, idempotencyKey: 'order-3' });
  assert.equal(bad.statusCode, 400);
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret, idempotencyKey: 'order-3' })).statusCode, 200, 'a validation error is not stored');

  const refund = await call(app, 'POST', '/v1/refunds', { charge: first.json().id, amount: 50 }, { secret, idempotencyKey: 'order-1' });
  assert.equal(refund.statusCode, 200, 'refunds have their own key space');
});

test('fail_next answers 503 before doing anything; fail_after_commit_next commits, answers 500, and a retry replays', async (t) => {
  const { app } = sandbox(t);
  const { secret } = await newKey(app);
  await setFaults(app, { tenant: 'tf', fail_next: 2 });
  for (let i = 0; i < 2; i += 1) {
    const res = await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'tf', idempotencyKey: 'k1' });
    assert.equal(res.statusCode, 503);
    assert.deepEqual([res.json().error.type, res.json().error.code], ['api_error', 'service_unavailable']);
  }
  assert.deepEqual(await chargesOf(app, 'tf'), []);
  assert.equal((await app.inject({ url: '/_sandbox/faults?tenant=tf' })).json().faults.fail_next, 0);
  const through = await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'tf', idempotencyKey: 'k1' });
  assert.deepEqual([through.statusCode, through.headers['idempotent-replayed']], [200, undefined], 'a 503 was never stored');

  await setFaults(app, { tenant: 'tc', fail_after_commit_next: 1, error_status: 502 });
  const lost = await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'tc', idempotencyKey: 'k2' });
  assert.equal(lost.statusCode, 500);
  assert.equal(lost.json().error.type, 'api_error');
  const committed = await chargesOf(app, 'tc');
  assert.equal(committed.length, 1);
  const retry = await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'tc', idempotencyKey: 'k2' });
  assert.deepEqual([retry.statusCode, retry.headers['idempotent-replayed'], retry.json().id], [200, 'true', committed[0]!.id]);
  assert.equal((await chargesOf(app, 'tc')).length, 1);
  const log = (await app.inject({ url: '/_sandbox/requests?tenant=tc&path=/v1/charges' })).json().data;
  assert.deepEqual(log.map((r: { status: number; replayed: boolean }) => [r.status, r.replayed]), [[200, true], [500, false]]);
});

test('faults scoped to a tenant leave other tenants alone; the tenant scope wins over the global one', async (t) => {
  const { app } = sandbox(t);
  const { secret } = await newKey(app);
  await setFaults(app, { tenant: 'slow', fail_next: 5 });
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'fast' })).statusCode, 200);
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret })).statusCode, 200);
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'slow' })).statusCode, 503);

  await setFaults(app, { decline_rate: 1 });
  await setFaults(app, { tenant: 'calm' });
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'calm' })).statusCode, 200);
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'other' })).statusCode, 402);
  assert.equal((await app.inject({ method: 'DELETE', url: '/_sandbox/faults' })).statusCode, 200);
  assert.equal((await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'slow' })).statusCode, 200, 'all scopes cleared');
  assert.equal((await setFaults(app, { error_rate: 2 })).json().error.param, 'error_rate');
});

test('refunds: full by default, partial, and never more than what remains', async (t) => {
  const { app } = sandbox(t);
  const { secret } = await newKey(app);
  const charge = async (source = 'pm_card_visa') => (await call(app, 'POST', '/v1/charges', { ...card, source }, { secret, tenant: 'tr' })).json();
  const refund = (body: object) => call(app, 'POST', '/v1/refunds', body, { secret, tenant: 'tr' });

  const full = await charge();
  const all = await refund({ charge: full.id });
  assert.equal(all.statusCode, 200);
  assert.deepEqual({ ...all.json<object>(), id: undefined, created: undefined }, {
    id: undefined, object: 'refund', charge: full.id, amount: 1250, currency: 'eur', status: 'succeeded', created: undefined,
    idempotency_key: null, api_key_id: full.api_key_id, tenant: 'tr',
  });
  const after = (await call(app, 'GET', `/v1/charges/${full.id}`, undefined, { secret })).json();
  assert.deepEqual([after.amount_refunded, after.refunded], [1250, true]);
  assert.equal((await refund({ charge: full.id })).json().error.code, 'charge_already_refunded');

  const part = await charge();
  assert.equal((await refund({ charge: part.id, amount: 1000 })).statusCode, 200);
  const tooMuch = await refund({ charge: part.id, amount: 251 });
  assert.deepEqual([tooMuch.statusCode, tooMuch.json().error.code, tooMuch.json().error.param], [400, 'amount_too_large', 'amount']);
  const rest = await refund({ charge: part.id });
  assert.equal(rest.json().amount, 250);
  const partAfter = (await call(app, 'GET', `/v1/charges/${part.id}`, undefined, { secret })).json();
  assert.deepEqual([partAfter.amount_refunded, partAfter.refunded], [1250, true]);
  assert.equal((await app.inject({ url: `/_sandbox/refunds?tenant=tr&charge=${part.id}` })).json().data.length, 2);

  const failed = (await call(app, 'POST', '/v1/charges', { ...card, source: 'pm_card_declined' }, { secret })).json().error.charge;
  assert.equal((await refund({ charge: failed })).json().error.code, 'charge_already_refunded');
  assert.equal((await refund({ charge: 'ch_missing' })).statusCode, 404);
});

test('rolling a key: the old one lives out its grace, or dies at once with 0; lists never show a secret', async (t) => {
  let clock = 1_700_000_000_000;
  const { app } = sandbox(t, () => clock);
  const first = await newKey(app);
  const account = async (secret: string) => (await call(app, 'GET', '/v1/account', undefined, { secret })).statusCode;

  const rolled = await call(app, 'POST', `/v1/api_keys/${first.id}/roll`, { expires_in_seconds: 60 }, { secret: first.secret });
  assert.equal(rolled.statusCode, 200);
  const second = rolled.json();
  assert.match(second.secret, /^sk_test_/);
  clock += 59_999;
  assert.deepEqual([await account(first.secret), await account(second.secret)], [200, 200]);
  clock += 1;
  assert.deepEqual([await account(first.secret), await account(second.secret)], [401, 200]);
  assert.equal((await call(app, 'POST', `/v1/api_keys/${first.id}/roll`, undefined, { secret: second.secret })).json().error.code, 'api_key_expired');

  const third = (await call(app, 'POST', `/v1/api_keys/${second.id}/roll`, undefined, { secret: second.secret })).json();
  assert.deepEqual([await account(second.secret), await account(third.secret)], [401, 200]);

  const listed = await call(app, 'GET', '/v1/api_keys', undefined, { secret: third.secret });
  for (const secret of [first.secret, second.secret, third.secret]) assert.ok(!listed.body.includes(secret));
  const rows = listed.json().data;
  assert.deepEqual(rows.map((k: { id: string }) => k.id), [third.id, second.id, first.id]);
  assert.ok(rows.every((k: object) => !('secret' in k)));
  assert.deepEqual(rows[2], { id: first.id, object: 'api_key', created: 1_700_000_000, expires_at: 1_700_000_060, revoked_at: null, last4: first.secret.slice(-4) });
});

test('the request log never holds a secret, and reset keeps API keys', async (t) => {
  const { app, state } = sandbox(t);
  const { secret, id } = await newKey(app);
  await call(app, 'POST', '/v1/charges', card, { secret, tenant: 'tl', idempotencyKey: 'log-1' });
  await call(app, 'POST', '/v1/api_keys', undefined, { secret, tenant: 'tl' });
  await call(app, 'GET', '/v1/account', undefined, { secret: `${secret}x`, tenant: 'tl' });
  const log = await app.inject({ url: '/_sandbox/requests?tenant=tl' });
  assert.ok(!log.body.includes(secret));
  assert.ok(!log.body.toLowerCase().includes('authorization'));
  const [denied, created, charged] = log.json().data;
  assert.deepEqual([denied.status, denied.api_key_id], [401, null]);
  assert.deepEqual([created.path, created.status], ['/v1/api_keys', 200]);
  assert.deepEqual([charged.path, charged.idempotency_key, charged.api_key_id, charged.replayed], ['/v1/charges', 'log-1', id, false]);
  assert.equal(typeof charged.answered_at, 'number');

  assert.equal((await app.inject({ method: 'POST', url: '/_sandbox/reset' })).statusCode, 200);
  assert.deepEqual([state.charges.size, state.requests.length], [0, 0]);
  assert.equal((await call(app, 'GET', '/v1/account', undefined, { secret })).statusCode, 200);
  assert.deepEqual((await app.inject({ url: '/_sandbox/health' })).json(), { ok: true });
});

test('latency delays the answer, not the commit; a client that hangs up leaves the charge behind', async (t) => {
  const { app, state } = sandbox(t);
  const { secret } = await newKey(app);
  await setFaults(app, { tenant: 'tz', latency_ms: 40 });
  const pending = call(app, 'POST', '/v1/charges', card, { secret, tenant: 'tz' });
  await sleep(10);
  assert.equal((await chargesOf(app, 'tz')).length, 1, 'committed before the answer');
  const [inFlight] = (await app.inject({ url: '/_sandbox/requests?tenant=tz' })).json().data;
  assert.deepEqual([inFlight.status, inFlight.answered_at], [null, null]);
  assert.equal((await pending).statusCode, 200);
  assert.equal(typeof state.requests.at(-1)?.answered_at, 'number');

  await app.listen({ port: 0, host: '127.0.0.1' });
  const { port } = app.server.address() as AddressInfo;
  const req = request({ port, method: 'POST', path: '/v1/charges', headers: { authorization: `Bearer ${secret}`, 'x-tenant-id': 'tz', 'content-type': 'application/json' } });
  req.on('error', () => {});
  req.end(JSON.stringify(card));
  await sleep(10);
  req.destroy();
  await sleep(60);
  assert.equal((await chargesOf(app, 'tz')).length, 2);
  assert.equal((await app.inject({ url: '/_sandbox/requests?tenant=tz' })).json().data[0].status, 200, 'answered into the void');
  assert.equal((await app.inject({ url: '/_sandbox/health' })).statusCode, 200);
});
