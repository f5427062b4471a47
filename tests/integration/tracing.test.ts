// One trace through every hop of a trigger: the gateway's span, the NATS message's trace context,
// the consumer's start, the workflow and its activities, and the third party's HTTP call — all
// captured by an OTLP/HTTP receiver in this test, and the same trace id in the processes' log lines
// and in the Kafka records. The processes are our own (a private NATS, a private task queue),
// so no other process can take the trigger; the worker runs from a prebuilt workflow bundle, as
// the image's does.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createKafka, TOPICS } from '../../lib/kafka';
import { connectNats, ensureStreams } from '../../lib/nats';
import { bundleWorkflows } from '../../worker/main';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, privateServer, readyStatus, scratchDir, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();

type OtlpSpan = { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: number; status?: { code?: number } };
type Received = OtlpSpan & { service: string };

/** An OTLP/HTTP receiver (JSON encoding, as @opentelemetry/exporter-trace-otlp-http sends). */
async function otlpReceiver(): Promise<{ url: string; spans: Received[]; server: Server }> {
  const spans: Received[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (req.url === '/v1/traces' && req.method === 'POST') {
        const doc = JSON.parse(body) as { resourceSpans: { resource: { attributes: { key: string; value: { stringValue?: string } }[] }; scopeSpans: { spans: OtlpSpan[] }[] }[] };
        for (const rs of doc.resourceSpans ?? []) {
          const service = rs.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue ?? '?';
          for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) spans.push({ ...s, service });
        }
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, server };
}

describe('one trace per trigger, end to end', () => {
  const procs: RunningProcess[] = [];
  let receiver: Awaited<ReturnType<typeof otlpReceiver>>;
  let nats: Awaited<ReturnType<typeof privateServer>>;
  let gatewayUrl: string;

  before(async () => {
    receiver = await otlpReceiver();
    nats = await privateServer('nats');
    const nc = await connectNats(nats.env.FLOWGATE_NATS_URL!, 'tracing-test');
    await ensureStreams(nc);
    await nc.close();
    const bundleFile = path.join(await scratchDir('bundle'), 'workflow-bundle.js');
    await writeFile(bundleFile, (await bundleWorkflows()).code);
    const env = {
      ...stack.env,
      FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL!,
      FLOWGATE_TASK_QUEUE: `traced-${randomBytes(4).toString('hex')}`,
      FLOWGATE_OTLP_ENDPOINT: receiver.url,
      FLOWGATE_TRACE_SAMPLE: '1',
      FLOWGATE_LOG_LEVEL: 'debug',
    };
    for (const name of ['gateway', 'triggers', 'worker'] as const) {
      procs.push(await spawnProcess(name, env, name === 'worker' ? { FLOWGATE_WORKFLOW_BUNDLE: bundleFile } : {}));
    }
    for (const p of procs) await eventually(`${p.statusUrl} ready`, async () => (await readyStatus(p.statusUrl)).code === 200, 90_000);
    gatewayUrl = procs[0]!.publicUrl!;
  });

  after(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await nats?.stop();
    receiver?.server.close();
  });

  test('gateway → NATS → consumer → workflow → activities → third party: one trace id in spans, logs and Kafka', async () => {
    const { tenant, apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'trace');
    const api = gatewayClient(gatewayUrl, apiKey);
    const requestId = randomUUID();
    const started = await api.start('process-payment', {
      amount: 1200, currency: 'EUR', payer: { id: `cust-${randomBytes(3).toString('hex')}` }, payment_method: 'pm_card_visa', description: 'traced order',
    }, { 'x-request-id': requestId });
    assert.equal(started.status, 202, started.text);
    const traceId = started.headers.get('x-trace-id');
    assert.match(traceId ?? '', /^[0-9a-f]{32}$/, 'the answer names its trace');
    const done = await api.result(started.body.execution_id as string, 60);
    assert.equal(done.status, 200, done.text);

    // Spans: every hop, one trace, each child of the hop before.
    const byName = (prefix: string) => receiver.spans.filter((s) => s.traceId === traceId && s.name.startsWith(prefix));
    const hops = ['POST /api/workflows', 'trigger process-payment', 'StartWorkflow:processPayment', 'RunWorkflow:processPayment', 'RunActivity:'];
    await eventually('every hop exported', () => hops.every((p) => byName(p).length > 0), 20_000)
      .catch((err: Error) => { throw new Error(`${err.message}; spans of the trace: ${receiver.spans.filter((s) => s.traceId === traceId).map((s) => `${s.service}/${s.name}`).join(', ')}; all: ${receiver.spans.length}`); });
    const gatewaySpan = byName('POST /api/workflows')[0]!;
    assert.equal(gatewaySpan.service, 'flowgate-gateway');
    assert.equal(gatewaySpan.kind, 2, 'a server span');
    const consumer = byName('trigger process-payment')[0]!;
    assert.equal(consumer.service, 'flowgate-triggers');
    assert.equal(consumer.parentSpanId, gatewaySpan.spanId, 'the consumer span is the gateway span\'s child (context from the NATS headers)');
    const start = byName('StartWorkflow:processPayment')[0]!;
    assert.equal(start.parentSpanId, consumer.spanId);
    const run = byName('RunWorkflow:processPayment')[0]!;
    assert.equal(run.service, 'flowgate-worker');
    assert.equal(run.parentSpanId, start.spanId);
    const activities = byName('RunActivity:');
    assert.ok(activities.length >= 2, `the payment's activities: ${activities.map((a) => a.name).join(', ')}`);
    const outbound = receiver.spans.filter((s) => s.traceId === traceId && s.kind === 3 && s.service === 'flowgate-worker');
    assert.ok(outbound.length >= 1, 'the third party HTTP call is a client span');
    const activitySpanIds = new Set(activities.map((a) => a.spanId));
    assert.ok(outbound.every((o) => activitySpanIds.has(o.parentSpanId!)), 'each HTTP call is a child of its activity');
    const sdkMetrics = await (await fetch(`${procs[2]!.statusUrl}/metrics`)).text();
    assert.match(sdkMetrics, /^temporal_worker_task_slots_available\{/m, 'the worker serves the Temporal SDK\'s metrics with its own');
    const services = new Set(receiver.spans.filter((s) => s.traceId === traceId).map((s) => s.service));
    assert.deepEqual([...services].sort(), ['flowgate-gateway', 'flowgate-triggers', 'flowgate-worker']);

    // Logs: each process wrote the trace id.
    const [gateway, triggers, worker] = procs;
    const logged = () => ({ gateway: gateway!.output().includes(`"trace_id":"${traceId}"`), triggers: triggers!.output().includes(`"trace_id":"${traceId}"`), worker: worker!.output().includes(`"trace_id":"${traceId}"`) });
    await eventually('the trace id in every process\'s log', () => Object.values(logged()).every(Boolean), 10_000)
      .catch((err: Error) => { throw new Error(`${err.message}: ${JSON.stringify(logged())}`); });

    // Kafka: the request's audit record and the third party interaction carry it too.
    const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'tracing-test');
    const consumerGroup = kafka.consumer({ groupId: `tracing-${randomUUID()}` });
    const seen: { topic: string; v: { trace_id?: string; request_id?: string; tenant?: string; tenant_id?: string } }[] = [];
    await consumerGroup.connect();
    await consumerGroup.subscribe({ topics: [TOPICS.auditTrail, TOPICS.thirdParty], fromBeginning: true });
    await consumerGroup.run({ eachMessage: async ({ topic, message }) => { seen.push({ topic, v: JSON.parse(message.value!.toString()) }); } });
    try {
      await eventually('the audit record of the request', () => seen.some((r) => r.topic === TOPICS.auditTrail && r.v.request_id === requestId), 30_000);
      const audit = seen.find((r) => r.topic === TOPICS.auditTrail && r.v.request_id === requestId)!;
      assert.equal(audit.v.trace_id, traceId);
      await eventually('the third party interaction', () => seen.some((r) => r.topic === TOPICS.thirdParty && r.v.tenant_id === tenant), 30_000);
      const calls = seen.filter((r) => r.topic === TOPICS.thirdParty && r.v.tenant_id === tenant);
      assert.ok(calls.every((c) => c.v.trace_id === traceId), `interactions: ${JSON.stringify(calls.map((c) => c.v.trace_id))}`);
    } finally {
      await consumerGroup.disconnect();
    }
  });

  test('a proxied request carries the gateway\'s span to the upstream as its parent', async () => {
    const seen: { traceparent?: string; tracestate?: string }[] = [];
    const upstream = createServer((req, res) => {
      seen.push({ traceparent: req.headers.traceparent as string | undefined, tracestate: req.headers.tracestate as string | undefined });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    try {
      const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'trace');
      assert.equal((await t.admin('POST', '/services', { name: 'traced', url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` })).status, 201);
      assert.equal((await t.admin('POST', '/routes', { name: 'traced', service: 'traced', paths: ['/traced'] })).status, 201);
      const consumer = (await t.admin('POST', '/consumers', { username: 'tracer' })).body as { id: string };
      const { key } = (await t.admin('POST', `/consumers/${consumer.id}/keys`)).body as { key: string };
      const parentTrace = randomBytes(16).toString('hex');
      const parentSpan = randomBytes(8).toString('hex');
      const headers = { authorization: `Bearer ${key}`, traceparent: `00-${parentTrace}-${parentSpan}-01`, tracestate: 'vendor=abc' };
      // This gateway reads the config from PostgreSQL (its NATS is private): the route arrives with its next pull.
      await eventually('the route served', async () => (await fetch(`${gatewayUrl}/traced/x`, { headers })).status === 200, 20_000, 250);
      const got = seen.at(-1)!;
      await eventually('the gateway span exported', () => receiver.spans.some((s) => s.traceId === parentTrace && s.parentSpanId === parentSpan && s.name.startsWith('GET /traced')), 15_000);
      const gatewaySpan = receiver.spans.find((s) => s.traceId === parentTrace && s.parentSpanId === parentSpan && s.name.startsWith('GET /traced'))!;
      assert.equal(got.traceparent, `00-${parentTrace}-${gatewaySpan.spanId}-01`, 'the upstream\'s parent is the gateway\'s span, in the caller\'s trace');
      assert.equal(got.tracestate, 'vendor=abc', 'the caller\'s tracestate goes along');
    } finally {
      upstream.close();
    }
  });

  test('an incoming traceparent is continued, not replaced', async () => {
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'trace');
    const api = gatewayClient(gatewayUrl, apiKey);
    const parentTrace = randomBytes(16).toString('hex');
    const parentSpan = randomBytes(8).toString('hex');
    const r = await api.start('hello', { name: 'traced' }, { traceparent: `00-${parentTrace}-${parentSpan}-01` });
    assert.equal(r.status, 202, r.text);
    assert.equal(r.headers.get('x-trace-id'), parentTrace);
    await eventually('the gateway span under the caller\'s', () => receiver.spans.some((s) => s.traceId === parentTrace && s.parentSpanId === parentSpan && s.service === 'flowgate-gateway'), 15_000)
      .catch((err: Error) => {
        const exportLines = procs[0]!.output().split('\n').filter((l) => l.includes('trace export'));
        throw new Error(`${err.message}; spans of the trace: ${receiver.spans.filter((s) => s.traceId === parentTrace).map((s) => `${s.service}/${s.name}`).join(', ')}; gateway export warnings: ${exportLines.join(' | ') || 'none'}`);
      });
  });
});
