// Signed webhooks on completion, failure and cancellation, retried until the receiver takes them.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createPool, inWorkspace } from '../../lib/postgres';
import { verifyWebhook, WEBHOOK_HEADERS } from '../../lib/webhook-signature';
import { gatewayClient } from '../helpers/api';
import { eventually, testStack } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();
type Delivery = { headers: Record<string, string>; body: string; event: Record<string, unknown> };

describe('webhooks', () => {
  let server: http.Server;
  let url: string;
  const deliveries: Delivery[] = [];
  let failFirst = 0;
  let api: ReturnType<typeof gatewayClient>;
  let secret: string;

  before(async () => {
    server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
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
    api = gatewayClient(stack.gatewayUrl, t.apiKey);
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
    assert.equal(verifyWebhook(secret, d.headers, d.body.replace('hook', 'hack')), false, 'a changed body does not');
    assert.equal(verifyWebhook('another-secret', d.headers, d.body), false);
    const old = { ...d.headers, [WEBHOOK_HEADERS.timestamp]: String(Number(d.headers[WEBHOOK_HEADERS.timestamp]) - 3600) };
    assert.equal(verifyWebhook(secret, old, d.body), false, 'an old timestamp is refused (replay)');
  });

  test('failure and cancellation are posted too', async () => {
    const rejected = await api.start('approval-request', { subject: 'x', requester: 'alice' }, { 'x-callback-url': url });
    await eventually('running', async () => (await api.status(rejected.body.execution_id)).body.status === 'RUNNING');
    await api.signal(rejected.body.execution_id, 'reject', { approver: 'bob' });
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

  test('a callback URL that is not http(s) is refused with the field named', async () => {
    const r = await api.start('hello', { name: 'x' }, { 'x-callback-url': 'file:///etc/passwd' });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.details[0].field, 'headers.x-callback-url');
  });
});
