import zlib from 'node:zlib';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, validationError } from '../lib/errors';
import { renderInput, templateHeaders } from '../lib/trigger-rules';
import { findWorkflowType } from '../lib/workflow-registry';
import { aggregate } from './aggregate';
import type { GatewayContext } from './app';
import { BodyFormatError, jsonToXml, xmlToJson } from './body-formats';
import type { Route, Service } from './config-store';
import { compileRewrite } from '../lib/path-rewrite';
import { requestTarget, type RequestTarget } from '../lib/request-target';
import { traceHeaders } from '../lib/tracing';
import { assertBodyWithinLimit, rawJsonOf } from './raw-body';
import { maskJson, maskJsonText, maskText, type PiiKind } from './pii';
import { createTriggering, type Accepted } from './triggering';
import { SENSITIVE_RESPONSE_HEADERS } from './security-headers';
import { UpstreamError, type UpstreamResponse } from './upstreams';
import { transformRequestHeaders, withQuery } from './header-plugins';

/**
 * Everything outside /api and /outbound: the workspace's configured routes and route-bound
 * trigger rules. The pipeline's hooks (pipeline.ts) have already authenticated, matched,
 * authorized and rate-limited the request; this is stages 7 to 9: transform the request,
 * start the route's workflow if it has one, then answer from the upstream service, the
 * aggregate of several, or the route's static response.
 */

/** Never forwarded: hop-by-hop headers (RFC 9110 §7.6.1) and the client's own credential. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'proxy-authorization', 'te', 'trailer', 'host', 'content-length', 'authorization', 'x-api-key']);
/**
 * The gateway decodes a request body the client encoded (gzip, deflate, br: @fastify/compress,
 * which refuses other encodings) and forwards it plain: its Content-Encoding no longer holds.
 */
const REQUEST_ONLY = new Set(['content-encoding']);
/**
 * What the gateway itself tells the upstream about the request (who, which tenant, from where):
 * the client's own values of these are not passed on. The gateway is the edge: a client's
 * X-Forwarded-Host or X-Real-IP would otherwise poison links and addresses the upstream builds.
 */
const GATEWAY_ASSERTED = ['x-request-id', 'x-tenant-id', 'x-user-id', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-server', 'x-real-ip', 'forwarded'];
/** Client headers that do not reach the upstream as the client sent them (X-Forwarded-For is appended to). */
const NOT_COPIED = new Set([...HOP_BY_HOP, ...REQUEST_ONLY, ...GATEWAY_ASSERTED.filter((h) => h !== 'x-forwarded-for')]);
const ASSERTED = new Set([...GATEWAY_ASSERTED, 'authorization', 'x-api-key']);
/** Copied from the client: not hop-by-hop or asserted, nor a name some servers (CGI, WSGI, Rack) read as an asserted one once `_` becomes `-` (`X_User_ID`). */
const copied = (name: string) => !NOT_COPIED.has(name) && !(name.includes('_') && ASSERTED.has(name.replace(/_/g, '-')));

/**
 * A value for X-User-ID: the name as it is when it is printable ASCII, else percent-encoded
 * UTF-8 (a header value cannot carry `Łukasz` or a line break).
 */
export function userIdHeader(name: string): string {
  return /^[\x20-\x7e]*$/.test(name) ? name : encodeURIComponent(name);
}

/**
 * An upstream's Location (or Content-Location) that points at the target itself, made to point
 * at the gateway, as nginx's `proxy_redirect default` does: the target's origin dropped, its base
 * path taken off, and with strip_path the route's prefix put back. A location elsewhere passes
 * as it is; with a rewritten path (which cannot be undone) only the origin is dropped.
 */
export function publicLocation(location: string, target: string, pattern: string, stripPath: boolean, rewritten: boolean): string {
  let loc: URL;
  let base: URL;
  try {
    base = new URL(target);
    loc = new URL(location, base);
  } catch {
    return location;
  }
  if (loc.origin !== base.origin) return location;
  const tail = `${loc.search}${loc.hash}`;
  const basePath = base.pathname.replace(/\/$/, '');
  if (rewritten || (basePath && loc.pathname !== basePath && !loc.pathname.startsWith(`${basePath}/`))) return `${loc.pathname}${tail}`;
  const rest = loc.pathname.slice(basePath.length) || '/';
  if (!stripPath) return `${rest}${tail}`;
  const prefix = staticPrefix(pattern);
  return `${prefix}${rest === '/' && prefix ? '' : rest}${tail}`;
}

/** A route pattern's static part, without a trailing slash: `/v1/orders/*` → `/v1/orders`. */
const staticPrefix = (pattern: string) => pattern.split(/[:*]/)[0]!.replace(/\/$/, '');

/** `/v1/orders/*` with strip_path drops `/v1/orders` (the pattern's static prefix) from the path. */
export function upstreamPath(pattern: string, path: string, strip: boolean): string {
  if (!strip) return path;
  const prefix = staticPrefix(pattern);
  const rest = path.startsWith(prefix) ? path.slice(prefix.length) : path;
  return rest.startsWith('/') ? rest : `/${rest}`;
}

function requestBody(req: FastifyRequest): string | Buffer | undefined {
  if (req.method === 'GET' || req.method === 'HEAD' || req.body === undefined || req.body === null) return undefined;
  if (Buffer.isBuffer(req.body) || typeof req.body === 'string') return req.body;
  // A JSON body goes upstream as it came (app.ts keeps its bytes): re-serialized, numbers past
  // 2^53 would change and a signature over the body would no longer match.
  return rawJsonOf(req) ?? JSON.stringify(req.body);
}


const rewrites = new WeakMap<object, (path: string) => string>();
function rewritten(rule: { pattern: string; replacement: string }, path: string): string {
  let fn = rewrites.get(rule);
  if (!fn) {
    fn = compileRewrite(rule);
    rewrites.set(rule, fn);
  }
  return fn(path);
}

/** The body converted for the upstream (request) or the client (response); 400 names the body when it does not parse. */
function convert(body: Buffer | string, how: 'json-to-xml' | 'xml-to-json', where: 'body' | 'upstream'): { body: string; type: string } {
  try {
    if (how === 'xml-to-json') return { body: JSON.stringify(xmlToJson(String(body))), type: 'application/json' };
    return { body: jsonToXml(JSON.parse(String(body))), type: 'application/xml' };
  } catch (err) {
    if (where === 'upstream') throw new ApiError(502, 'upstream_bad_body', `the upstream's body could not be converted (${how})`);
    const code: string = err instanceof BodyFormatError ? err.code : 'invalid_json';
    throw new ApiError(400, code, `the body could not be converted (${how})`, [{ field: 'body', message: (err as Error).message }]);
  }
}

/** An upstream body in `encoding` (gzip, deflate, br), decoded; 502 when it cannot be. */
function decoded(body: Buffer, encoding: string): Buffer {
  try {
    if (encoding === 'gzip' || encoding === 'x-gzip') return zlib.gunzipSync(body, { maxOutputLength: DECODED_MAX });
    if (encoding === 'deflate') return zlib.inflateSync(body, { maxOutputLength: DECODED_MAX });
    if (encoding === 'br') return zlib.brotliDecompressSync(body, { maxOutputLength: DECODED_MAX });
  } catch { /* answered below */ }
  throw new ApiError(502, 'upstream_undecodable', `the upstream's ${encoding} body could not be decoded for the route's response transformations`);
}
const DECODED_MAX = 16 * 1024 * 1024;

export function registerConfiguredRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  const { accept } = createTriggering(ctx);

  /**
   * The headers going upstream. Synchronous unless a credential reference (`{vault:…}`) among the
   * route's or the plugin's added values must be read from OpenBao first (gateway/secret-refs.ts).
   */
  function outboundHeaders(req: FastifyRequest, tenant: string, add?: Record<string, string>, remove?: string[]): Record<string, string> | Promise<Record<string, string>> {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && copied(k)) headers[k] = v;
    // Headers the client's Connection names are hop-by-hop too (RFC 9110 7.6.1).
    const connection = req.headers.connection;
    if (connection && connection !== 'keep-alive' && connection !== 'close') for (const name of connection.split(',')) delete headers[name.trim().toLowerCase()];
    // The upstream's spans continue the trace under the gateway's span (the caller's traceparent,
    // when there was one, is this span's parent).
    const span = req.flowgate.span;
    if (span) Object.assign(headers, traceHeaders(span));
    // Where the client came in (a route's add_headers may still set these itself).
    if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
    // One of the two schemes, whatever a trusted proxy's X-Forwarded-Proto says.
    headers['x-forwarded-proto'] = req.protocol === 'https' ? 'https' : 'http';
    // The route's own edits, then the plugin's; what the gateway asserts below still wins.
    transformRequestHeaders(headers, { add_headers: add, remove_headers: remove });
    transformRequestHeaders(headers, req.flowgate.plugins['request-transformer']);
    const correlation = req.flowgate.correlation;
    if (correlation) headers[correlation.name] = correlation.value;
    const p = req.flowgate.principal;
    headers['x-request-id'] = req.id;
    headers['x-tenant-id'] = tenant;
    if (p) headers['x-user-id'] = userIdHeader(p.username);
    // The chain as it came, and the address the gateway saw (the peer, a trusted proxy's too).
    const chain = [req.headers['x-forwarded-for'], req.raw.socket.remoteAddress].filter(Boolean).join(', ');
    if (chain) headers['x-forwarded-for'] = chain;
    const credentials = ctx.secretRefs.resolveHeaders(tenant, headers, [add, req.flowgate.plugins['request-transformer']?.add_headers]);
    return credentials ? credentials.then(() => headers) : headers;
  }

  /** The upstream's answer to the client: its status and headers (less hop-by-hop and removed ones), the body as transformed. */
  function answer(req: FastifyRequest, reply: FastifyReply, res: UpstreamResponse, route?: Route, accepted?: Accepted) {
    const t = route?.transformations?.response;
    const drop = t?.remove_headers?.length ? new Set(t.remove_headers.map((h) => h.toLowerCase())) : undefined;
    reply.code(res.status);
    // Upstream headers are the only ones that can name the software and hosts behind the gateway:
    // the sensitive ones stop here (SENSITIVE_RESPONSE_HEADERS), with the hop-by-hop ones.
    for (const k in res.headers) if (!HOP_BY_HOP.has(k) && !SENSITIVE_RESPONSE_HEADERS.has(k) && !drop?.has(k)) reply.header(k, res.headers[k]!);
    for (const [k, v] of Object.entries(t?.add_headers ?? {})) reply.header(k, v);
    if (accepted) reply.headers({ 'X-Workflow-Execution-ID': accepted.headers['X-Workflow-Execution-ID'], 'X-Workflow-Status-Endpoint': accepted.headers['X-Workflow-Status-Endpoint'] });
    let body: Buffer | string = res.body;
    const encoding = res.headers['content-encoding'];
    if ((t?.body || t?.mask_pii) && encoding !== undefined && encoding !== 'identity') {
      // Asked for identity and encoded anyway: a body that must be masked is not passed on unread.
      body = decoded(res.body, String(encoding));
      reply.removeHeader('content-encoding');
      reply.removeHeader('content-length');
    }
    if (t?.body || t?.mask_pii) {
      // A conversion applies to a successful answer with a body (not a 304, a 204, or an error page
      // in the upstream's own format, which pass as they are).
      if (t.body && res.status >= 200 && res.status < 300 && body.length > 0) {
        const c = convert(body, t.body, 'upstream');
        body = c.body;
        reply.header('content-type', c.type);
      }
      if (t.mask_pii) body = maskReturned(body, String(reply.getHeader('content-type') ?? ''), t.mask_pii);
    }
    return reply.send(body);
  }

  function upstreamFailure(req: FastifyRequest, reply: FastifyReply, err: unknown, accepted?: Accepted) {
    if (!(err instanceof UpstreamError)) throw err;
    req.log.warn({ err: err.message, code: err.code }, 'upstream unavailable');
    req.flowgate.errorCode = err.code;
    if (accepted) reply.headers(accepted.headers);
    // A trigger is durable already: the client still gets its execution id.
    return reply.code(err.statusCode).send({
      error: { code: err.code, message: err.message },
      correlation_id: req.id, ...(accepted ? { execution_id: accepted.executionId } : {}),
    });
  }

  async function proxyRoute(req: FastifyRequest, reply: FastifyReply, tenant: string, route: Route, service: Service, pattern: string, url: RequestTarget) {
    const t = route.transformations?.request;
    let path = upstreamPath(pattern, url.pathname, route.strip_path);
    if (t?.rewrite_path) path = rewritten(t.rewrite_path, path);
    const outbound = outboundHeaders(req, tenant, t?.add_headers, t?.remove_headers);
    const headers = outbound instanceof Promise ? await outbound : outbound;
    // A body the gateway must read (converted, or PII masked) comes unencoded, whatever the client
    // accepts: the client's Accept-Encoding must not switch the masking off. The gateway compresses
    // the answer for the client itself.
    const reads = route.transformations?.response;
    if (reads?.body || reads?.mask_pii) {
      headers['accept-encoding'] = 'identity';
      // Whole bodies only: masking fragments one by one would let a value cut across two pass.
      delete headers.range;
      delete headers['if-range'];
    }
    let body = requestBody(req);
    if (t?.body && body !== undefined) {
      const c = convert(body, t.body, 'body');
      body = c.body;
      headers['content-type'] = c.type;
    }
    try {
      const res = await ctx.upstreams.request(service, { method: req.method, path: withQuery(`${path}${url.search}`, req.flowgate.plugins['request-transformer']?.add_querystring), headers, body });
      req.flowgate.upstream = `${service.name} ${res.target}`;
      // The client is told where things are at the gateway, never the upstream's own address.
      for (const h of ['location', 'content-location']) {
        const v = res.headers[h];
        if (typeof v === 'string') res.headers[h] = publicLocation(v, res.target, pattern, route.strip_path, t?.rewrite_path !== undefined);
      }
      return answer(req, reply, res, route);
    } catch (err) {
      req.flowgate.upstream = service.name;
      return upstreamFailure(req, reply, err);
    }
  }

  async function aggregateRoute(req: FastifyRequest, reply: FastifyReply, tenant: string, route: Route, services: Map<string, Service>, params: Record<string, string | undefined>) {
    const spec = route.aggregate!;
    const headers = await outboundHeaders(req, tenant, route.transformations?.request?.add_headers, route.transformations?.request?.remove_headers);
    headers['accept-encoding'] = 'identity'; // the backends' JSON is parsed and merged here
    const out = await aggregate(ctx.upstreams, services, spec.backends, { headers, params, timeoutMs: spec.timeout_ms, body: requestBody(req) });
    req.flowgate.upstream = spec.backends.map((b) => b.service).join(',');
    if (!out.complete) req.log.warn({ failed: out.failed }, 'aggregate answered with partial results');
    reply.header('X-Flowgate-Completed', String(out.complete));
    const mask = route.transformations?.response?.mask_pii;
    return reply.code(200).send(mask ? maskJson(out.body, mask) : out.body);
  }

  function staticRoute(reply: FastifyReply, route: Route) {
    const s = route.static_response!;
    reply.code(s.status).headers(s.headers);
    return s.body === undefined ? reply.send() : reply.send(s.body);
  }

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    const principal = req.flowgate.principal ?? await ctx.auth.authenticate(req);
    const match = req.flowgate.match;
    const url = req.flowgate.target ?? requestTarget(req.url);
    if (!match) throw new ApiError(404, 'route_not_found', `no route for ${req.method} ${url.pathname}`);
    assertBodyWithinLimit(req);
    reply.header('X-Flowgate-Config-Version', String(ctx.configStore.versionOf(principal.tenant) ?? 0));
    if (match.kind === 'route') {
      const { route } = match;
      if (route.static_response) return staticRoute(reply, route);
      if (route.aggregate) return aggregateRoute(req, reply, principal.tenant, route, match.services, match.params);
      return proxyRoute(req, reply, principal.tenant, route, match.service!, match.pattern, url);
    }

    const { rule, params } = match;
    const def = findWorkflowType(rule.workflow_type);
    if (!def) throw new ApiError(503, 'workflow_type_unavailable', `the route's workflow type ${rule.workflow_type} is not registered`);
    const input = renderInput(rule.input_template, {
      body: req.body,
      path: params,
      query: Object.fromEntries(new URLSearchParams(url.search)),
      headers: templateHeaders(req.headers),
      auth: { tenant: principal.tenant, consumer_id: principal.consumerId },
    });
    const parsed = def.input.safeParse(input);
    if (!parsed.success) throw validationError(parsed.error, 'body');
    // The upstream's headers before the trigger is accepted: a credential that cannot be read
    // (503 credential_unavailable) fails the request with nothing accepted.
    const headers = rule.upstream_url ? await outboundHeaders(req, principal.tenant) : undefined;
    const accepted = await accept(req, def, principal, parsed.data, 'route', rule.callback_url);
    if (!rule.upstream_url || !headers) return reply.code(202).headers(accepted.headers).send(accepted.body);
    const target = new URL(rule.upstream_url);
    const service = ctx.upstreams.adHoc(target.origin);
    headers['x-workflow-execution-id'] = accepted.executionId;
    try {
      const res = await ctx.upstreams.request(service, { method: req.method, path: `${target.pathname.replace(/\/$/, '')}${url.pathname}${url.search}`, headers, body: requestBody(req) });
      req.flowgate.upstream = target.origin;
      return answer(req, reply, res, undefined, accepted);
    } catch (err) {
      return upstreamFailure(req, reply, err, accepted);
    }
  };
  app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url: '/*', handler });
}

function maskReturned(body: Buffer | string, contentType: string, kinds: PiiKind[]): string {
  const text = String(body);
  if (/json/i.test(contentType)) {
    try {
      return maskJsonText(text, kinds);
    } catch {
      return maskText(text, kinds);
    }
  }
  return maskText(text, kinds);
}
