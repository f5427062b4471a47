/** Response hardening headers the gateway adds to, and strips from, every answer. */

export type SecurityHeadersConfig = {
  hsts_max_age_seconds: number;
  hsts_include_subdomains: boolean;
  content_security_policy: string;
  frame_options: 'DENY' | 'SAMEORIGIN';
  referrer_policy: string;
  permissions_policy?: string;
};

/** helmet's defaults narrowed for an API that serves no documents: nothing may load, frame or be framed. */
export const DEFAULT_SECURITY_HEADERS: SecurityHeadersConfig = {
  hsts_max_age_seconds: 365 * 24 * 60 * 60,
  hsts_include_subdomains: true,
  content_security_policy: "default-src 'none'; frame-ancestors 'none'",
  frame_options: 'DENY',
  referrer_policy: 'no-referrer',
};

/**
 * The headers to set on a response. HSTS is sent only over TLS: RFC 6797 §7.2 has hosts not
 * send it over plain HTTP, and browsers ignore it there. `max-age=0` is sent as configured,
 * since it is how a host withdraws an earlier policy.
 */
export function securityHeaders(cfg: SecurityHeadersConfig, tls: boolean): Record<string, string> {
  const headers: Record<string, string> = {
    'x-content-type-options': 'nosniff',
    'x-frame-options': cfg.frame_options,
    'referrer-policy': cfg.referrer_policy,
    'cross-origin-resource-policy': 'same-origin',
    'cross-origin-opener-policy': 'same-origin',
    'x-permitted-cross-domain-policies': 'none',
    // The legacy XSS auditor causes more harm than it prevents; helmet turns it off the same way.
    'x-xss-protection': '0',
  };
  if (cfg.content_security_policy) headers['content-security-policy'] = cfg.content_security_policy;
  if (cfg.permissions_policy) headers['permissions-policy'] = cfg.permissions_policy;
  if (tls) {
    const maxAge = Math.max(0, Math.floor(cfg.hsts_max_age_seconds));
    headers['strict-transport-security'] = `max-age=${maxAge}${cfg.hsts_include_subdomains ? '; includeSubDomains' : ''}`;
  }
  return headers;
}

/** Per plugin config object (replaced, never changed, when the config changes): its headers, built once. */
const computed = new WeakMap<object, { tls?: Record<string, string>; plain?: Record<string, string> }>();

/** securityHeaders for a workspace's `security-headers` plugin (over the defaults), or the defaults alone; cached. */
export function securityHeadersFor(plugin: Partial<SecurityHeadersConfig> | undefined, tls: boolean): Record<string, string> {
  const owner = plugin ?? DEFAULT_SECURITY_HEADERS;
  const key = tls ? 'tls' : 'plain';
  const entry = computed.get(owner) ?? {};
  if (!entry[key]) {
    entry[key] = securityHeaders({ ...DEFAULT_SECURITY_HEADERS, ...plugin }, tls);
    computed.set(owner, entry);
  }
  return entry[key];
}

/**
 * Upstream response headers removed before an answer reaches the client: they name the
 * software, version or internal hosts behind the gateway. `via` is among them: RFC 9110 §7.6.3
 * lets a gateway leave it off responses, and an upstream's Via lists internal hop names.
 */
export const SENSITIVE_RESPONSE_HEADERS: ReadonlySet<string> = new Set([
  'server',
  'x-powered-by',
  'x-aspnet-version',
  'x-aspnetmvc-version',
  'x-runtime',
  'x-generator',
  'x-sourcefiles',
  'x-debug-token',
  'x-debug-token-link',
  'x-envoy-upstream-service-time',
  'x-varnish',
  'via',
]);

const CACHEABLE_METHODS = new Set(['GET', 'HEAD']);
export const NEVER_STORED = new Set([401, 403, 429]);

/**
 * Cache headers for a proxied answer that carries no Cache-Control of its own (the caller
 * checks that). Without `cfg` nothing is added; with it, `directive` (and `Vary`) go on GET/HEAD
 * answers with 2xx, 301 or 404, and an authenticated answer also varies on the credential's
 * headers. 401, 403 and 429 always get `no-store`, `cfg` or not, and the caller sets it even over
 * an upstream's own header: they depend on who asked and when.
 */
export function cacheControl(
  cfg: { directive?: string; vary?: string[] } | undefined,
  method: string,
  status: number,
  authenticated = false,
): Record<string, string> {
  if (NEVER_STORED.has(status)) return { 'cache-control': 'no-store' };
  if (!cfg || !CACHEABLE_METHODS.has(method.toUpperCase())) return {};
  if (!((status >= 200 && status < 300) || status === 301 || status === 404)) return {};
  const headers: Record<string, string> = {};
  if (cfg.directive) headers['cache-control'] = cfg.directive;
  // An answer to a credential is the credential's: a shared cache (a CDN) that stores it must key
  // it on the credential, or it would hand one tenant's answer to another caller.
  const vary = authenticated && cfg.directive ? varyWith(cfg.vary, CREDENTIAL_VARY) : varyWith(cfg.vary, []);
  if (vary) headers.vary = vary;
  return headers;
}

/** What an authenticated answer varies on: the headers that carry the credential and the tenant. */
const CREDENTIAL_VARY = ['Authorization', 'X-API-Key', 'X-Tenant-ID'];

/**
 * The Vary for an authenticated answer whose Cache-Control the upstream set: a shared cache may
 * store it (not `private`, not `no-store`), so it must key it on the credential too. Undefined
 * when nothing needs to change.
 */
export function upstreamCacheVary(cacheControlValue: string, vary: string | undefined): string | undefined {
  if (/(^|[\s,])(private|no-store)([\s,=]|$)/i.test(cacheControlValue)) return undefined;
  const merged = varyWith(vary, CREDENTIAL_VARY);
  return merged === varyWith(vary, []) ? undefined : merged;
}

/**
 * A Vary value (absent, a string or a list of them) with `names` added where missing (names
 * compare case-insensitively; nothing is added beside `*`).
 */
export function varyWith(current: unknown, names: readonly string[]): string {
  const list = (Array.isArray(current) ? current.join(',') : current === undefined ? '' : String(current)).split(',').map((v) => v.trim()).filter(Boolean);
  if (list.includes('*')) return list.join(', ');
  const named = new Set(list.map((v) => v.toLowerCase()));
  for (const n of names) if (!named.has(n.toLowerCase())) list.push(n);
  return list.join(', ');
}
