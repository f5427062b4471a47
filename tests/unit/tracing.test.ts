// The sampling rule (seed 000: a share of traces, every error) and the trace-context helpers.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { propagation } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { BasicTracerProvider, InMemorySpanExporter, SamplingDecision } from '@opentelemetry/sdk-trace-base';
import { ErrorKeepingProcessor, ShareSampler, endSpan, extractContext, httpHeaderGetter, startSpan, traceHeaders, traceIdRatio } from '../../lib/tracing';

propagation.setGlobalPropagator(new W3CTraceContextPropagator());

function setup(share: number) {
  const exporter = new InMemorySpanExporter();
  const processor = new ErrorKeepingProcessor(exporter, { flushMs: 60_000 });
  const provider = new BasicTracerProvider({ sampler: new ShareSampler(share), spanProcessors: [processor] });
  return { exporter, processor, tracer: provider.getTracer('test') };
}

test('a share of 0 exports only the spans that failed; a share of 1 exports all', async () => {
  const none = setup(0);
  for (let i = 0; i < 20; i++) endSpan(none.tracer.startSpan(`ok ${i}`));
  endSpan(none.tracer.startSpan('failed'), new Error('upstream 503'));
  await none.processor.forceFlush();
  const kept = none.exporter.getFinishedSpans();
  assert.deepEqual(kept.map((s) => s.name), ['failed']);
  assert.equal(kept[0]!.status.code, SpanStatusCode.ERROR);

  const all = setup(1);
  for (let i = 0; i < 20; i++) endSpan(all.tracer.startSpan(`ok ${i}`));
  await all.processor.forceFlush();
  assert.equal(all.exporter.getFinishedSpans().length, 20);
});

test('the share is taken by trace id, so every process keeps or drops the same traces, close to the share', () => {
  const sampler = new ShareSampler(0.1);
  let kept = 0;
  for (let i = 0; i < 20_000; i++) {
    const id = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(32, '0');
    const d = sampler.shouldSample(ROOT_CONTEXT, id).decision;
    assert.notEqual(d, SamplingDecision.NOT_RECORD, 'recorded always: an error must still be exportable');
    if (d === SamplingDecision.RECORD_AND_SAMPLED) kept += 1;
    assert.equal(sampler.shouldSample(ROOT_CONTEXT, id).decision, d, 'the same answer for the same trace');
  }
  assert.ok(kept > 1700 && kept < 2300, `kept ${kept} of 20000 at 10 %`);
  assert.equal(traceIdRatio('0'.repeat(24) + 'ffffffff') < 1, true);
});

test('a child follows its parent\'s decision, whatever the share', () => {
  const sampler = new ShareSampler(0);
  const parent = (flags: TraceFlags) => trace.setSpanContext(ROOT_CONTEXT, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: flags, isRemote: true });
  assert.equal(sampler.shouldSample(parent(TraceFlags.SAMPLED), 'a'.repeat(32)).decision, SamplingDecision.RECORD_AND_SAMPLED);
  assert.equal(sampler.shouldSample(parent(TraceFlags.NONE), 'a'.repeat(32)).decision, SamplingDecision.RECORD);
});

test("at the edge (the gateway) a client's sampled flag decides nothing: the share does, on the trace id", () => {
  const edge = new ShareSampler(0.1, { edge: true });
  const client = (traceId: string, flags: TraceFlags) => trace.setSpanContext(ROOT_CONTEXT, { traceId, spanId: 'b'.repeat(16), traceFlags: flags, isRemote: true });
  let kept = 0;
  for (let i = 0; i < 5000; i++) {
    const id = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(32, '0');
    const d = edge.shouldSample(client(id, TraceFlags.SAMPLED), id).decision;
    assert.equal(d, new ShareSampler(0.1).shouldSample(ROOT_CONTEXT, id).decision, 'as if it were a root');
    if (d === SamplingDecision.RECORD_AND_SAMPLED) kept += 1;
  }
  assert.ok(kept < 700, `a client asking for every trace got ${kept} of 5000 at 10 %`);
  // A parent in the same process (the gateway's own spans) is still followed.
  const local = trace.setSpanContext(ROOT_CONTEXT, { traceId: 'a'.repeat(32), spanId: 'b'.repeat(16), traceFlags: TraceFlags.SAMPLED, isRemote: false });
  assert.equal(new ShareSampler(0, { edge: true }).shouldSample(local, 'a'.repeat(32)).decision, SamplingDecision.RECORD_AND_SAMPLED);
});

test('without an exporter, a span still has a trace id, continues an incoming traceparent and passes it on', () => {
  const noop = trace.getTracer('none');
  const fresh = startSpan(noop, 'x', SpanKind.SERVER, ROOT_CONTEXT);
  assert.match(fresh.spanContext().traceId, /^[0-9a-f]{32}$/);
  assert.notEqual(fresh.spanContext().traceId, '0'.repeat(32));
  assert.match(traceHeaders(fresh).traceparent!, new RegExp(`^00-${fresh.spanContext().traceId}-[0-9a-f]{16}-00$`));

  const incoming = `00-${'1'.repeat(32)}-${'2'.repeat(16)}-01`;
  const continued = startSpan(noop, 'x', SpanKind.SERVER, extractContext({ traceparent: incoming }, httpHeaderGetter));
  assert.equal(continued.spanContext().traceId, '1'.repeat(32));
  assert.equal(traceHeaders(continued).traceparent!.split('-')[1], '1'.repeat(32));
});

/** An OTLP/HTTP collector whose first `resets` requests lose their connection before any answer. */
async function collector(resets: number) {
  const bodies: string[] = [];
  let requests = 0;
  const server = createServer((req, res) => {
    requests += 1;
    if (requests <= resets) {
      req.socket.destroy();
      return;
    }
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      bodies.push(body);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const exporter = new OTLPTraceExporter({ url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`, timeoutMillis: 2000 });
  const processor = new ErrorKeepingProcessor(exporter, { flushMs: 60_000, retryMs: 50 });
  const tracer = new BasicTracerProvider({ sampler: new ShareSampler(1), spanProcessors: [processor] }).getTracer('test');
  return { bodies, requests: () => requests, server, processor, tracer };
}

test('an export whose connection is reset is sent once more, so its spans still arrive', async () => {
  const c = await collector(1);
  try {
    endSpan(c.tracer.startSpan('kept through a reset'));
    await c.processor.forceFlush();
    assert.equal(c.requests(), 2, 'the reset export and its retry');
    assert.equal(c.bodies.length, 1);
    assert.match(c.bodies[0]!, /kept through a reset/);
    assert.equal(c.processor.dropped, 0);
  } finally {
    c.server.close();
  }
});

test('an export that fails twice is dropped and counted, and the next batch is exported', async () => {
  const c = await collector(2);
  try {
    endSpan(c.tracer.startSpan('lost a'));
    endSpan(c.tracer.startSpan('lost b'));
    await c.processor.forceFlush();
    assert.equal(c.requests(), 2, 'one retry, not more');
    assert.equal(c.processor.dropped, 2);
    endSpan(c.tracer.startSpan('after the outage'));
    await c.processor.forceFlush();
    assert.equal(c.bodies.length, 1);
    assert.match(c.bodies[0]!, /after the outage/);
    assert.doesNotMatch(c.bodies[0]!, /lost a/);
  } finally {
    c.server.close();
  }
});
