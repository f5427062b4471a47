import { randomUUID } from 'node:crypto';
import { isSpanContextValid, SpanKind, trace } from '@opentelemetry/api';
import { TOPICS } from '../kafka';
import type { KafkaBatcher } from '../kafka-batcher';
import type { Logger } from '../logger';
import { endSpan, traceHeaders } from '../tracing';
import { prom } from '../metrics';
import type { Registry } from 'prom-client';
import { BreakerOpenError, type BreakerRegistry, type BreakerState } from './breakers';
import type { CredentialCache } from './credentials';
import { servicePath, serviceUrl, type ThirdPartyService } from './services';

export type ThirdPartyRequest = {
  tenant: string;
  service: string;
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path under the service's base URL, with its query string. */
  path: string;
  body?: unknown;
  correlationId: string;
  idempotencyKey?: string;
  /** Cancels the call (the activity's cancellation signal). */
  signal?: AbortSignal;
};

/** An answer below 500: the caller decides what a 4xx means for it. */
export type ThirdPartyResponse = { status: number; body: unknown; attempts: number; latencyMs: number };

/** The record of one call, on Kafka `third-party.interactions` (seed 000's fields). */
/** Spans go to the process's tracer provider (a no-op until lib/tracing.ts sets one up). */
const tracer = () => trace.getTracer('flowgate-third-party');

export type Interaction = {
  timestamp: string;
  tenant_id: string;
  service: string;
  method: string;
  endpoint: string;
  request_id: string;
  /** The trace the call is part of (absent when the caller had none). */
  trace_id?: string;
  attempt: number;
  status_code: number | null;
  latency_ms: number;
  request_size: number;
  response_size: number;
  error_code: string | null;
  circuit_breaker_state: string;
};

export class UnknownServiceError extends Error {
  constructor(readonly service: string) {
    super(`no third party named ${service}`);
    this.name = 'UnknownServiceError';
  }
}

/** The service failed (5xx, timeout, network) on every in-call attempt. */
export class ThirdPartyUnavailable extends Error {
  constructor(readonly service: string, readonly errorCode: string, readonly status: number | null, readonly attempts: number) {
    super(`${service} unavailable after ${attempts} attempt(s): ${errorCode}${status ? ` (${status})` : ''}`);
    this.name = 'ThirdPartyUnavailable';
  }
}

/** Thrown by a single attempt for what the breaker counts as a failure. */
class AttemptFailed extends Error {
  constructor(readonly errorCode: string, readonly status: number | null, readonly responseSize = 0) {
    super(errorCode);
  }
}

/** Methods a server may receive twice to the same effect (RFC 9110, 9.2.2), or any with an Idempotency-Key. */
const retriable = (req: ThirdPartyRequest) => req.method === 'GET' || req.method === 'PUT' || req.method === 'DELETE' || req.idempotencyKey !== undefined;

const BREAKER_STATE_NAME: Record<BreakerState, string> = { closed: 'CLOSED', open: 'OPEN', half_open: 'HALF_OPEN' };
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason as Error); }, { once: true });
  });

/**
 * The one way activities call a third party: the credential from Vault (cached, re-read once on
 * a 401), the service's breaker around every attempt, in-call retries on 5xx and timeouts (never
 * on 4xx; a POST or PATCH only with an Idempotency-Key), the contract headers, and a Kafka record
 * per attempt. No credential reaches a log,
 * a record or an error message.
 */
export class ThirdPartyClient {
  private readonly services: Map<string, ThirdPartyService>;
  private readonly calls?: prom.Counter<'service' | 'outcome'>;
  private readonly duration?: prom.Histogram<'service'>;

  constructor(
    services: ThirdPartyService[],
    private readonly deps: { credentials: CredentialCache; breakers: BreakerRegistry; recorder?: KafkaBatcher; logger?: Logger; registry?: Registry },
  ) {
    this.services = new Map(services.map((s) => [s.name, s]));
    if (deps.registry) {
      this.calls = new prom.Counter({ name: 'third_party_calls_total', help: 'Calls to third parties by outcome', labelNames: ['service', 'outcome'], registers: [deps.registry] });
      this.duration = new prom.Histogram({ name: 'third_party_call_duration_seconds', help: 'Latency of one attempt', labelNames: ['service'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], registers: [deps.registry] });
    }
  }

  service(name: string): ThirdPartyService | undefined {
    return this.services.get(name);
  }

  async call(req: ThirdPartyRequest): Promise<ThirdPartyResponse> {
    const svc = this.services.get(req.service);
    if (!svc) throw new UnknownServiceError(req.service);
    serviceUrl(svc, req.path); // PathOutsideService before any attempt: the credential goes nowhere else
    const body = req.body === undefined ? undefined : JSON.stringify(req.body);
    const records: Promise<unknown>[] = [];
    try {
      return await this.attempts(svc, req, body, records);
    } finally {
      // Every call is on Kafka before the caller goes on, unless Kafka is slow or down (then it is queued).
      await this.settle(records);
    }
  }

  private async attempts(svc: ThirdPartyService, req: ThirdPartyRequest, body: string | undefined, records: Promise<unknown>[]): Promise<ThirdPartyResponse> {
    const t0 = performance.now();
    let refreshed = false;
    let attempt = 0;
    for (let retry = 0; ; ) {
      attempt += 1;
      try {
        // Read outside the breaker: Vault being away is not the third party failing.
        const { value: key } = await this.deps.credentials.get(svc.name);
        const outcome = await this.deps.breakers.fire(svc.name, () => this.attempt(svc, req, key, body, attempt, records));
        // Cancelled by the caller: not a failure of the third party, so it must not open the breaker.
        // (opossum has no neutral outcome: it counts as a success, and a cancelled half-open probe
        // closes the breaker; the next failures open it again.)
        if ('canceled' in outcome) throw outcome.canceled;
        const res = outcome;
        if (res.status === 401 && !refreshed) {
          // The key may have been rotated since it was cached: read it again, once.
          refreshed = true;
          await this.deps.credentials.refresh(svc.name);
          continue;
        }
        this.calls?.inc({ service: svc.name, outcome: res.status < 400 ? 'success' : 'client_error' });
        return { ...res, attempts: attempt, latencyMs: performance.now() - t0 };
      } catch (err) {
        if (err instanceof BreakerOpenError) {
          records.push(this.record(svc, req, attempt, { status: null, latencyMs: 0, requestSize: 0, responseSize: 0, errorCode: 'circuit_open' }));
          this.calls?.inc({ service: svc.name, outcome: 'breaker_open' });
          throw err;
        }
        if (!(err instanceof AttemptFailed)) throw err;
        // A POST or PATCH that failed may have taken effect (a 5xx after the charge, a timeout):
        // sent again only with an Idempotency-Key, which makes the repeat the same request.
        const delay = retriable(req) ? svc.retry_delays_ms[retry++] : undefined;
        if (delay === undefined || req.signal?.aborted) {
          this.calls?.inc({ service: svc.name, outcome: 'unavailable' });
          throw new ThirdPartyUnavailable(svc.name, err.errorCode, err.status, attempt);
        }
        await sleep(delay, req.signal);
      }
    }
  }

  /**
   * One HTTP exchange; rejects (a breaker failure) on 5xx, timeout or a network error, and
   * resolves with `canceled` when the caller's signal ended it.
   */
  private async attempt(svc: ThirdPartyService, req: ThirdPartyRequest, key: string, body: string | undefined, attempt: number, records: Promise<unknown>[]): Promise<{ status: number; body: unknown } | { canceled: unknown }> {
    const headers: Record<string, string> = {
      accept: 'application/json',
      'x-correlation-id': req.correlationId,
      'x-tenant-id': req.tenant,
      'x-request-timeout': `${svc.timeout_ms / 1000}s`,
      ...authHeader(svc, key),
    };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (req.idempotencyKey) headers['idempotency-key'] = req.idempotencyKey;
    // A client span per attempt, child of the activity's; the third party gets its traceparent.
    const span = tracer().startSpan(`${req.method} ${svc.name}`, {
      kind: SpanKind.CLIENT, attributes: { 'http.request.method': req.method, 'server.address': svc.name, 'flowgate.attempt': attempt, 'flowgate.tenant': req.tenant },
    });
    Object.assign(headers, traceHeaders(span));
    const traceId = isSpanContextValid(span.spanContext()) ? span.spanContext().traceId : undefined;
    const timeout = AbortSignal.timeout(svc.timeout_ms);
    const signal = req.signal ? AbortSignal.any([timeout, req.signal]) : timeout;
    const t0 = performance.now();
    const requestSize = body ? Buffer.byteLength(body) : 0;
    const done = (status: number | null, responseSize: number, errorCode: string | null) => {
      const latencyMs = performance.now() - t0;
      this.duration?.observe({ service: svc.name }, latencyMs / 1000);
      records.push(this.record(svc, req, attempt, { status, latencyMs, requestSize, responseSize, errorCode, traceId }));
      this.deps.logger?.debug({ service: svc.name, attempt, status, error_code: errorCode, latency_ms: Math.round(latencyMs), correlation_id: req.correlationId, trace_id: traceId }, 'third party call');
      if (status !== null) span.setAttribute('http.response.status_code', status);
      endSpan(span, errorCode !== null && (status === null || status >= 500) ? errorCode : undefined);
    };
    let res: Response;
    let text: string;
    try {
      res = await fetch(serviceUrl(svc, req.path), {
        method: req.method, headers, body, signal, redirect: 'manual',
      });
      text = await res.text();
    } catch (err) {
      const code = timeout.aborted ? 'timeout' : req.signal?.aborted ? 'canceled' : 'network_error';
      done(null, 0, code);
      if (code === 'canceled') return { canceled: err };
      throw new AttemptFailed(code, null);
    }
    const size = Buffer.byteLength(text);
    if (res.status >= 500) {
      done(res.status, size, `http_${res.status}`);
      throw new AttemptFailed(`http_${res.status}`, res.status, size);
    }
    done(res.status, size, res.status >= 400 ? `http_${res.status}` : null);
    return { status: res.status, body: parseBody(text) };
  }

  private record(svc: ThirdPartyService, req: ThirdPartyRequest, attempt: number, r: { status: number | null; latencyMs: number; requestSize: number; responseSize: number; errorCode: string | null; traceId?: string }): Promise<unknown> {
    if (!this.deps.recorder) return Promise.resolve();
    const interaction: Interaction = {
      timestamp: new Date().toISOString(),
      tenant_id: req.tenant,
      service: svc.name,
      method: req.method,
      // The path called under the service's base (call() refused any other before the first attempt).
      endpoint: servicePath(svc, req.path),
      request_id: req.correlationId,
      trace_id: r.traceId,
      attempt,
      status_code: r.status,
      latency_ms: Math.round(r.latencyMs * 1000) / 1000,
      request_size: r.requestSize,
      response_size: r.responseSize,
      error_code: r.errorCode,
      circuit_breaker_state: BREAKER_STATE_NAME[this.deps.breakers.state(svc.name)],
    };
    return this.deps.recorder.send(TOPICS.thirdParty, `${req.tenant}:${svc.name}`, interaction, { 'interaction-id': randomUUID() });
  }

  private async settle(records: Promise<unknown>[], ms = 2000): Promise<void> {
    if (!records.length) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(records), new Promise((r) => { timer = setTimeout(r, ms); })]);
    clearTimeout(timer);
  }
}

function authHeader(svc: ThirdPartyService, key: string): Record<string, string> {
  switch (svc.auth.scheme) {
    case 'bearer': return { authorization: `Bearer ${key}` };
    case 'basic': return { authorization: `Basic ${Buffer.from(`${key}:`).toString('base64')}` };
    case 'header': return { [svc.auth.header.toLowerCase()]: key };
  }
}

function parseBody(text: string): unknown {
  if (!text) return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}
