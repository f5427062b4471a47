// processPayment on the real stack: the sandbox provider's own ledger is the judge of "charged
// once". Breaker and crash tests run private workers on task queues of their own.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { connect } from 'nats';
import { ExecutionIds } from '../../lib/execution-ids';
import { createKafka, TOPICS } from '../../lib/kafka';
import type { PaymentInput } from '../../lib/payments';
import { asPlatform, createPool, inWorkspace } from '../../lib/postgres';
import { startWorkflow } from '../../lib/start-workflow';
import { issueApiKey } from '../../lib/tenants';
import { connectTemporal } from '../../lib/temporal';
import type { BreakerEvent } from '../../lib/third-party/breakers';
import { thirdPartySecretPath } from '../../lib/third-party/credentials';
import { PAYMENTS_SERVICE } from '../../lib/third-party/services';
import { createVault } from '../../lib/vault';
import { registeredWorkflowType } from '../../lib/workflow-registry';
import { logPath } from '../../stack/stack';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { sandboxControl } from '../helpers/sandbox';
import { eventually, metric, readyStatus, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';
import { consumerKey, newTenant } from '../helpers/tenant';

const stack = testStack();
const sandbox = sandboxControl(`http://127.0.0.1:${stack.layout.ports.paymentSandbox}`);
const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 2);
const procs: RunningProcess[] = [];
after(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  await pool.end();
});

const payment = (over: Partial<PaymentInput> = {}): PaymentInput => ({
  amount: 2500, currency: 'EUR', payer: { id: `cust-${randomBytes(3).toString('hex')}` }, payment_method: 'pm_card_visa', description: 'test order', ...over,
});

async function tenantApi() {
  const { tenant, apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'pay');
  return { tenant, apiKey, api: gatewayClient(stack.gatewayUrl, apiKey) };
}

async function pay(api: ReturnType<typeof gatewayClient>, input: PaymentInput) {
  const r = await api.start('process-payment', input);
  assert.equal(r.status, 202, r.text);
  return r.body.execution_id as string;
}

async function finished(api: ReturnType<typeof gatewayClient>, id: string, waitS = 45) {
  const r = await api.result(id, waitS);
  assert.equal(r.status, 200, `still running: ${r.text}`);
  return r.body;
}

/** A worker of its own on a task queue of its own; payments started there run only on it. */
async function privateWorker(queue: string, overrides: Record<string, string> = {}) {
  const p = await spawnProcess('worker', stack.env, { FLOWGATE_TASK_QUEUE: queue, ...overrides });
  procs.push(p);
  await eventually('private worker ready', async () => (await readyStatus(p.statusUrl)).code === 200, 90_000);
  return p;
}

/** Starts processPayment on `queue` as the consumer would (memo, tenant attribute), with a gateway-valid id. */
async function startOn(queue: string, tenant: string, input: PaymentInput) {
  const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
  const id = new ExecutionIds(stack.layout.executionIdSecret).mint(tenant);
  const { handle } = await startWorkflow(client, {
    def: registeredWorkflowType('process-payment')!, executionId: id, tenant, correlationId: randomUUID(), acceptedAt: new Date().toISOString(), input, taskQueue: queue,
  });
  return { id, handle, close: () => client.connection.close() };
}

async function workflowEvents(tenant: string, until: (types: string[]) => boolean) {
  const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'payments-test');
  const consumer = kafka.consumer({ groupId: `pay-test-${tenant}-${randomUUID()}` });
  const events: { type: string; key: string; value: string }[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic: TOPICS.workflowEvents, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => {
    if (message.key?.toString() === tenant) events.push({ type: JSON.parse(message.value!.toString()).type, key: tenant, value: message.value!.toString() });
  } });
  try {
    await eventually('workflow events on Kafka', () => until(events.map((e) => e.type)), 30_000, 200);
  } finally {
    await consumer.disconnect();
  }
  return events;
}

describe('a payment through the gateway', () => {
  test('below the threshold: CONFIRMED, one charge, a balanced ledger, every step on workflow.events', async () => {
    const { tenant, api } = await tenantApi();
    const id = await pay(api, payment({ amount: 4200 }));
    const done = await finished(api, id);
    assert.equal(done.status, 'COMPLETED');
    assert.equal(done.state, 'CONFIRMED');
    assert.equal(done.result.state, 'CONFIRMED');
    const charges = await sandbox.charges(tenant);
    assert.equal(charges.length, 1);
    assert.equal(charges[0]!.id, done.result.charge_id);
    assert.equal(charges[0]!.amount, 4200);
    assert.equal(charges[0]!.metadata.payment_id, id);
    const rows = await inWorkspace(pool, tenant, async (db) => (await db.query('SELECT kind, side, account, amount FROM ledger_entries WHERE payment_id = $1 ORDER BY side', [id])).rows);
    assert.deepEqual(rows, [
      { kind: 'charge', side: 'credit', account: 'revenue', amount: '4200' },
      { kind: 'charge', side: 'debit', account: `provider:${PAYMENTS_SERVICE}`, amount: '4200' },
    ]);
    const events = await workflowEvents(tenant, (t) => t.includes('payment.confirmed'));
    assert.deepEqual(events.map((e) => e.type), ['payment.validated', 'payment.charged', 'payment.ledger_recorded', 'payment.confirmed']);
  });

  test('the ledger refuses an entry that does not balance, and a second booking of a payment', async () => {
    const { tenant, api } = await tenantApi();
    const id = await pay(api, payment());
    await finished(api, id);
    const insert = (sql: string) => inWorkspace(pool, tenant, (db) => db.query(sql, [tenant, id]));
    await assert.rejects(insert("INSERT INTO ledger_entries (workspace_id, payment_id, kind, side, account, amount, currency) VALUES ($1, $2, 'refund', 'debit', 'revenue', 1, 'EUR')"), /do not balance/);
    await assert.rejects(insert("INSERT INTO ledger_entries (workspace_id, payment_id, kind, side, account, amount, currency) VALUES ($1, $2, 'charge', 'debit', 'x', 1, 'EUR')"), /duplicate key/);
    await assert.rejects(insert('DELETE FROM ledger_entries WHERE workspace_id = $1 AND payment_id = $2'), /permission denied/);
  });

  test('above the threshold: waits for an approval the requester cannot give, under any name; someone else approves', async () => {
    const { tenant, api } = await tenantApi();
    const approver = gatewayClient(stack.gatewayUrl, await consumerKey(stack.env.FLOWGATE_DATABASE_URL!, tenant, 'bob'));
    const id = await pay(api, payment({ amount: 150_000, requested_by: 'alice' }));
    await eventually('awaiting approval', async () => (await api.status(id)).body.state === 'AWAITING_APPROVAL', 20_000, 200);
    const waiting = (await api.status(id)).body;
    assert.equal(waiting.waiting_for.kind, 'approval');
    // The requester by name, then the requester's own key writing someone else's name.
    assert.equal((await approver.signal(id, 'approve', { approver: 'alice' })).status, 202);
    assert.equal((await api.signal(id, 'approve', { approver: 'bob', comment: 'ok' })).status, 202);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await api.status(id)).body.state, 'AWAITING_APPROVAL', "the requester's own approvals are ignored");
    assert.equal((await sandbox.charges(tenant)).length, 0);
    // The same payload from the approver's key is a signal of its own (not deduplicated away).
    assert.equal((await approver.signal(id, 'approve', { approver: 'bob', comment: 'ok' })).status, 202);
    const done = await finished(api, id);
    assert.equal(done.result.state, 'CONFIRMED');
    assert.equal(done.result.approved_by, 'bob');
    assert.equal((await sandbox.charges(tenant)).length, 1);
  });

  test('a decline ends PAYMENT_FAILED after one provider call, with no retry and no alert', async () => {
    const { tenant, api } = await tenantApi();
    // Alerts of every reason the stack's worker raised, before and after: an alert is raised
    // before the run closes, so it is counted by the time the run is seen closed.
    const worker = `http://127.0.0.1:${stack.layout.ports.workerStatus}`;
    const alerts = async () => (await (await fetch(`${worker}/metrics`)).text()).split('\n')
      .filter((l) => /^payment_alerts_total[{ ]/.test(l)).reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
    const alertsBefore = await alerts();
    const id = await pay(api, payment({ payment_method: 'pm_card_insufficient_funds' }));
    const done = await finished(api, id);
    assert.equal(await alerts(), alertsBefore, 'no payment alert raised');
    assert.equal(done.status, 'COMPLETED', 'a business outcome, not a failed run');
    assert.equal(done.result.state, 'PAYMENT_FAILED');
    assert.equal(done.result.reason, 'declined');
    assert.equal(done.result.decline_code, 'insufficient_funds');
    assert.equal((await sandbox.requests(tenant, '/v1/charges')).length, 1);
    const events = await workflowEvents(tenant, (t) => t.includes('payment.declined'));
    assert.ok(!events.some((e) => e.type === 'payment.alert'));
  });

  /** Pays twice under one business key (the provider forgetting it in between, with `forget`): the second is the first's duplicate. */
  async function secondPaymentIsDuplicate(forget: boolean) {
    const { tenant, api } = await tenantApi();
    const input = payment({ idempotency_key: `order-${randomUUID()}` });
    const first = await finished(api, await pay(api, input));
    assert.equal(first.result.state, 'CONFIRMED');
    if (forget) assert.ok((await sandbox.forgetKeys(`fg:${tenant}:`)).forgotten >= 1);
    const second = await finished(api, await pay(api, input));
    assert.equal(second.result.state, 'PAYMENT_FAILED');
    assert.equal(second.result.reason, 'duplicate');
    assert.equal(second.result.charge_id, first.result.charge_id);
    assert.equal((await sandbox.charges(tenant)).length, 1);
  }

  test('the same business idempotency key never charges twice, even from a second execution', () => secondPaymentIsDuplicate(false));

  test('a business key is never charged twice, even once the provider has forgotten it (after 24 h)', () => secondPaymentIsDuplicate(true));

  test('a business key whose payment was declined can pay later, once the provider has forgotten the decline', async () => {
    const { tenant, api } = await tenantApi();
    const key = `order-${randomUUID()}`;
    const declined = await finished(api, await pay(api, payment({ idempotency_key: key, payment_method: 'pm_card_insufficient_funds' })));
    assert.equal(declined.result.reason, 'declined');
    await sandbox.forgetKeys(`fg:${tenant}:`);
    const paid = await finished(api, await pay(api, payment({ idempotency_key: key })));
    assert.equal(paid.result.state, 'CONFIRMED', JSON.stringify(paid.result));
    assert.equal((await sandbox.charges(tenant)).filter((c) => c.status === 'succeeded').length, 1);
  });

  test('cancel before the charge cancels; cancel while the charge is in flight refunds it', async () => {
    const { tenant, api } = await tenantApi();
    const waiting = await pay(api, payment({ amount: 200_000 }));
    await eventually('awaiting approval', async () => (await api.status(waiting)).body.state === 'AWAITING_APPROVAL', 20_000, 200);
    assert.equal((await api.cancel(waiting)).status, 202);
    await eventually('cancelled', async () => (await api.status(waiting)).body.status === 'CANCELED', 20_000, 200);
    assert.equal((await api.status(waiting)).body.state, 'CANCELLED');
    assert.equal((await sandbox.charges(tenant)).length, 0);

    // The provider commits at once and answers 4 s later: the cancel lands while the charge is in flight.
    await sandbox.faults(tenant, { latency_ms: 4000 });
    const inFlight = await pay(api, payment());
    await eventually('the charge reached the provider', async () => (await sandbox.charges(tenant)).length === 1, 20_000, 100);
    await sandbox.clearFaults(tenant);
    assert.equal((await api.cancel(inFlight)).status, 202);
    await eventually('cancelled', async () => (await api.status(inFlight)).body.status === 'CANCELED', 30_000, 200);
    assert.equal((await api.status(inFlight)).body.state, 'REFUNDED');
    const [charge] = await sandbox.charges(tenant);
    assert.equal(charge!.refunded, true);
    assert.equal((await sandbox.refunds(tenant)).length, 1);

    // A slow provider makes the charge 4 s after the request: the cancel lands before it exists.
    // The charge is waited for, not abandoned, so the refund finds it.
    await sandbox.faults(tenant, { commit_delay_ms: 4000 });
    const posts = async () => (await sandbox.requests(tenant, '/v1/charges')).filter((r) => r.method === 'POST').length;
    const before = await posts();
    const slow = await pay(api, payment({ amount: 3_000 }));
    await eventually('the charge request reached the provider', async () => (await posts()) > before, 20_000, 100);
    assert.equal((await api.cancel(slow)).status, 202);
    await eventually('cancelled', async () => (await api.status(slow)).body.status === 'CANCELED', 30_000, 200);
    await sandbox.clearFaults(tenant);
    assert.equal((await api.status(slow)).body.state, 'REFUNDED');
    const made = (await sandbox.charges(tenant)).filter((c) => c.amount === 3_000);
    assert.equal(made.length, 1);
    assert.equal(made[0]!.refunded, true, 'the late charge was refunded, not left behind');
  });
});

describe("a tenant's payment limits (Admin API)", () => {
  test('threshold and currencies set through /payment-settings drive validation and approval', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'paylim');
    const { key } = await issueApiKey(pool, t.tenant, 'payer-app');
    const api = gatewayClient(stack.gatewayUrl, key);
    assert.deepEqual((await t.admin('GET', '/payment-settings')).body.approval_threshold, 100_000, 'defaults until set');
    const bad = await t.admin('PUT', '/payment-settings', { approval_threshold: 5000, max_amount: 1000 });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.details[0].field, 'body.approval_threshold');
    assert.equal((await t.as(t.tokens.viewer!)('PUT', '/payment-settings', { approval_threshold: 1000, max_amount: 50_000 })).status, 403);
    const set = await t.admin('PUT', '/payment-settings', { approval_threshold: 1000, max_amount: 50_000, currencies: ['EUR'] });
    assert.equal(set.status, 200, set.text);

    const usd = await finished(api, await pay(api, payment({ currency: 'USD' })));
    assert.equal(usd.result.state, 'PAYMENT_FAILED');
    assert.equal(usd.result.reason, 'invalid');
    assert.equal(usd.result.field, 'currency');
    const big = await finished(api, await pay(api, payment({ amount: 60_000 })));
    assert.equal(big.result.field, 'amount', 'over max_amount');
    const gated = await pay(api, payment({ amount: 2000 }));
    await eventually('over the new threshold: awaiting approval', async () => (await api.status(gated)).body.state === 'AWAITING_APPROVAL', 20_000, 200);
    const carol = gatewayClient(stack.gatewayUrl, (await issueApiKey(pool, t.tenant, 'carol')).key);
    assert.equal((await carol.signal(gated, 'reject', { approver: 'carol' })).status, 202);
    const rejected = await finished(api, gated);
    assert.equal(rejected.result.state, 'CANCELLED');
    assert.equal(rejected.result.reason, 'rejected');
    assert.equal((await sandbox.charges(t.tenant)).length, 0);
    const audit = await t.admin('GET', '/audit-logs?entity_type=payment_settings');
    assert.equal(audit.body.data.length, 1);
  });
});

/**
 * A real refusal from PostgreSQL after the charge, for this payment only: the charge is refunded
 * and the operator alerted. With `answersLost`, the provider commits the charge and the refund but
 * answers both with a 500, and a worker making one provider call per attempt retries each
 * activity: the run still reports the refund it made.
 */
async function ledgerFailureRefunds(answersLost: boolean) {
  const { tenant, api } = await tenantApi();
  const marker = `ledger-fault-${randomUUID()}`;
  const owner = new pg.Client({ connectionString: stack.env.FLOWGATE_DATABASE_OWNER_URL });
  await owner.connect();
  const fn = `refuse_${randomBytes(4).toString('hex')}`;
  await owner.query(`CREATE FUNCTION ${fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'ledger closed' USING ERRCODE = 'check_violation'; END $$`);
  await owner.query(`CREATE TRIGGER ${fn} BEFORE INSERT ON payments FOR EACH ROW WHEN (NEW.description = '${marker}') EXECUTE FUNCTION ${fn}()`);
  // An answer replayed from the idempotency record takes no fault: the charge's retry gets its
  // answer, and the second fault is the refund's.
  let worker = `http://127.0.0.1:${stack.layout.ports.workerStatus}`;
  let id: string;
  let run: Awaited<ReturnType<typeof startOn>> | undefined;
  if (answersLost) {
    const queue = `pay-lost-${randomBytes(4).toString('hex')}`;
    worker = (await privateWorker(queue, { FLOWGATE_THIRD_PARTIES: JSON.stringify([{ name: PAYMENTS_SERVICE, base_url: sandbox.url, retry_delays_ms: [] }]) })).statusUrl;
    await sandbox.faults(tenant, { fail_after_commit_next: 2 });
    run = await startOn(queue, tenant, payment({ description: marker }));
    id = run.id;
  } else {
    id = await pay(api, payment({ description: marker }));
  }
  try {
    const done = await finished(api, id);
    assert.equal(done.status, 'FAILED');
    assert.equal(done.error.type, 'PaymentFailed');
    assert.equal(done.state, 'REFUNDED');
    const charges = await sandbox.charges(tenant);
    assert.equal(charges.length, 1);
    assert.equal(charges[0]!.refunded, true);
    const refunds = await sandbox.refunds(tenant);
    assert.equal(refunds.length, 1);
    assert.equal(done.error.details.refund_id, refunds[0]!.id, 'the run names the refund the provider made');
    if (answersLost) {
      assert.deepEqual((await sandbox.requests(tenant, '/v1/charges')).filter((r) => r.method === 'POST').map((r) => [r.status, r.replayed]), [[500, false], [200, true]]);
      assert.deepEqual((await sandbox.requests(tenant, '/v1/refunds')).map((r) => [r.method, r.status]), [['POST', 500], ['GET', 200]]);
    }
    const events = await workflowEvents(tenant, (t) => t.includes('payment.alert'));
    const types = events.map((e) => e.type);
    assert.equal(types.filter((t) => t === 'payment.refunded').length, 1, types.join());
    assert.ok(types.indexOf('payment.refunded') < types.indexOf('payment.alert'));
    const alert = JSON.parse(events.find((e) => e.type === 'payment.alert')!.value);
    assert.equal(alert.data.reason, 'LedgerRejected');
    assert.equal(alert.data.refunded, true);
    assert.ok(await metric(worker, 'payment_alerts_total', { reason: 'LedgerRejected' }) >= 1);
    const booked = await asPlatform(pool, async (db) => (await db.query('SELECT count(*)::int AS n FROM ledger_entries WHERE payment_id = $1', [id])).rows[0].n);
    assert.equal(booked, 0);
  } finally {
    await run?.close();
    await sandbox.clearFaults(tenant);
    await owner.query(`DROP TRIGGER ${fn} ON payments`);
    await owner.query(`DROP FUNCTION ${fn}()`);
    await owner.end();
  }
}

describe('faults', () => {
  test('a ledger failure after the capture refunds the charge and alerts the operator', () => ledgerFailureRefunds(false));

  test('the same, with the answers to both the charge and the refund lost after the provider committed them', () => ledgerFailureRefunds(true));

  test('a 5xx burst opens the breaker, the payment waits for it, and completes with one charge once the provider recovers', async () => {
    const { tenant, api } = await tenantApi();
    const queue = `pay-breaker-${randomBytes(4).toString('hex')}`;
    const worker = await privateWorker(queue, {
      FLOWGATE_THIRD_PARTIES: JSON.stringify([{ name: PAYMENTS_SERVICE, base_url: sandbox.url, breaker: { volume_threshold: 3, reset_timeout_ms: 4000 } }]),
    });
    const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
    const opens: BreakerEvent[] = [];
    const sub = nc.subscribe(`third-party.breakers.${PAYMENTS_SERVICE}`);
    void (async () => { for await (const m of sub) { const e = m.json<BreakerEvent>(); if (e.state === 'open' && !e.adopted) opens.push(e); } })();
    await sandbox.faults(tenant, { fail_next: 10_000 });
    const run = await startOn(queue, tenant, payment());
    try {
      await eventually('the breaker opened', async () => (await metric(worker.statusUrl, 'third_party_breaker_state', { service: PAYMENTS_SERVICE })) === 2, 30_000, 100);
      await eventually('the open event on NATS', () => opens.length > 0, 5000, 50);
      await eventually('the status says the breaker is why', async () => (await api.status(run.id)).body.waiting_for?.last_failure_type === 'BreakerOpen', 30_000, 200);
      const why = (await api.status(run.id)).body;
      assert.equal(why.state, 'PAYMENT_PROCESSING');
      assert.equal(why.waiting_for.name, 'chargePayment');
      // While open, nothing reaches the provider: the retry waits for the breaker, not the backoff.
      const open = opens.at(-1)!;
      const during = (await sandbox.requests(tenant, '/v1/charges')).filter((r) => r.received_at > Date.parse(open.at) + 100 && r.received_at < Date.parse(open.retry_at!) - 100);
      assert.deepEqual(during, []);
      await sandbox.clearFaults(tenant);
      const result = await run.handle.result();
      assert.equal(result.state, 'CONFIRMED');
      const charges = await sandbox.charges(tenant);
      assert.equal(charges.filter((c) => c.status === 'succeeded').length, 1, "exactly one charge in the provider's ledger");
      assert.equal(await metric(worker.statusUrl, 'third_party_breaker_state', { service: PAYMENTS_SERVICE }), 0, 'closed again');
    } finally {
      sub.unsubscribe();
      await nc.drain();
      await sandbox.clearFaults(tenant);
      await run.close();
    }
  });

  test('the worker killed mid-charge: another worker finishes the payment, with one charge', async () => {
    const { tenant } = await tenantApi();
    const queue = `pay-kill-${randomBytes(4).toString('hex')}`;
    const doomed = await privateWorker(queue);
    await sandbox.faults(tenant, { latency_ms: 3000 });
    const run = await startOn(queue, tenant, payment());
    try {
      await eventually('the charge reached the provider', async () => (await sandbox.charges(tenant)).length === 1, 20_000, 50);
      doomed.child.kill('SIGKILL');
      await doomed.exited;
      await sandbox.clearFaults(tenant);
      await privateWorker(queue);
      const result = await run.handle.result();
      assert.equal(result.state, 'CONFIRMED');
      const charges = await sandbox.charges(tenant);
      assert.equal(charges.length, 1, 'one charge, whatever was retried');
      assert.equal(result.charge_id, charges[0]!.id);
      const calls = await sandbox.requests(tenant, '/v1/charges');
      assert.ok(calls.length >= 2, 'the charge was sent again after the crash');
      assert.ok(calls.slice(1).every((c) => c.replayed), 'and answered from the idempotency record');
    } finally {
      await run.close();
    }
  });

  test('a credential rotated in OpenBao mid-flight is picked up; no key in Kafka records or the worker log', async () => {
    const { tenant, api } = await tenantApi();
    assert.equal((await finished(api, await pay(api, payment()))).result.state, 'CONFIRMED', 'the worker has the key cached');
    const vault = createVault(stack.env.FLOWGATE_VAULT_ADDR!, stack.env.FLOWGATE_VAULT_TOKEN);
    const path = thirdPartySecretPath(PAYMENTS_SERVICE);
    const old = ((await vault.read(`secret/data/${path}`)) as { data: { data: { value: string } } }).data.data.value;
    const oldId = (await sandbox.account(old)).body.api_key_id!;
    const rolled = await sandbox.roll(old, oldId, 0);
    await vault.write(`secret/data/${path}`, { data: { value: rolled.secret, key_id: rolled.id } });
    const meta = (await vault.read(`secret/metadata/${path}`)) as { data: { current_version: number } };
    await vault.write(`secret/metadata/${path}`, { custom_metadata: { current: String(meta.data.current_version) } });
    assert.equal((await sandbox.account(old)).status, 401, 'the old key is revoked');

    const id = await pay(api, payment());
    assert.equal((await finished(api, id)).result.state, 'CONFIRMED');
    const statuses = (await sandbox.requests(tenant, '/v1/charges')).map((r) => r.status);
    assert.deepEqual(statuses.slice(-2), [401, 200], 'one 401, then the re-read key');

    const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'payments-test');
    const consumer = kafka.consumer({ groupId: `pay-secrets-${tenant}` });
    const records: string[] = [];
    await consumer.connect();
    await consumer.subscribe({ topics: [TOPICS.thirdParty, TOPICS.workflowEvents], fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => { if (message.key?.toString().startsWith(tenant)) records.push(message.value!.toString()); } });
    try {
      await eventually('the records of both payments', () => records.filter((r) => r.includes('"status_code":401')).length >= 1 && records.filter((r) => r.includes('payment.confirmed')).length >= 2, 30_000, 200);
    } finally {
      await consumer.disconnect();
    }
    for (const secret of [old, rolled.secret]) {
      assert.ok(!records.some((r) => r.includes(secret)), 'no key in a Kafka record');
      assert.ok(!readFileSync(logPath(stack.layout, 'worker'), 'utf8').includes(secret), 'no key in the worker log');
    }
  });
});
