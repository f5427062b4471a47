import { z } from 'zod';

/**
 * The third parties activities may call, parsed once from FLOWGATE_THIRD_PARTIES (JSON).
 * Defaults are seed 000's: 5 s timeout, in-call retries after 100/200/400 ms, a breaker that
 * opens above 50 % failures over 30 s and probes again after 60 s.
 */
export const breakerSettings = z
  .object({
    error_threshold_percentage: z.number().min(1).max(100).default(50),
    rolling_window_ms: z.number().int().min(1000).default(30_000),
    /** Calls needed in the window before the rate counts, so one early failure does not open it. */
    volume_threshold: z.number().int().min(1).default(5),
    reset_timeout_ms: z.number().int().min(100).default(60_000),
  })
  .strict();

export const thirdPartyService = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and dashes'),
    base_url: z.url({ protocol: /^https?$/ }),
    /** How the credential is sent: `Authorization: Bearer`, HTTP basic (key as user), or a named header. */
    auth: z
      .discriminatedUnion('scheme', [
        z.object({ scheme: z.literal('bearer') }).strict(),
        z.object({ scheme: z.literal('basic') }).strict(),
        z.object({ scheme: z.literal('header'), header: z.string().min(1) }).strict(),
      ])
      .default({ scheme: 'bearer' }),
    timeout_ms: z.number().int().min(50).max(120_000).default(5000),
    retry_delays_ms: z.array(z.number().int().min(0).max(60_000)).max(10).default([100, 200, 400]),
    breaker: breakerSettings.default(breakerSettings.parse({})),
    /**
     * What `POST /outbound/3rdparty/{service}/{path}` may call with the platform's credential:
     * a method and a path (`:name` matches one segment, a final `*` the rest). None by default: the
     * credential is the platform's, and a path that lists or changes every tenant's data at the
     * third party must not be open to any API key. Activities are not limited by this list.
     */
    outbound: z.array(z.object({
      method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
      path: z.string().regex(/^\/[A-Za-z0-9._~:@/*-]*$/, 'a path starting with /'),
    }).strict()).max(100).default([]),
  })
  .strict();

export type ThirdPartyService = z.infer<typeof thirdPartyService>;

/** A path that would leave its service's base URL (another host, or above the base path). */
export class PathOutsideService extends Error {
  constructor(readonly service: string, readonly path: string) {
    super(`the path leaves ${service}'s base URL`);
    this.name = 'PathOutsideService';
  }
}

/**
 * `path` (with its query) under the service's base URL, whatever slashes either has. The path is
 * appended as text, never resolved as a reference: `http://elsewhere/x` or `//elsewhere/x` would
 * otherwise replace the host and take the service's credential with them. What still leaves the
 * base (`../` in any spelling, which the URL parser folds) is refused with PathOutsideService.
 */
export function serviceUrl(svc: ThirdPartyService, path: string): URL {
  const base = new URL(svc.base_url.endsWith('/') ? svc.base_url : `${svc.base_url}/`);
  base.search = '';
  base.hash = '';
  const url = new URL(`${base.href}${path.replace(/^\/+/, '')}`);
  if (url.origin !== base.origin || !url.pathname.startsWith(base.pathname)) throw new PathOutsideService(svc.name, path);
  return url;
}

/** The path `serviceUrl` calls, under the service's base path (what an outbound list is matched against). */
export function servicePath(svc: ThirdPartyService, path: string): string {
  const url = serviceUrl(svc, path);
  const base = new URL(svc.base_url.endsWith('/') ? svc.base_url : `${svc.base_url}/`).pathname;
  return `/${url.pathname.slice(base.length)}`;
}

/** True when the service's outbound list allows `method` on `path` (resolved by servicePath; no query). */
export function outboundAllows(svc: ThirdPartyService, method: string, path: string): boolean {
  // Exact segments: `/v1/charges/` (a trailing slash, as `/v1/charges/x/..` resolves) is another path.
  const segments = (p: string) => p.split('?')[0]!.split('/').slice(1);
  const asked = segments(path);
  return svc.outbound.some((e) => {
    if (e.method !== method) return false;
    const pattern = segments(e.path);
    for (let i = 0; i < pattern.length; i++) {
      if (pattern[i] === '*' && i === pattern.length - 1) return asked.length >= pattern.length;
      if (i >= asked.length || (!pattern[i]!.startsWith(':') && pattern[i] !== asked[i])) return false;
    }
    return asked.length === pattern.length;
  });
}

export const thirdPartyServices = z
  .array(thirdPartyService)
  .refine((list) => new Set(list.map((s) => s.name)).size === list.length, 'service names must be unique');

/** The local stack's sandbox payment provider: what FLOWGATE_THIRD_PARTIES defaults to. */
export const PAYMENTS_SERVICE = 'payments-sandbox';
export const DEFAULT_THIRD_PARTIES = JSON.stringify([{ name: PAYMENTS_SERVICE, base_url: 'http://127.0.0.1:8300', outbound: [{ method: 'POST', path: '/v1/charges' }] }]);
