// Signed webhooks on completion, failure and cancellation, retried until the receiver takes them.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createPool, inWorkspace } from '../../lib/postgres';
import { connectTemporal } from '../../lib/temporal';
import { sendSignedWebhook } from '../../lib/webhook-deliveries';
import { verifyWebhook, WEBHOOK_HEADERS } from '../../lib/webhook-signature';
import { gatewayClient } from '../helpers/api';
import { eventually, testStack } from '../helpers/stack';
import { consumerKey, newTenant } from '../helpers/tenant';

const stack = testStack();
type Delivery = { headers: Record<string, string>; body: string; event: Record<string, unknown> };
/** What a receiver computes from the documented scheme, not with lib/webhook-signature.ts. */
const expectedSignature = (secret: string, timestamp: string, body: string) => `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;

describe('webhooks', () => {
  let server: http.Server;
  let url: string;
  const deliveries: Delivery[] = [];
  const gone: string[] = [];
  /** Every request the receiver got, refused or taken, with the headers it came with. */
  const attempts: { eventId: string; timestamp: string; signature: string; body: string }[] = [];
  let failFirst = 0;
  let api: ReturnType<typeof gatewayClient>;
  let approver: ReturnType<typeof gatewayClient>; // another consumer of the tenant
  let secret: string;
  let tenant: string;
  const deliveryRow = async (eventId: string) => {
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    try {
      return (await inWorkspace(pool, tenant, (db) => db.query<{ state: string; attempts: number; last_status: number | null }>(
        'SELECT state, attempts, last_status FROM webhook_deliveries WHERE event_id = $1', [eventId]))).rows[0];
    } finally {
      await pool.end();
    }
  };

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        attempts.push({ eventId: String(req.headers[WEBHOOK_HEADERS.id]), timestamp: String(req.headers[WEBHOOK_HEADERS.timestamp]), signature: String(req.headers[WEBHOOK_HEADERS.signature]), body });
        if (req.url === '/down') {
          res.writeHead(503).end();
          return;
        }
        if (req.url === '/gone') {
          gone.push(body);
          res.writeHead(410).end();
          return;
        }
        if (failFirst > 0) {
          failFirst--;
          res.writeHead(503).end();
          return;
        }
        deliveries.push({ headers: req.headers as Record<string, string>, body, event: JSON.parse(body) });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`;
    const t = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'wh');
    tenant = t.tenant;
    api = gatewayClient(stack.gatewayUrl, t.apiKey);
    approver = gatewayClient(stack.gatewayUrl, await consumerKey(stack.env.FLOWGATE_DATABASE_URL!, t.tenant, 'approver'));
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    secret = await inWorkspace(pool, t.tenant, async (db) => (await db.query<{ secret: string }>('SELECT secret FROM webhook_secrets')).rows[0]!.secret);
    await pool.end();
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  const deliveryFor = async (id: string) => {
    await eventually(`webhook for ${id}`, () => deliveries.some((d) => d.event.execution_id === id), 30_000);
    return deliveries.find((d) => d.event.execution_id === id)!;
  };

  test('completion is posted, signed with the tenant secret over timestamp and body, after the receiver recovers', async () => {
    failFirst = 2; // the receiver is down for the first two attempts
    const r = await api.start('hello', { name: 'hook' }, { 'x-callback-url': url });
    assert.equal(r.status, 202);
    const d = await deliveryFor(r.body.execution_id);
    assert.equal(failFirst, 0, 'the failed attempts were retried');
    assert.equal(d.event.type, 'workflow.completed');
    assert.equal(d.event.status, 'COMPLETED');
    assert.deepEqual(d.event.result, { greeting: 'Hello, hook!' });
    assert.equal(d.headers[WEBHOOK_HEADERS.id], `${r.body.execution_id}:COMPLETED`);
    assert.ok(verifyWebhook(secret, d.headers, d.body), 'signature verifies');
    const ts = d.headers[WEBHOOK_HEADERS.timestamp]!;
    assert.equal(d.headers[WEBHOOK_HEADERS.signature], expectedSignature(secret, ts, d.body), 'HMAC-SHA256 over `${timestamp}.${body}`');
    const shifted = { ...d.headers, [WEBHOOK_HEADERS.timestamp]: String(Number(ts) + 1) };
    assert.equal(verifyWebhook(secret, shifted, d.body), false, 'another timestamp, even a recent one, does not verify: it is signed');
    assert.equal(verifyWebhook(secret, d.headers, d.body.replace('hook', 'hack')), false, 'a changed body does not');
    assert.equal(verifyWebhook('another-secret', d.headers, d.body), false);
    const old = { ...d.headers, [WEBHOOK_HEADERS.timestamp]: String(Number(d.headers[WEBHOOK_HEADERS.timestamp]) - 3600) };
    assert.equal(verifyWebhook(secret, old, d.body), false, 'an old timestamp is refused (replay)');
  });

  test('failure and cancellation are posted too', async () => {
    const rejected = await api.start('approval-request', { subject: 'x', requester: 'alice' }, { 'x-callback-url': url });
    await eventually('running', async () => (await api.status(rejected.body.execution_id)).body.status === 'RUNNING');
    await approver.signal(rejected.body.execution_id, 'reject', { approver: 'bob' });
    const failed = await deliveryFor(rejected.body.execution_id);
    assert.equal(failed.event.type, 'workflow.failed');
    assert.equal((failed.event.error as { type: string }).type, 'ApprovalRejected');

    const canceled = await api.start('approval-request', { subject: 'y', requester: 'alice' }, { 'x-callback-url': url });
    await eventually('running', async () => (await api.status(canceled.body.execution_id)).body.status === 'RUNNING');
    assert.equal((await api.cancel(canceled.body.execution_id)).status, 202);
    const c = await deliveryFor(canceled.body.execution_id);
    assert.equal(c.event.type, 'workflow.canceled');
    assert.ok(verifyWebhook(secret, c.headers, c.body));
  });

  test('a run terminated by an operator (its code never runs again) still sends its signed webhook', async () => {
    const r = await api.start('approval-request', { subject: 'z', requester: 'alice' }, { 'x-callback-url': url });
    const id = r.body.execution_id as string;
    await eventually('running', async () => (await api.status(id)).body.status === 'RUNNING');
    const temporal = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
    try {
      await temporal.workflow.getHandle(id).terminate('stopped by an operator');
    } finally {
      await temporal.connection.close();
    }
    const d = await deliveryFor(id);
    assert.equal(d.event.type, 'workflow.terminated');
    assert.equal(d.event.status, 'TERMINATED');
    assert.equal(d.event.workflow_type, 'approval-request');
    assert.equal(d.headers[WEBHOOK_HEADERS.id], `${id}:TERMINATED`);
    assert.ok(verifyWebhook(secret, d.headers, d.body));
    await new Promise((res) => setTimeout(res, 1500)); // another look at visibility finds it again
    assert.equal(deliveries.filter((x) => x.event.execution_id === id).length, 1, 'sent once');
  });

  test('a receiver down for longer than the workflow waits: the workflow ends, and the retrier delivers later', async () => {
    failFirst = 6; // 3 attempts while the workflow ends, then 3 more by the retrier
    const r = await api.start('hello', { name: 'late' }, { 'x-callback-url': url });
    const id = r.body.execution_id as string;
    await eventually('the workflow completed', async () => (await api.status(id)).body.status === 'COMPLETED', 20_000);
    assert.ok(failFirst > 0, 'it completed while the receiver was still down');
    assert.equal((await deliveryRow(`${id}:COMPLETED`))?.state, 'pending', 'handed to the retrier');
    const d = await deliveryFor(id);
    assert.equal(failFirst, 0);
    assert.equal(d.event.type, 'workflow.completed');
    assert.deepEqual(d.event.result, { greeting: 'Hello, late!' });
    assert.equal(d.headers[WEBHOOK_HEADERS.id], `${id}:COMPLETED`);
    assert.ok(verifyWebhook(secret, d.headers, d.body));
    const tries = attempts.filter((a) => a.eventId === `${id}:COMPLETED`);
    assert.equal(tries.length, 7, 'six refused, then taken');
    for (const a of tries) assert.equal(a.signature, expectedSignature(secret, a.timestamp, a.body), 'each attempt is signed over its own timestamp');
    assert.ok(Number(tries[6]!.timestamp) > Number(tries[0]!.timestamp), `each retry is stamped afresh (first ${tries[0]!.timestamp}, last ${tries[6]!.timestamp})`);
    await eventually('the delivery is recorded', async () => (await deliveryRow(`${id}:COMPLETED`))?.state === 'delivered');
    const row = await deliveryRow(`${id}:COMPLETED`);
    assert.equal(row!.attempts, 7);
    assert.equal(deliveries.filter((x) => x.event.execution_id === id).length, 1, 'delivered once');
  });

  test('outside a local stack, a webhook to a non-public address is refused without a connection', async () => {
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    try {
      const before = deliveries.length;
      const publicOnly = { allowNonPublic: false };
      const byAddress = await sendSignedWebhook(pool, publicOnly, tenant, url, 'ssrf-1', { probe: 1 });
      assert.deepEqual(byAddress, { ok: false, refused: true, error: 'the callback URL names 127.0.0.1, not a public address' });
      assert.equal(deliveries.length, before, 'the receiver saw nothing');
      // (What a name resolves to is checked at connection time: tests/unit/webhook-targets.test.ts.)
      // The local stack's setting: the same receiver takes it.
      assert.deepEqual(await sendSignedWebhook(pool, { allowNonPublic: true }, tenant, url, 'ssrf-3', { probe: 3 }), { ok: true, status: 204 });
      assert.equal(deliveries.length, before + 1);
    } finally {
      await pool.end();
    }
  });

  test('a receiver that refuses (a 4xx) is not retried; the refusal is recorded', async () => {
    const goneUrl = url.replace('/hooks', '/gone');
    const r = await api.start('hello', { name: 'refused' }, { 'x-callback-url': goneUrl });
    const id = r.body.execution_id as string;
    await eventually('the workflow completed', async () => (await api.status(id)).body.status === 'COMPLETED', 20_000);
    await eventually('the refusal is recorded', async () => (await deliveryRow(`${id}:COMPLETED`))?.state === 'refused');
    const row = await deliveryRow(`${id}:COMPLETED`);
    assert.equal(row!.last_status, 410);
    await new Promise((res) => setTimeout(res, 1500)); // past the retrier's first pause
    assert.equal(gone.filter((b) => b.includes(id)).length, 1, 'posted once, not retried');
  });

  test('past the retry window, a webhook still failing is abandoned', async () => {
    const eventId = `abandon-${Date.now()}`;
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    try {
      // Handed over four days ago (the window is three), and due now.
      await inWorkspace(pool, tenant, (db) => db.query(
        `INSERT INTO webhook_deliveries (workspace_id, event_id, url, payload, attempts, created_at) VALUES ($1, $2, $3, '{"id":"x"}', 3, now() - interval '4 days')`,
        [tenant, eventId, url.replace('/hooks', '/down')]));
    } finally {
      await pool.end();
    }
    await eventually('abandoned', async () => (await deliveryRow(eventId))?.state === 'abandoned', 10_000);
    const row = await deliveryRow(eventId);
    assert.equal(row!.attempts, 4);
    assert.equal(row!.last_status, 503);
  });

  test("a tenant whose receivers hang does not hold back another tenant's webhooks", async () => {
    // Accepts connections and never answers: each post to it waits out its 10 s timeout.
    const sockets = new Set<net.Socket>();
    const hang = net.createServer((s) => { sockets.add(s); });
    await new Promise<void>((r) => hang.listen(0, '127.0.0.1', r));
    const slow = (await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'whslow')).tenant;
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    const eventId = `fair-${Date.now()}`;
    try {
      // 30 of the slow tenant's webhooks, due before ours.
      await inWorkspace(pool, slow, (db) => db.query(
        `INSERT INTO webhook_deliveries (workspace_id, event_id, url, payload, attempts, next_attempt_at)
         SELECT $1, 'hang-' || i, $2, '{"id":"x"}', 3, now() - interval '1 minute' FROM generate_series(1, 30) i`,
        [slow, `http://127.0.0.1:${(hang.address() as AddressInfo).port}/hooks`]));
      await eventually('the slow tenant\'s posts are hanging', () => sockets.size > 0, 10_000, 50);
      await inWorkspace(pool, tenant, (db) => db.query(
        `INSERT INTO webhook_deliveries (workspace_id, event_id, url, payload, attempts) VALUES ($1, $2, $3, '{"id":"fair"}', 3)`, [tenant, eventId, url]));
      const t0 = Date.now();
      await eventually('ours is delivered', async () => (await deliveryRow(eventId))?.state === 'delivered', 8000, 100);
      assert.ok(Date.now() - t0 < 8000);
      await new Promise((r) => setTimeout(r, 1000)); // several more passes of the retrier
      assert.equal(sockets.size, 4, 'the slow tenant holds 4 posts, no more');
    } finally {
      await inWorkspace(pool, slow, (db) => db.query("UPDATE webhook_deliveries SET state = 'abandoned' WHERE workspace_id = $1", [slow]));
      await pool.end();
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => hang.close(() => r()));
    }
  });

  test('a callback URL that is not http(s) is refused with the field named', async () => {
    const r = await api.start('hello', { name: 'x' }, { 'x-callback-url': 'file:///etc/passwd' });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.details[0].field, 'headers.x-callback-url');
  });
});
