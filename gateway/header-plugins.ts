import type { IncomingHttpHeaders } from 'node:http';
import type { PluginConfig } from './workspace-view';
import { isCallerRequestId } from '../lib/request-id';

/**
 * The plugins that only edit headers (and the query), as Kong's of the same names do:
 * `cors`, `request-transformer`, `response-transformer`, `correlation-id`. Pure functions;
 * pipeline.ts and configured-routes.ts apply them.
 */

/** A CORS preflight: OPTIONS with an Origin and Access-Control-Request-Method (it carries no credential). */
export const isPreflight = (method: string, headers: IncomingHttpHeaders): boolean =>
  method === 'OPTIONS' && typeof headers.origin === 'string' && typeof headers['access-control-request-method'] === 'string';

const allowsOrigin = (cfg: PluginConfig<'cors'>, origin: string) => cfg.origins.includes('*') || cfg.origins.includes(origin);

/** The origin to answer with: `*` only when any origin may and no credentials are shared (the Fetch standard refuses `*` with them). */
const allowOrigin = (cfg: PluginConfig<'cors'>, origin: string) => (cfg.origins.includes('*') && !cfg.credentials ? '*' : origin);

/**
 * The answer to a preflight: the allowed origin, methods and headers, or undefined when the
 * origin or the method is not allowed (the browser then refuses the request itself).
 */
export function corsPreflight(cfg: PluginConfig<'cors'>, origin: string, method: string, requestHeaders: string | undefined): Record<string, string> | undefined {
  if (!allowsOrigin(cfg, origin) || !(cfg.methods as string[]).includes(method.toUpperCase())) return undefined;
  const asked = (requestHeaders ?? '').split(',').map((h) => h.trim().toLowerCase()).filter(Boolean);
  const allowed = new Set(cfg.headers.map((h) => h.toLowerCase()));
  // Empty `headers`: whatever the browser asks for (Kong's default); else only those listed.
  if (cfg.headers.length && asked.some((h) => !allowed.has(h))) return undefined;
  return {
    'access-control-allow-origin': allowOrigin(cfg, origin),
    'access-control-allow-methods': cfg.methods.join(', '),
    ...(asked.length ? { 'access-control-allow-headers': cfg.headers.length ? cfg.headers.join(', ') : asked.join(', ') } : {}),
    ...(cfg.credentials ? { 'access-control-allow-credentials': 'true' } : {}),
    'access-control-max-age': String(cfg.max_age_seconds),
    vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
  };
}

/** The CORS headers of an ordinary answer to `origin`, or undefined when the origin is not allowed. */
export function corsHeaders(cfg: PluginConfig<'cors'>, origin: string | undefined): Record<string, string> | undefined {
  if (origin === undefined || !allowsOrigin(cfg, origin)) return undefined;
  return {
    'access-control-allow-origin': allowOrigin(cfg, origin),
    ...(cfg.credentials ? { 'access-control-allow-credentials': 'true' } : {}),
    ...(cfg.exposed_headers.length ? { 'access-control-expose-headers': cfg.exposed_headers.join(', ') } : {}),
  };
}

/** Header edits (a route's own, or `request-transformer`'s) on the headers going upstream (lower-case names): removals, then additions. */
export function transformRequestHeaders(headers: Record<string, string>, edits: { add_headers?: Record<string, string>; remove_headers?: string[] } | undefined): void {
  if (!edits) return;
  for (const h of edits.remove_headers ?? []) delete headers[h.toLowerCase()];
  for (const [k, v] of Object.entries(edits.add_headers ?? {})) headers[k.toLowerCase()] = v;
}

/** `request-transformer`'s add_querystring on a path and query (`/a?b=1`): its parameters set, replacing any of the same name. */
export function withQuery(pathAndQuery: string, add: Record<string, string> | undefined): string {
  if (!add || Object.keys(add).length === 0) return pathAndQuery;
  const at = pathAndQuery.indexOf('?');
  const q = new URLSearchParams(at < 0 ? '' : pathAndQuery.slice(at + 1));
  for (const [k, v] of Object.entries(add)) q.set(k, v);
  return `${at < 0 ? pathAndQuery : pathAndQuery.slice(0, at)}?${q.toString()}`;
}

/**
 * `correlation-id`: the id the request goes upstream with under `header_name` (and comes back
 * with, when `echo_downstream`): the client's own under that name, else the request id.
 */
export function correlationOf(cfg: PluginConfig<'correlation-id'>, headers: IncomingHttpHeaders, requestId: string): { name: string; value: string; echo: boolean } {
  const name = cfg.header_name.toLowerCase();
  const given = headers[name];
  return { name, value: typeof given === 'string' && isCallerRequestId(given) ? given : requestId, echo: cfg.echo_downstream };
}
