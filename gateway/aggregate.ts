import type { UpstreamService, Upstreams } from './upstreams';

/**
 * KrakenD-style aggregation: one route fans out to several services in parallel under one
 * deadline, and their JSON answers merge into one object. A backend that fails, times out,
 * answers non-2xx or non-JSON is left out and the result is flagged incomplete (the route
 * answers `X-Flowgate-Completed: false`, as KrakenD does with `X-KrakenD-Completed`).
 *
 * Each backend's answer is shaped in KrakenD's order: a non-object answer (an array or a
 * scalar) is wrapped as `{ collection: … }` (KrakenD's `is_collection`), then `allow` keeps
 * top-level fields, `mapping` renames them, and `group` nests the result under a key.
 * Without a group, objects merge shallowly in backend order: a later backend's field wins.
 */

export type AggregateBackend = {
  service: string;
  path: string;
  method?: 'GET' | 'POST';
  group?: string;
  allow?: string[];
  mapping?: Record<string, string>;
};

export type AggregatePart = { backend: AggregateBackend; ok: boolean; body?: unknown };

export type AggregateRequest = {
  headers: Record<string, string>;
  /** Substituted into backend paths written `/users/{id}` or `/users/:id`. */
  params?: Record<string, string | undefined>;
  /** Sent to POST backends. */
  body?: Buffer | string;
  /** One deadline shared by all backends. */
  timeoutMs: number;
  signal?: AbortSignal;
};

export type AggregateResult = { body: Record<string, unknown>; complete: boolean; failed: string[] };

const PARAM = /\{([A-Za-z_][\w-]*)\}|(?<=\/):([A-Za-z_]\w*)/g;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Own-property write: a `__proto__` key from upstream JSON stays data instead of replacing the prototype. */
function put(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function shape(backend: AggregateBackend, body: unknown): Record<string, unknown> {
  const source = isObject(body) ? body : { collection: body };
  const allow = backend.allow ? new Set(backend.allow) : undefined;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(source)) {
    if (allow && !allow.has(k)) continue;
    put(out, backend.mapping && Object.hasOwn(backend.mapping, k) ? backend.mapping[k]! : k, v);
  }
  if (!backend.group) return out;
  const grouped: Record<string, unknown> = {};
  put(grouped, backend.group, out);
  return grouped;
}

/** Merges the backends' answers (in backend order); `complete` is false when any part failed. */
export function mergeAggregate(parts: AggregatePart[]): { body: Record<string, unknown>; complete: boolean } {
  const body: Record<string, unknown> = {};
  let complete = true;
  for (const part of parts) {
    if (!part.ok) {
      complete = false;
      continue;
    }
    for (const [k, v] of Object.entries(shape(part.backend, part.body))) put(body, k, v);
  }
  return { body, complete };
}

/** `/users/{id}` with `{id: '7'}` → `/users/7`; undefined when a parameter is missing. */
export function backendPath(template: string, params: Record<string, string | undefined> = {}): string | undefined {
  let missing = false;
  const path = template.replace(PARAM, (_m, braced: string | undefined, colon: string | undefined) => {
    const value = params[(braced ?? colon)!];
    if (value === undefined) missing = true;
    return encodeURIComponent(value ?? '');
  });
  return missing ? undefined : path;
}

/** A stable name for a backend in `failed` (the path template, never the caller's values). */
const label = (b: AggregateBackend) => `${b.service} ${b.path}`;

async function call(upstreams: Upstreams, services: Map<string, UpstreamService>, backend: AggregateBackend, req: AggregateRequest, signal: AbortSignal): Promise<unknown> {
  const service = services.get(backend.service);
  if (!service) throw new Error(`unknown service ${backend.service}`);
  const path = backendPath(backend.path, req.params);
  if (path === undefined) throw new Error(`missing path parameter in ${backend.path}`);
  const method = backend.method ?? 'GET';
  const headers = { ...req.headers, accept: 'application/json' };
  const res = await upstreams.request(service, { method, path, headers, body: method === 'POST' ? req.body : undefined, signal });
  if (res.status < 200 || res.status > 299) throw new Error(`status ${res.status}`);
  return JSON.parse(res.body.toString('utf8')) as unknown;
}

/**
 * `p`, or a rejection as soon as `signal` aborts: the deadline holds even while a backend is still
 * connecting (the upstream client only looks at the signal once its request is on a socket).
 */
function settledBy<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => { signal.removeEventListener('abort', onAbort); resolve(v); }, (e: unknown) => { signal.removeEventListener('abort', onAbort); reject(e as Error); });
  });
}

/** Calls every backend in parallel under one deadline and merges what answered in time. */
export async function aggregate(upstreams: Upstreams, services: Map<string, UpstreamService>, backends: AggregateBackend[], req: AggregateRequest): Promise<AggregateResult> {
  const deadline = AbortSignal.timeout(req.timeoutMs);
  const signal = req.signal ? AbortSignal.any([deadline, req.signal]) : deadline;
  const settled = await Promise.allSettled(backends.map((b) => settledBy(call(upstreams, services, b, req, signal), signal)));
  const parts = settled.map((s, i): AggregatePart => ({ backend: backends[i]!, ok: s.status === 'fulfilled', body: s.status === 'fulfilled' ? s.value : undefined }));
  const failed = parts.filter((p) => !p.ok).map((p) => label(p.backend));
  return { ...mergeAggregate(parts), failed };
}
