// Routes and Kafka event types bound to workflows through trigger rules (admin → gateway/consumers).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ExecutionIds } from '../../lib/execution-ids';
import { createKafka, TOPICS } from '../../lib/kafka';
import { createPool, inWorkspace } from '../../lib/postgres';
import { issueAdminToken } from '../../lib/tenants';
import { gatewayClient } from '../helpers/api';
import { connectTemporal } from '../../lib/temporal';
import { eventually, privateServer, readyStatus, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();

describe('trigger rules', () => {
  let tenant: string;
  let api: ReturnType<typeof gatewayClient>;
  let other: ReturnType<typeof gatewayClient>;
  let adminToken: string;
  let viewerToken: string;
  let upstream: http.Server;
  let upstreamUrl: string;
  const upstreamSeen: { url: string; headers: http.IncomingHttpHeaders; body: string }[] = [];

  const admin = (method: string, path: string, token: string, body?: unknown) =>
    fetch(`${stack.adminUrl}${path}`, { method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });

  /** An event rule of the tenant: `hello`, named by the template `name`; returns the rule's id. */
  const eventRule = async (eventType: string, name: string) => {
    const created = await admin('POST', `/triggers?workspace=${tenant}`, adminToken, { event_type: eventType, workflow_type: 'hello', input_template: { name } });
    assert.equal(created.status, 201);
    return ((await created.json()) as { id: string }).id;
  };
  /** The records, keyed by the tenant, on Kafka api.events. */
  const sendEvents = async (...events: object[]) => {
    const producer = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'rules-test').producer();
    await producer.connect();
    await producer.send({ topic: TOPICS.events, messages: events.map((e) => ({ key: tenant, value: JSON.stringify(e) })) });
    await producer.disconnect();
  };

  before(async () => {
    const t = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'tr');
    tenant = t.tenant;
    api = gatewayClient(stack.gatewayUrl, t.apiKey);
    other = gatewayClient(stack.gatewayUrl, (await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'tr')).apiKey);
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    adminToken = (await issueAdminToken(pool, tenant, 'rules-admin', 'admin')).token;
    viewerToken = (await issueAdminToken(pool, tenant, 'rules-viewer', 'viewer')).token;
    await pool.end();
    upstream = http.createServer((req, res) => {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        upstreamSeen.push({ url: req.url!, headers: req.headers, body });
        res.writeHead(201, { 'content-type': 'application/json', 'x-upstream': 'yes' }).end(JSON.stringify({ order: 'created' }));
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((r) => upstream.close(() => r())));

  test('a viewer cannot create rules; an invalid rule is 400 with the field; an unknown workflow 409', async () => {
    const asViewer = await admin('POST', `/triggers?workspace=${tenant}`, viewerToken, { route_path: '/x', workflow_type: 'hello' });
    assert.equal(asViewer.status, 403);
    const invalid = await admin('POST', `/triggers?workspace=${tenant}`, adminToken, { route_path: 'no-slash', workflow_type: 'hello' });
    assert.equal(invalid.status, 400);
    assert.equal(((await invalid.json()) as { error: { details: { field: string }[] } }).error.details[0]!.field, 'body.route_path');
    const unknown = await admin('POST', `/triggers?workspace=${tenant}`, adminToken, { route_path: '/y', workflow_type: 'nope' });
    assert.equal(unknown.status, 409);
  });

  test('a route bound to a workflow answers 202 with the execution headers; the template maps path and body', async () => {
    const created = await admin('POST', `/triggers?workspace=${tenant}`, adminToken, {
      route_methods: ['POST'], route_path: '/greetings/:who', workflow_type: 'hello', input_template: { name: '{{path.who}} from {{body.team}}' },
    });
    assert.equal(created.status, 201);
    let r: Awaited<ReturnType<typeof api.call>> | undefined;
    await eventually('the gateway to serve the new route (config.invalidations)', async () => {
      r = await api.call('POST', '/greetings/ada', { team: 'ops' });
      return r.status === 202;
    }, 5000, 50);
    const id = r!.headers.get('x-workflow-execution-id')!;
    assert.equal(r!.headers.get('x-workflow-status-endpoint'), `/api/workflows/${id}`);
    await eventually('completed', async () => (await api.status(id)).body.status === 'COMPLETED');
    assert.deepEqual((await api.status(id)).body.result, { greeting: 'Hello, ada from ops!' });

    assert.equal((await other.call('POST', '/greetings/ada', { team: 'ops' })).status, 404, "another tenant doesn't have the route");
    const bad = await api.call('POST', '/greetings/ada', {});
    assert.equal(bad.status, 202, 'an empty team still renders a name');
    const wrongMethod = await api.call('GET', '/greetings/ada');
    assert.equal(wrongMethod.status, 404);
  });

  test('a route with an upstream is proxied and the upstream answer carries the workflow headers', async () => {
    const created = await admin('POST', `/triggers?workspace=${tenant}`, adminToken, {
      route_methods: ['POST'], route_path: '/orders', workflow_type: 'hello', input_template: { name: 'order {{body.sku}}' }, upstream_url: upstreamUrl,
    });
    assert.equal(created.status, 201);
    let r: Awaited<ReturnType<typeof api.call>> | undefined;
    await eventually('route served', async () => {
      r = await api.call('POST', '/orders?src=test', { sku: 'A-1' });
      return r.status === 201;
    }, 5000, 50);
    assert.deepEqual(r!.body, { order: 'created' });
    assert.equal(r!.headers.get('x-upstream'), 'yes');
    const id = r!.headers.get('x-workflow-execution-id')!;
    assert.ok(id.startsWith('fgx_'));
    const seen = upstreamSeen.at(-1)!;
    assert.equal(seen.url, '/orders?src=test');
    assert.equal(seen.headers['x-workflow-execution-id'], id);
    assert.equal(seen.headers['x-tenant-id'], tenant);
    assert.equal(seen.headers.authorization, undefined, 'the client credential is not passed upstream');
    assert.deepEqual(JSON.parse(seen.body), { sku: 'A-1' });
    await eventually('the bound workflow completed', async () => (await api.status(id)).body.status === 'COMPLETED');
  });

  test('a Kafka api.events record of a bound type starts its workflow once, however often it is read', async () => {
    const rule = await eventRule('user.signed_up', '{{event.data.email}}');
    const eventId = randomUUID();
    // An empty correlation id is none (the execution id stands in): not a trigger dead-lettered as malformed.
    const event = { id: eventId, type: 'user.signed_up', tenant, data: { email: 'grace@example.com' }, correlation_id: '' };
    // Sent twice: the same event must not start two workflows.
    await sendEvents(event, event);
    const id = new ExecutionIds(stack.env.FLOWGATE_EXECUTION_ID_SECRET!).mint(tenant, `event:${rule}:${eventId}`);
    await eventually('event-triggered workflow completed', async () => (await api.status(id)).body.status === 'COMPLETED', 60_000, 250);
    assert.deepEqual((await api.status(id)).body.result, { greeting: 'Hello, grace@example.com!' });
    const list = await api.list('?type=hello&limit=100');
    assert.equal(list.body.executions.filter((e: { execution_id: string }) => e.execution_id === id).length, 1);
  });

  test('an api.events record sent while the triggers process is down is read when it is back', async () => {
    // A triggers process of its own (own NATS, own execution-id secret, own consumer group), so the
    // workflow it starts is one the stack's triggers process cannot start. Its group has read
    // nothing when it is killed: without the partitions pinned at its first start, the restarted
    // consumer would begin at the end and skip the record.
    const nats = await privateServer('nats');
    const overrides = { FLOWGATE_EVENT_RULES_GROUP: `test-pinned-${randomUUID()}`, FLOWGATE_EXECUTION_ID_SECRET: `pinned-${randomUUID()}` };
    const env = { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL! };
    const started: RunningProcess[] = [];
    const temporal = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, stack.env.FLOWGATE_TEMPORAL_NAMESPACE ?? 'default');
    try {
      const rule = await eventRule('order.placed', '{{event.data.customer}}');
      const first = await spawnProcess('triggers', env, overrides);
      started.push(first);
      await eventually('triggers ready', async () => (await readyStatus(first.statusUrl)).code === 200, 60_000);
      assert.match(first.output(), /partitions without an offset pinned at their end/);
      first.child.kill('SIGKILL');
      await first.exited;

      const eventId = randomUUID();
      await sendEvents({ id: eventId, type: 'order.placed', tenant, data: { customer: 'ada' } });

      const second = await spawnProcess('triggers', env, overrides);
      started.push(second);
      const id = new ExecutionIds(overrides.FLOWGATE_EXECUTION_ID_SECRET).mint(tenant, `event:${rule}:${eventId}`);
      // The old member's session (10 s) ends before the new one is given the partitions.
      await eventually('the record sent while it was down started its workflow', async () => {
        const d = await temporal.workflow.getHandle(id).describe();
        return d.status.name === 'COMPLETED';
      }, 60_000, 500);
      assert.deepEqual(await temporal.workflow.getHandle(id).result(), { greeting: 'Hello, ada!' });
    } finally {
      for (const p of started) p.child.kill('SIGKILL');
      await temporal.connection.close();
      await nats.stop();
    }
  });

  test('an api.events consumer that kafkajs gives up on is started again, and the record is read', async () => {
    // Own NATS, secret and group, as above; the failpoint fails the consumer on its first record
    // with an error kafkajs does not restart it after (as "group coordinator not found" from a
    // broker that has just restarted). The record's offset is not committed, so it is read again.
    const nats = await privateServer('nats');
    const secret = `crash-${randomUUID()}`;
    const temporal = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, stack.env.FLOWGATE_TEMPORAL_NAMESPACE ?? 'default');
    const p = await spawnProcess('triggers', { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL! }, {
      FLOWGATE_EVENT_RULES_GROUP: `test-crash-${randomUUID()}`, FLOWGATE_EXECUTION_ID_SECRET: secret, FLOWGATE_FAILPOINT: 'events-consumer-crash',
    });
    try {
      const rule = await eventRule('invoice.paid', '{{event.data.customer}}');
      await eventually('triggers ready', async () => (await readyStatus(p.statusUrl)).code === 200, 60_000);
      const eventId = randomUUID();
      await sendEvents({ id: eventId, type: 'invoice.paid', tenant, data: { customer: 'grace' } });
      const id = new ExecutionIds(secret).mint(tenant, `event:${rule}:${eventId}`);
      await eventually('the record started its workflow after the consumer was started again', async () => (await temporal.workflow.getHandle(id).describe()).status.name === 'COMPLETED', 60_000, 500);
      assert.match(p.output(), /api.events consumer crashed/);
      assert.match(p.output(), /api.events consumer started again/);
      await eventually('ready again', async () => (await readyStatus(p.statusUrl)).code === 200, 10_000);
    } finally {
      p.child.kill('SIGKILL');
      await temporal.connection.close();
      await nats.stop();
    }
  });

  test('rule changes are audited', async () => {
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    const rows = (await inWorkspace(pool, tenant, (db) => db.query("SELECT action, actor FROM audit_logs WHERE entity_type = 'workflow_trigger'"))).rows;
    await pool.end();
    assert.ok(rows.length >= 3);
    assert.ok(rows.every((r) => r.action === 'create' && r.actor === 'token:rules-admin'));
  });
});
