// The sampling rule (seed 000: a share of traces, every error) and the trace-context helpers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags } from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import { propagation } from '@opentelemetry/api';
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
