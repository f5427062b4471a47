import { performance } from 'node:perf_hooks';
import type { Registry } from 'prom-client';
import { Agent, Pool, errors, type Dispatcher } from 'undici';
import { DEFAULT_MAX_RESPONSE_BYTES } from '../lib/config';
import { ApiError } from '../lib/errors';
import type { Logger } from '../lib/logger';
import { prom } from '../lib/metrics';
import type { UpstreamPolicy } from '../lib/upstream-policy';
import { policyConnector } from './upstream-connect';

/**
 * The gateway's upstream layer: keep-alive pools per target, load balancing (smooth weighted
 * round robin as in nginx, or least connections), active and passive health checks, and
 * retries that only ever resend a request the upstream cannot have seen.
 *
 * When every target of a service is unhealthy the request fails fast with 503
 * `no_healthy_target` (Kong's "failure to get a peer") instead of trying them anyway as nginx
 * does. nginx needs fail-open because open-source nginx has no active checks: nothing else
 * would ever bring a peer back. Here a target always has a way back (the active checker, or a
 * half-open trial request after the passive cooldown), so fail-open would only pile load
 * onto a fleet that is known to be failing and hide the outage behind slow timeouts.
 */

export type ActiveHealthcheck = {
  path: string; interval_ms: number; timeout_ms: number; healthy_successes: number; unhealthy_failures: number; expected_statuses?: number[];
};
export type PassiveHealthcheck = { unhealthy_failures: number; unhealthy_5xx: number; window_ms: number; cooldown_ms: number };

export type UpstreamService = {
  id: string; name: string; workspace: string;
  url?: string;
  targets: { url: string; weight: number }[];
  algorithm?: 'round-robin' | 'least-connections';
  connect_timeout_ms: number; read_timeout_ms: number; retries: number;
  healthchecks?: { active?: ActiveHealthcheck; passive?: PassiveHealthcheck };
};

export type UpstreamRequest = {
  method: string;
  /** Path and query, appended to the target URL's path. */
  path: string;
  headers: Record<string, string>;
  body?: Buffer | string;
  signal?: AbortSignal;
};

export type UpstreamResponse = { status: number; headers: Record<string, string | string[]>; body: Buffer; target: string };

export type TargetHealth = { url: string; healthy: boolean; active: number; failures: number };

export type UpstreamErrorCode = 'upstream_unavailable' | 'upstream_timeout' | 'no_healthy_target' | 'upstream_response_too_large' | 'upstream_not_allowed';

const ERRORS: Record<UpstreamErrorCode, { status: number; message: string }> = {
  upstream_unavailable: { status: 502, message: 'the upstream did not answer' },
  upstream_timeout: { status: 504, message: 'the upstream did not answer in time' },
  no_healthy_target: { status: 503, message: 'the service has no healthy target' },
  upstream_response_too_large: { status: 502, message: "the upstream's answer is larger than the gateway takes" },
  upstream_not_allowed: { status: 502, message: "the service's address is one the gateway may not call (see FLOWGATE_UPSTREAM_DENY)" },
};

// The answers the gateway holds are bounded (FLOWGATE_UPSTREAM_MAX_RESPONSE_BYTES): a bigger one is cut off, never buffered whole.
class ResponseTooLarge extends Error {
  override name = 'ResponseTooLarge';
}

/** A failed upstream exchange; an ApiError so the root error handler renders it (502/504/503). `target` stays server-side. */
export class UpstreamError extends ApiError {
  declare readonly code: UpstreamErrorCode;

  constructor(code: UpstreamErrorCode, readonly target?: string, cause?: unknown) {
    super(ERRORS[code].status, code, ERRORS[code].message);
    this.name = 'UpstreamError';
    if (cause !== undefined) this.cause = cause;
  }
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'trailers']);
const isHopByHop = (name: string) => HOP_BY_HOP.has(name) || name.startsWith('proxy-');
/** Request headers undici computes itself from the body; a stale one from the client would be refused or wrong. */
const COMPUTED_REQUEST_HEADERS = new Set(['content-length', 'expect']);

/** Errors raised before a byte of the request left: safe to send to another target. */
const CONNECT_ERRORS = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);
const TIMEOUT_ERRORS = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CONNECT_TIMEOUT']);
/** Below Node's 5 s server keepAliveTimeout, so the gateway closes an idle socket before the upstream does (undici also honours a Keep-Alive hint). */
const KEEP_ALIVE_MS = 4000;
const DEFAULT_CONNECTIONS = 64;
/** What the gateway gave a trigger rule's upstream before this module. */
const AD_HOC_TIMEOUT_MS = 5000;

type Target = {
  url: string;
  origin: string;
  basePath: string;
  weight: number;
  pool: Dispatcher;
  /** connect and read timeouts the pool was built with. */
  poolKey: string;
  healthy: boolean;
  inFlight: number;
  /** Smooth weighted round robin's running weight. */
  current: number;
  /** Passive: timestamps of connection failures/timeouts and of 5xx answers within the window. */
  failures: number[];
  errors5xx: number[];
  /** Passive half-open: when a trial request may go out (0 = none pending), and whether one is out. */
  retryAt: number;
  trial: boolean;
  activeSuccesses: number;
  activeFailures: number;
  checker?: NodeJS.Timeout;
  /** Bumped when the checker restarts, so a check still in flight from the old one does not reschedule. */
  checkGen: number;
  removed: boolean;
  labels: { tenant: string; service: string; target: string };
};

type ServiceState = { service: UpstreamService; targets: Target[]; checkKey: string; adHoc?: boolean };

type Failure = { kind: 'connect' | 'timeout' | 'failed' | 'caller' | 'too_large' | 'not_allowed'; err: unknown };

/**
 * One upstream exchange through undici's `dispatch`: the answer's body is collected into a
 * Buffer as it arrives (undici's `request()` would build a Readable stream and a promise per
 * exchange, which showed in the gateway's profile), and the wait for the response headers is
 * bounded by a native timer started when the request is written to the socket. undici's own
 * headers timer ticks every ~500 ms and fires up to 1 s late, which would double a 1 s read
 * timeout; its bodyTimeout still bounds idle body reads. A caller's signal aborts the exchange.
 */
class Exchange implements Dispatcher.DispatchHandlers {
  private timer?: NodeJS.Timeout;
  private status = 0;
  private headers: Record<string, string | string[]> = {};
  private chunks: Buffer[] = [];
  private size = 0;
  private onSignal?: () => void;
  private abort?: (err?: Error) => void;

  constructor(
    private readonly headersDeadlineMs: number,
    private readonly maxBytes: number,
    private readonly signal: AbortSignal | undefined,
    private readonly resolve: (res: { status: number; headers: Record<string, string | string[]>; body: Buffer }) => void,
    private readonly reject: (err: Error) => void,
  ) {}

  onConnect(abort: (err?: Error) => void): void {
    const signal = this.signal;
    if (signal?.aborted) return abort(signal.reason as Error);
    this.abort = abort;
    // undici may connect a request again (a reset idle socket): one listener per exchange, aborting the latest attempt.
    if (signal && !this.onSignal) {
      this.onSignal = () => this.abort?.(signal.reason as Error);
      signal.addEventListener('abort', this.onSignal, { once: true });
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => abort(new errors.HeadersTimeoutError()), this.headersDeadlineMs);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[] | string[] | null): boolean {
    // 1xx answers are informational: the final one is still to come.
    if (statusCode < 200) return true;
    clearTimeout(this.timer);
    this.status = statusCode;
    this.headers = responseHeaders(rawHeaders ?? []);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.size += chunk.length;
    if (this.size > this.maxBytes) {
      // Memory is every tenant's: the exchange ends here (the connection with it).
      this.chunks = [];
      this.abort?.(new ResponseTooLarge(`the answer passed ${this.maxBytes} bytes`));
      return false;
    }
    this.chunks.push(chunk);
    return true;
  }

  onComplete(): void {
    this.settle();
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    this.resolve({ status: this.status, headers: this.headers, body });
  }

  onError(err: Error): void {
    this.settle();
    this.reject(err);
  }

  private settle(): void {
    clearTimeout(this.timer);
    if (this.onSignal) this.signal!.removeEventListener('abort', this.onSignal);
  }
}

const poolKey = (s: UpstreamService) => `${s.connect_timeout_ms}/${s.read_timeout_ms}`;

function splitTarget(url: string): { origin: string; basePath: string } {
  const u = new URL(url);
  return { origin: u.origin, basePath: u.pathname.replace(/\/$/, '') };
}

function joinPath(basePath: string, path: string): string {
  return `${basePath}${path.startsWith('/') ? path : `/${path}`}`;
}

function targetsOf(service: UpstreamService): { url: string; weight: number }[] {
  return service.url ? [{ url: service.url, weight: 1 }] : service.targets;
}

/** The answer's headers, names lower-cased, repeated ones as arrays, less hop-by-hop ones and those its Connection header lists. */
export function responseHeaders(raw: (Buffer | string)[]): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  let connection: string | undefined;
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = raw[i]!.toString('latin1').toLowerCase();
    const value = raw[i + 1]!.toString('latin1');
    if (name === 'connection') connection = connection === undefined ? value : `${connection}, ${value}`;
    if (isHopByHop(name)) continue;
    const prev = out[name];
    out[name] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  if (connection !== undefined) {
    for (const listed of connection.toLowerCase().split(',')) delete out[listed.trim()];
  }
  return out;
}

function requestHeaders(headers: Record<string, string>): Record<string, string> {
  const listed = new Set((headers.connection ?? headers.Connection ?? '').toLowerCase().split(',').map((s) => s.trim()).filter(Boolean));
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    const name = k.toLowerCase();
    if (!isHopByHop(name) && !listed.has(name) && !COMPUTED_REQUEST_HEADERS.has(name)) out[name] = v;
  }
  return out;
}

/** Smooth weighted round robin (nginx): each pick adds every weight to its running total, takes the largest, and subtracts the sum from it. */
function smoothWeighted(candidates: Target[]): Target {
  let total = 0;
  let best = candidates[0]!;
  for (const t of candidates) {
    t.current += t.weight;
    total += t.weight;
    if (t.current > best.current) best = t;
  }
  best.current -= total;
  return best;
}

/** Fewest in-flight requests per unit of weight; ties broken by smooth weighted round robin. */
function leastConnections(candidates: Target[]): Target {
  let tied: Target[] = [];
  for (const t of candidates) {
    const first = tied[0];
    // a/wa < b/wb without division, as nginx does.
    const cmp = first ? t.inFlight * first.weight - first.inFlight * t.weight : -1;
    if (cmp < 0) tied = [t];
    else if (cmp === 0) tied.push(t);
  }
  return tied.length === 1 ? tied[0]! : smoothWeighted(tied);
}

function classify(err: unknown, signal: AbortSignal | undefined): Failure {
  if (signal?.aborted) return { kind: 'caller', err };
  if (err instanceof ResponseTooLarge) return { kind: 'too_large', err };
  const code = (err as { code?: string }).code ?? '';
  if (code === 'UND_ERR_INVALID_ARG') throw err;
  if (code === 'ERR_UPSTREAM_NOT_ALLOWED') return { kind: 'not_allowed', err };
  if (CONNECT_ERRORS.has(code)) return { kind: 'connect', err };
  if (TIMEOUT_ERRORS.has(code)) return { kind: 'timeout', err };
  return { kind: 'failed', err };
}

export class Upstreams {
  private readonly logger: Logger;
  private readonly connections: number;
  private readonly maxResponseBytes: number;
  private readonly services = new Map<string, ServiceState>();
  /** Health checks get their own connections: a saturated traffic pool must not fail a check. */
  private readonly checkAgent: Agent;
  /** Where connections may go (lib/upstream-policy.ts); none in unit tests of the balancing alone. */
  private readonly policy?: UpstreamPolicy;
  private readonly healthGauge?: prom.Gauge;
  private readonly duration?: prom.Histogram;
  private closed = false;

  constructor(opts: { logger: Logger; registry?: Registry; maxConnectionsPerTarget?: number; maxResponseBytes?: number; policy?: UpstreamPolicy }) {
    this.logger = opts.logger;
    this.policy = opts.policy;
    this.checkAgent = new Agent({ connections: 2, keepAliveTimeout: KEEP_ALIVE_MS, ...(opts.policy ? { connect: policyConnector(opts.policy) } : {}) });
    this.maxResponseBytes = opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.connections = opts.maxConnectionsPerTarget ?? DEFAULT_CONNECTIONS;
    const registry = opts.registry;
    if (registry) {
      // Several instances may share a registry (tests, a rebuilt app): reuse what is registered.
      this.healthGauge = (registry.getSingleMetric('upstream_target_health') as prom.Gauge | undefined)
        ?? new prom.Gauge({ name: 'upstream_target_health', help: '1 when the upstream target is healthy, 0 when taken out', labelNames: ['tenant', 'service', 'target'], registers: [registry] });
      this.duration = (registry.getSingleMetric('upstream_request_duration_seconds') as prom.Histogram | undefined)
        ?? new prom.Histogram({
          name: 'upstream_request_duration_seconds', help: 'Upstream exchange latency including retries', labelNames: ['tenant', 'service', 'status_class'],
          buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [registry],
        });
    }
  }

  /** Replaces the known services: keeps pools and health of targets that stay, (re)starts checkers, closes what went away. */
  sync(services: UpstreamService[]): void {
    const seen = new Set<string>();
    for (const service of services) {
      seen.add(service.id);
      this.upsert(service);
    }
    for (const [id, state] of this.services) {
      if (seen.has(id) || state.adHoc) continue;
      this.services.delete(id);
      for (const t of state.targets) this.retire(t);
    }
  }

  /**
   * A service for a URL that is not a configured service (a trigger rule's upstream_url): one
   * target, no health checks, no retries. Kept across sync() so its pool stays warm.
   */
  adHoc(origin: string, opts: { workspace?: string; timeoutMs?: number } = {}): UpstreamService {
    const id = `adhoc:${opts.workspace ?? ''}:${origin}:${opts.timeoutMs ?? AD_HOC_TIMEOUT_MS}`;
    const known = this.services.get(id);
    if (known) return known.service;
    const timeout = opts.timeoutMs ?? AD_HOC_TIMEOUT_MS;
    const service: UpstreamService = {
      id, name: new URL(origin).host, workspace: opts.workspace ?? '', url: origin, targets: [],
      connect_timeout_ms: timeout, read_timeout_ms: timeout, retries: 0,
    };
    this.upsert(service).adHoc = true;
    return service;
  }

  /** Sends one request through a healthy target; see the module comment for failure handling. */
  async request(service: UpstreamService, req: UpstreamRequest): Promise<UpstreamResponse> {
    if (this.closed) throw new UpstreamError('upstream_unavailable');
    const state = this.services.get(service.id) ?? this.upsert(service);
    const started = performance.now();
    const tried = new Set<Target>();
    let last: Failure | undefined;
    let lastTarget: Target | undefined;
    let statusClass = 'error';
    try {
      for (let attempt = 0; attempt <= service.retries; attempt++) {
        const target = this.pick(state, tried);
        if (!target) break;
        tried.add(target);
        lastTarget = target;
        const result = await this.send(state, target, req);
        if ('status' in result) {
          statusClass = `${Math.floor(result.status / 100)}xx`;
          return result;
        }
        last = result;
        // Anything but a failed or refused connect may have reached the upstream: never send it twice.
        if (result.kind !== 'connect' && result.kind !== 'not_allowed') break;
      }
      if (!last) throw new UpstreamError('no_healthy_target');
      if (last.kind === 'caller') {
        const reason = req.signal?.reason as Error | undefined;
        if (reason?.name === 'TimeoutError') {
          statusClass = 'timeout';
          throw new UpstreamError('upstream_timeout', lastTarget?.url, reason);
        }
        throw reason ?? last.err;
      }
      if (last.kind === 'too_large') throw new UpstreamError('upstream_response_too_large', lastTarget?.url, last.err);
      if (last.kind === 'not_allowed') throw new UpstreamError('upstream_not_allowed', lastTarget?.url, last.err);
      const timedOut = last.kind === 'timeout' || (last.err as { code?: string }).code === 'UND_ERR_CONNECT_TIMEOUT';
      if (timedOut) statusClass = 'timeout';
      // The caller logs the request; the cause (ECONNREFUSED, …) rides on the error.
      this.logger.debug({ err: last.err, service: service.name, tenant: service.workspace, target: lastTarget?.url, attempts: tried.size }, 'upstream request failed');
      throw new UpstreamError(timedOut ? 'upstream_timeout' : 'upstream_unavailable', lastTarget?.url, last.err);
    } finally {
      this.duration?.observe({ tenant: service.workspace, service: service.name, status_class: statusClass }, (performance.now() - started) / 1000);
    }
  }

  /** Health per target, by service id. */
  health(): Record<string, TargetHealth[]> {
    const out: Record<string, TargetHealth[]> = {};
    for (const [id, state] of this.services) {
      out[id] = state.targets.map((t) => ({ url: t.url, healthy: t.healthy, active: t.inFlight, failures: t.failures.length + t.errors5xx.length + t.activeFailures }));
    }
    return out;
  }

  async close(): Promise<void> {
    this.closed = true;
    const targets = [...this.services.values()].flatMap((s) => s.targets);
    this.services.clear();
    for (const t of targets) this.retire(t);
    await Promise.all([...targets.map((t) => t.pool.close().catch(() => undefined)), this.checkAgent.close()]);
  }

  private upsert(service: UpstreamService): ServiceState {
    const previous = this.services.get(service.id);
    const byUrl = new Map((previous?.targets ?? []).map((t) => [t.url, t]));
    const labels = (url: string) => ({ tenant: service.workspace, service: service.name, target: url });
    const targets: Target[] = [];
    for (const { url, weight } of targetsOf(service)) {
      let t = byUrl.get(url);
      byUrl.delete(url);
      if (!t) {
        t = this.createTarget(url, weight, service, labels(url));
      } else {
        t.weight = weight;
        if (t.poolKey !== poolKey(service)) {
          const old = t.pool;
          t.pool = this.createPool(t.origin, service);
          t.poolKey = poolKey(service);
          void old.close().catch(() => undefined);
        }
        const next = labels(url);
        if (next.tenant !== t.labels.tenant || next.service !== t.labels.service) {
          this.healthGauge?.remove(t.labels);
          t.labels = next;
        }
      }
      this.healthGauge?.set(t.labels, t.healthy ? 1 : 0);
      targets.push(t);
    }
    for (const t of byUrl.values()) this.retire(t);

    const checkKey = JSON.stringify(service.healthchecks?.active ?? null);
    const state: ServiceState = { service, targets, checkKey };
    this.services.set(service.id, state);
    const restart = previous?.checkKey !== checkKey;
    for (const t of targets) {
      if (restart || !t.checker) {
        clearTimeout(t.checker);
        t.checker = undefined;
        t.checkGen++;
        this.scheduleCheck(service.id, t);
      }
      // Without an active checker, something must be able to bring a target back.
      if (!t.healthy && !service.healthchecks?.active) {
        const passive = service.healthchecks?.passive;
        if (!passive) this.markHealthy(state, t, 'health checks removed');
        else if (!t.retryAt) t.retryAt = Date.now() + passive.cooldown_ms;
      }
    }
    return state;
  }

  private createPool(origin: string, service: UpstreamService): Dispatcher {
    const pool = new Pool(origin, {
      connections: this.connections,
      keepAliveTimeout: KEEP_ALIVE_MS,
      connect: this.policy ? policyConnector(this.policy, { timeout: service.connect_timeout_ms }) : { timeout: service.connect_timeout_ms },
      headersTimeout: service.read_timeout_ms,
      bodyTimeout: service.read_timeout_ms,
    });
    return pool;
  }

  private createTarget(url: string, weight: number, service: UpstreamService, labels: Target['labels']): Target {
    const { origin, basePath } = splitTarget(url);
    return {
      url, origin, basePath, weight, pool: this.createPool(origin, service), poolKey: poolKey(service),
      healthy: true, inFlight: 0, current: 0, failures: [], errors5xx: [], retryAt: 0, trial: false,
      activeSuccesses: 0, activeFailures: 0, checkGen: 0, removed: false, labels,
    };
  }

  private retire(t: Target): void {
    if (t.removed) return;
    t.removed = true;
    clearTimeout(t.checker);
    t.checker = undefined;
    t.checkGen++;
    this.healthGauge?.remove(t.labels);
    // close() lets in-flight requests finish before the sockets go.
    if (!this.closed) void t.pool.close().catch(() => undefined);
  }

  private pick(state: ServiceState, tried: Set<Target>): Target | undefined {
    const now = Date.now();
    const available = (t: Target) => !t.removed && (t.healthy || (t.retryAt > 0 && now >= t.retryAt && !t.trial));
    let candidates = state.targets.filter((t) => available(t) && !tried.has(t));
    // A retry goes to another target when there is one, else back to the same (a refused connect may be transient).
    if (candidates.length === 0 && tried.size > 0) candidates = state.targets.filter(available);
    if (candidates.length === 0) return undefined;
    const target = state.service.algorithm === 'least-connections' ? leastConnections(candidates) : smoothWeighted(candidates);
    if (!target.healthy) target.trial = true;
    return target;
  }

  private async send(state: ServiceState, target: Target, req: UpstreamRequest): Promise<UpstreamResponse | Failure> {
    target.inFlight++;
    const trial = target.trial;
    try {
      const res = await new Promise<{ status: number; headers: Record<string, string | string[]>; body: Buffer }>((resolve, reject) => {
        target.pool.dispatch(
          { method: req.method as Dispatcher.HttpMethod, path: joinPath(target.basePath, req.path), headers: requestHeaders(req.headers), body: req.body },
          new Exchange(state.service.read_timeout_ms, this.maxResponseBytes, req.signal, resolve, reject),
        );
      });
      const response: UpstreamResponse = { ...res, target: target.url };
      if (res.status >= 500) this.passiveFailure(state, target, '5xx', `status ${res.status}`);
      else if (trial) this.markHealthy(state, target, 'trial request succeeded');
      return response;
    } catch (err) {
      const failure = classify(err, req.signal);
      // An answer too large is the route's content, and an address refused is the service's, not the target's health.
      if (failure.kind !== 'caller' && failure.kind !== 'too_large' && failure.kind !== 'not_allowed') this.passiveFailure(state, target, 'failure', failure.kind === 'timeout' ? 'timeout' : (err as { code?: string }).code ?? 'error');
      return failure;
    } finally {
      target.inFlight--;
      if (trial) target.trial = false;
    }
  }

  private passiveFailure(state: ServiceState, t: Target, kind: 'failure' | '5xx', reason: string): void {
    const passive = state.service.healthchecks?.passive;
    if (!passive || t.removed) return;
    const now = Date.now();
    if (!t.healthy) {
      // A failed half-open trial (or a straggler): stay out for another cooldown.
      if (!state.service.healthchecks?.active) t.retryAt = now + passive.cooldown_ms;
      return;
    }
    const list = kind === '5xx' ? t.errors5xx : t.failures;
    const threshold = kind === '5xx' ? passive.unhealthy_5xx : passive.unhealthy_failures;
    if (threshold <= 0) return;
    list.push(now);
    while (list.length > 0 && list[0]! <= now - passive.window_ms) list.shift();
    if (list.length >= threshold) this.markUnhealthy(state, t, `passive: ${list.length} ${kind === '5xx' ? '5xx answers' : 'failures'} within ${passive.window_ms}ms, last ${reason}`);
  }

  private markUnhealthy(state: ServiceState, t: Target, reason: string): void {
    if (!t.healthy) return;
    t.healthy = false;
    t.activeSuccesses = 0;
    t.failures = [];
    t.errors5xx = [];
    const passive = state.service.healthchecks?.passive;
    t.retryAt = !state.service.healthchecks?.active && passive ? Date.now() + passive.cooldown_ms : 0;
    this.healthGauge?.set(t.labels, 0);
    this.logger.warn({ service: state.service.name, tenant: state.service.workspace, target: t.url, reason }, 'upstream target unhealthy, taken out');
  }

  private markHealthy(state: ServiceState, t: Target, reason: string): void {
    if (t.healthy) return;
    t.healthy = true;
    t.retryAt = 0;
    t.activeFailures = 0;
    t.failures = [];
    t.errors5xx = [];
    this.healthGauge?.set(t.labels, 1);
    this.logger.info({ service: state.service.name, tenant: state.service.workspace, target: t.url, reason }, 'upstream target healthy, put back');
  }

  private scheduleCheck(serviceId: string, t: Target): void {
    const active = this.services.get(serviceId)?.service.healthchecks?.active;
    if (!active || t.removed || this.closed) return;
    const gen = t.checkGen;
    t.checker = setTimeout(() => void this.check(serviceId, t, active, gen), active.interval_ms);
    t.checker.unref();
  }

  private async check(serviceId: string, t: Target, active: ActiveHealthcheck, gen: number): Promise<void> {
    let ok = false;
    try {
      const res = await this.checkAgent.request({
        origin: t.origin, path: joinPath(t.basePath, active.path), method: 'GET',
        signal: AbortSignal.timeout(active.timeout_ms), headersTimeout: active.timeout_ms, bodyTimeout: active.timeout_ms,
      });
      await res.body.dump();
      ok = active.expected_statuses?.length ? active.expected_statuses.includes(res.statusCode) : res.statusCode >= 200 && res.statusCode < 400;
    } catch {
      ok = false;
    }
    const state = this.services.get(serviceId);
    // Removed, closed, or the checker restarted (new config) while this check ran.
    if (!state || t.removed || this.closed || gen !== t.checkGen) return;
    if (ok) {
      t.activeFailures = 0;
      t.activeSuccesses++;
      if (!t.healthy && t.activeSuccesses >= Math.max(1, active.healthy_successes)) this.markHealthy(state, t, `active: ${t.activeSuccesses} successful checks`);
    } else {
      t.activeSuccesses = 0;
      t.activeFailures++;
      if (t.healthy && t.activeFailures >= Math.max(1, active.unhealthy_failures)) this.markUnhealthy(state, t, `active: ${t.activeFailures} failed checks`);
    }
    this.scheduleCheck(serviceId, t);
  }
}
