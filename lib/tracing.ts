import { randomFillSync } from 'node:crypto';
import {
  context, isSpanContextValid, propagation, ROOT_CONTEXT, SpanStatusCode, trace, TraceFlags,
  type Attributes, type Context, type Span, type SpanKind, type TextMapGetter, type Tracer,
} from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { Resource } from '@opentelemetry/resources';
import {
  BasicTracerProvider, SamplingDecision,
  type ReadableSpan, type Sampler, type SamplingResult, type Span as SdkSpan, type SpanExporter, type SpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import type { Logger } from './logger';

/**
 * Head sampling that keeps errors: a root is sampled for `share` of trace ids; a child follows its
 * parent. Spans that are not sampled are still recorded, so that ErrorKeepingProcessor can export
 * the ones that end in error. (Seed 000: "1-10 % + 100 % on errors".)
 *
 * `edge` (the gateway): a parent from another process is the client's `traceparent`, whose
 * sampled flag anyone can set; there the trace id is kept but the decision is the share's, taken
 * on the trace id as every process takes it, so a client cannot have all its requests traced
 * (and crowd error spans out of the export queue).
 */
export class ShareSampler implements Sampler {
  constructor(private readonly share: number, private readonly opts: { edge?: boolean } = {}) {}

  shouldSample(ctx: Context, traceId: string): SamplingResult {
    const parent = trace.getSpanContext(ctx);
    if (parent && isSpanContextValid(parent) && !(this.opts.edge && parent.isRemote)) {
      return { decision: parent.traceFlags & TraceFlags.SAMPLED ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.RECORD };
    }
    return { decision: traceIdRatio(traceId) < this.share ? SamplingDecision.RECORD_AND_SAMPLED : SamplingDecision.RECORD };
  }

  toString(): string {
    return `ShareSampler{${this.share}${this.opts.edge ? ', edge' : ''}}`;
  }
}

/** A trace id's low 32 bits as a fraction of 1: the same decision in every process that sees it. */
export function traceIdRatio(traceId: string): number {
  return parseInt(traceId.slice(-8), 16) / 0x1_0000_0000;
}

/** Exports sampled spans and every span that ended in error, in batches of up to 512 every `flushMs`; `dropped` counts what was not exported. */
export class ErrorKeepingProcessor implements SpanProcessor {
  private queue: ReadableSpan[] = [];
  private timer: NodeJS.Timeout;
  private inflight: Promise<void> = Promise.resolve();
  dropped = 0;

  constructor(private readonly exporter: SpanExporter, private readonly opts: { flushMs?: number; retryMs?: number; maxQueue?: number; logger?: Logger } = {}) {
    this.timer = setInterval(() => void this.forceFlush(), opts.flushMs ?? 1000);
    this.timer.unref();
  }

  onStart(_span: SdkSpan, _ctx: Context): void { /* nothing until the span ends */ }

  onEnd(span: ReadableSpan): void {
    const sampled = (span.spanContext().traceFlags & TraceFlags.SAMPLED) !== 0;
    if (!sampled && span.status.code !== SpanStatusCode.ERROR) return;
    if (this.queue.length >= (this.opts.maxQueue ?? 4096)) {
      this.dropped += 1;
      return;
    }
    this.queue.push(span);
    if (this.queue.length >= 512) void this.forceFlush();
  }

  forceFlush(): Promise<void> {
    if (!this.queue.length) return this.inflight;
    const batch = this.queue;
    this.queue = [];
    this.inflight = this.inflight.then(() => this.exportBatch(batch));
    return this.inflight;
  }

  /**
   * A failed export is tried once more after `retryMs`: the OTLP exporter retries only the
   * answers it calls retryable (429, 502-504), not a network error such as a kept-alive socket
   * the collector closed as the export went out. A second failure drops the batch, counted.
   */
  private async exportBatch(batch: ReadableSpan[]): Promise<void> {
    let result = await this.exportOnce(batch);
    if (result.code !== ExportResultCode.SUCCESS) {
      await new Promise<void>((resolve) => setTimeout(resolve, this.opts.retryMs ?? 1000).unref());
      result = await this.exportOnce(batch);
    }
    if (result.code !== ExportResultCode.SUCCESS) {
      this.dropped += batch.length;
      this.opts.logger?.warn({ err: result.error?.message, spans: batch.length }, 'trace export failed twice; spans dropped');
    }
  }

  private exportOnce(batch: ReadableSpan[]): Promise<ExportResult> {
    return new Promise((resolve) => this.exporter.export(batch, resolve));
  }

  async shutdown(): Promise<void> {
    clearInterval(this.timer);
    await this.forceFlush();
    await this.exporter.shutdown();
  }
}

/** A processor that drops everything: the workflow sink needs one when export is off. */
export const DROP_SPANS: SpanProcessor = { onStart: () => undefined, onEnd: () => undefined, forceFlush: async () => undefined, shutdown: async () => undefined };

export type Tracing = {
  tracer: Tracer;
  /** Where spans go: also the Temporal worker's workflow span sink. */
  processor: SpanProcessor;
  resource: Resource;
  enabled: boolean;
  shutdown(): Promise<void>;
};

/**
 * Sets up tracing for one process: W3C trace context always (so trace ids pass through a process
 * that does not export), an OTLP/HTTP exporter when FLOWGATE_OTLP_ENDPOINT is set.
 * `activeContext`: an AsyncLocalStorage context manager, for the processes whose libraries find
 * the parent span in the active context (Temporal's interceptors). The gateway passes spans
 * explicitly and does without: AsyncLocalStorage costs every request's promises.
 */
export function initTracing(opts: { service: string; endpoint?: string; share: number; activeContext: boolean; edge?: boolean; logger?: Logger; flushMs?: number }): Tracing {
  propagation.setGlobalPropagator(new W3CTraceContextPropagator());
  if (opts.activeContext) context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  const resource = new Resource({ 'service.name': opts.service, 'service.namespace': 'flowgate' });
  if (!opts.endpoint) {
    return { tracer: trace.getTracer(opts.service), processor: DROP_SPANS, resource, enabled: false, shutdown: async () => undefined };
  }
  const exporter = new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/$/, '')}/v1/traces`, timeoutMillis: 5000 });
  const processor = new ErrorKeepingProcessor(exporter, { logger: opts.logger, flushMs: opts.flushMs });
  const provider = new BasicTracerProvider({ resource, sampler: new ShareSampler(opts.share, { edge: opts.edge }), spanProcessors: [processor] });
  trace.setGlobalTracerProvider(provider);
  return { tracer: provider.getTracer(opts.service), processor, resource, enabled: true, shutdown: () => provider.shutdown() };
}

/**
 * Ids from a pool of random bytes refilled 4 KiB at a time: one getrandom call per ~170 spans
 * instead of two per span (it showed in the gateway's profile).
 */
const pool = Buffer.alloc(4096);
let poolAt = pool.length;
function randomHex(bytes: number): string {
  if (poolAt + bytes > pool.length) {
    randomFillSync(pool);
    poolAt = 0;
  }
  poolAt += bytes;
  return pool.toString('hex', poolAt - bytes, poolAt);
}

/**
 * Starts a span under `parent`; when nothing records (export off and no incoming trace), the span
 * still gets a fresh trace id, so logs, audit records and the next hop share one.
 */
export function startSpan(tracer: Tracer, name: string, kind: SpanKind, parent: Context, attributes?: Attributes): Span {
  const span = tracer.startSpan(name, { kind, attributes }, parent);
  if (isSpanContextValid(span.spanContext())) return span;
  return trace.wrapSpanContext({ traceId: randomHex(16), spanId: randomHex(8), traceFlags: TraceFlags.NONE });
}

/** The context carried by headers (HTTP headers, NATS headers) in W3C `traceparent` form. */
export function extractContext<C>(carrier: C, getter: TextMapGetter<C>): Context {
  return propagation.extract(ROOT_CONTEXT, carrier, getter);
}

/** `traceparent` (and `tracestate`) for a span, to put on an outgoing message or request. */
export function traceHeaders(span: Span): Record<string, string> {
  const out: Record<string, string> = {};
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), out);
  return out;
}

/** Reads NATS message headers. */
export const natsHeaderGetter: TextMapGetter<{ get(k: string): string; keys(): string[] } | undefined> = {
  get: (h, key) => h?.get(key) || undefined,
  keys: (h) => h?.keys() ?? [],
};

/** Reads Node's lower-cased HTTP request headers. */
export const httpHeaderGetter: TextMapGetter<Record<string, string | string[] | undefined>> = {
  get: (h, key) => h[key.toLowerCase()],
  keys: (h) => Object.keys(h),
};

/** Marks a span failed (exported whatever the sampling) and ends it. */
export function endSpan(span: Span, err?: unknown): void {
  if (err !== undefined) {
    span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
    if (err instanceof Error) span.recordException(err);
  }
  span.end();
}
