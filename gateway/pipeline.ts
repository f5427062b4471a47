import { isIP } from 'node:net';
import { SpanKind, type Span } from '@opentelemetry/api';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Registry } from 'prom-client';
import { ApiError } from '../lib/errors';
import { requestTarget, type RequestTarget } from '../lib/request-target';
import { prom } from '../lib/metrics';
import { endSpan, extractContext, httpHeaderGetter, startSpan } from '../lib/tracing';
import type { Principal } from './auth';
import { authorize, ipAllowed } from './authz';
import type { GatewayContext } from './app';
import type { Match } from './config-store';
import { maskBody, maskPath } from './pii';
import { rateLimitHeaders, type LimitDecision } from './rate-limit';
import { cacheControl, NEVER_STORED, securityHeadersFor, upstreamCacheVary, varyWith } from './security-headers';
import { correlationOf, corsHeaders, corsPreflight, isPreflight } from './header-plugins';
import { requestTenantClaims, resolveTenant } from './tenant';
import type { PluginSet } from './workspace-view';

/**
 * The request and response pipelines (DESIGN.md; issue #7) as Fastify hooks around every
 * route but /health:
 *
 *   onRequest   correlation id (genReqId) → tenant + authentication → route match →
 *               ip restriction, authorization (RBAC/ABAC), size limit → rate limits
 *   handler     transformation → trigger check → upstream, aggregate or static answer
 *   onSend      security headers, cache headers (an upstream's sensitive headers never get
 *               this far: configured-routes.ts drops them as it copies the upstream's answer)
 *   onResponse  metrics and the request's audit entry (Kafka) and api_calls row
 *
 * What one stage learns is kept on the request (`req.flowgate`) for the later ones.
 */

export type RequestState = {
  principal?: Principal;
  match?: Match;
  plugins: PluginSet;
  /** Set by the stage that refused the request, for the audit entry. */
  errorCode?: string;
  /** The client's address, once worked out (clientAddress). */
  clientIp?: string;
  rateLimited?: boolean;
  /** Set once its metrics and audit entry are written (an answer, or the client gone first). */
  recorded?: boolean;
  upstream?: string;
  /** A body the audit may keep (masked) when the answer is an error. */
  responseBody?: Buffer | string;
  /** The request's path and query as the gateway matches and forwards them. */
  target?: RequestTarget;
  /** The request's server span: its trace id is in the logs, the audit entry, X-Trace-ID and the next hop. */
  span?: Span;
  /** The `correlation-id` plugin's header: sent upstream, and back to the client when it echoes. */
  correlation?: { name: string; value: string; echo: boolean };
};

declare module 'fastify' {
  interface FastifyRequest {
    flowgate: RequestState;
  }
}

/** Public: no credential, no tenant (the workflow types' schemas are documentation). */
const SKIP = new Set(['/health', '/api/workflow-types']);
const AUDIT_BODY_LIMIT = 4096;
const NO_TRANSFORM = /\bno-transform\b/i;

export function pipelineMetrics(registry: Registry) {
  return {
    requests: new prom.Counter({ name: 'http_requests_total', help: 'Gateway requests by route pattern, status and tenant', labelNames: ['method', 'path', 'status', 'tenant'], registers: [registry] }),
    authLatency: new prom.Histogram({ name: 'auth_token_validation_duration_seconds', help: 'Credential validation time', labelNames: ['method'], buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25], registers: [registry] }),
    refusals: new prom.Counter({ name: 'gateway_refusals_total', help: 'Requests refused by a pipeline stage', labelNames: ['stage', 'tenant'], registers: [registry] }),
  };
}

/** The status a request is recorded with when its client closed the connection before the answer (nginx's). */
const CLIENT_CLOSED = 499;

/** The route pattern for metrics and audit: bounded, never a raw path. */
function routeLabel(req: FastifyRequest): string {
  const m = req.flowgate?.match;
  if (m?.kind === 'route') return m.pattern;
  if (m?.kind === 'trigger') return m.rule.route_path ?? 'trigger';
  const url = req.routeOptions.url;
  return url && url !== '/*' ? url : 'unmatched';
}

/**
 * The client's address as the pipeline judges it: the peer's, or behind a trusted proxy
 * (FLOWGATE_TRUSTED_PROXIES) X-Forwarded-For's last untrusted entry, when that is an address at
 * all. A proxy's entry that is not one (`unknown`, an address with a port) is no address to
 * match rules against: the peer's stands instead, so a deny rule cannot be slipped past.
 */
function clientAddress(req: FastifyRequest): string {
  // Worked out once per request: behind trusted proxies each read of req.ip parses X-Forwarded-For.
  const state = req.flowgate as RequestState | null;
  if (state?.clientIp !== undefined) return state.clientIp;
  const ip = req.ip;
  const address = isIP(ip) ? ip : req.raw.socket.remoteAddress ?? '';
  if (state) state.clientIp = address;
  return address;
}

export function registerPipeline(app: FastifyInstance, ctx: GatewayContext): void {
  app.decorateRequest('flowgate', null as unknown as RequestState);

  // Stages 2 to 6. A callback hook whose common case (a key the served config knows, a rate
  // limit decided from a lease) runs without a promise; a stage that must wait (a JWT's keys,
  // PostgreSQL, Redis) continues when its answer comes.
  app.addHook('onRequest', (req, reply, done) => {
    req.flowgate = { plugins: {} };
    if (SKIP.has(req.routeOptions.url ?? '')) return done();
    const state = req.flowgate;
    // A client that goes away before its answer ends no response, so Fastify runs no onResponse:
    // the request is recorded when its connection closes, as 499 (a trigger it sent may be running).
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) responded(req, reply, CLIENT_CLOSED);
    });
    state.span = startSpan(ctx.tracer, `${req.method} gateway`, SpanKind.SERVER, extractContext(req.headers, httpHeaderGetter));
    if (isPreflight(req.method, req.headers) && answeredPreflight(req, reply)) return;
    const refuse = (err: unknown) => {
      state.errorCode = (err as ApiError).code;
      ctx.metrics.pipeline.refusals.inc({ stage: stageOf(err as ApiError), tenant: state.principal?.tenant ?? 'unknown' });
      done(err as Error);
    };
    const limited = (decisions: LimitDecision[]) => {
      try {
        rateLimited(req, reply, decisions);
      } catch (err) {
        return refuse(err);
      }
      done();
    };
    const authenticated = (principal: Principal) => {
      let checked: LimitDecision[] | Promise<LimitDecision[]>;
      try {
        checked = admitted(req, principal);
      } catch (err) {
        return refuse(err);
      }
      if (Array.isArray(checked)) limited(checked);
      else checked.then(limited, refuse);
    };
    let principal: Principal | Promise<Principal>;
    try {
      principal = ctx.auth.authenticate(req);
    } catch (err) {
      return refuse(err);
    }
    if (principal instanceof Promise) principal.then(authenticated, refuse);
    else authenticated(principal);
  });

  /**
   * A CORS preflight carries no credential (nor custom headers, in a browser): it is answered
   * here, before authentication, when its tenant is known (X-Tenant-ID or the host's subdomain,
   * agreeing) and the route it asks about, or the workspace, has a `cors` plugin. Any other goes
   * on through the pipeline, which refuses it without a credential.
   */
  function answeredPreflight(req: FastifyRequest, reply: FastifyReply): boolean {
    // The tenant as authentication reads it from the request itself: none, or sources that disagree, answer nothing here.
    let tenant: string;
    try {
      tenant = resolveTenant(requestTenantClaims(req.headers, req.raw.socket, ctx.config.FLOWGATE_TENANT_HOST_SUFFIX).claims);
    } catch {
      return false;
    }
    const view = ctx.configStore.view(tenant);
    if (!view) return false;
    let target: RequestTarget;
    try {
      target = requestTarget(req.url);
    } catch {
      return false;
    }
    const method = String(req.headers['access-control-request-method']).toUpperCase();
    const match = ctx.configStore.find(tenant, method, req.headers.host, target.pathname);
    const route = match?.kind === 'route' ? match.route : undefined;
    const plugins = view.pluginsFor(route ? { name: route.name, service: route.service } : undefined, undefined);
    if (!plugins.cors) return false;
    const state = req.flowgate;
    state.plugins = plugins;
    state.match = match;
    state.target = target;
    // Not allowed (origin, method or headers): no Access-Control-Allow-* at all, and the browser refuses.
    reply.code(204).headers(corsPreflight(plugins.cors, req.headers.origin!, method, req.headers['access-control-request-headers']) ?? {}).send();
    return true;
  }

  /** Route match, ip restriction, authorization, size limit; then the rate limits' decisions (synchronous when leases decide). */
  function admitted(req: FastifyRequest, principal: Principal): LimitDecision[] | Promise<LimitDecision[]> {
    const state = req.flowgate;
    state.principal = principal;
    // Matched, authorized and forwarded as one path: the one URL resolves (dot segments and
    // all), so /public/../admin cannot match /public/* and then reach the upstream's /admin.
    state.target = requestTarget(req.url);
    const path = state.target.pathname;
    if (req.routeOptions.url === '/*') state.match = ctx.configStore.find(principal.tenant, req.method, req.headers.host, path);
    const view = ctx.configStore.view(principal.tenant);
    const route = state.match?.kind === 'route' ? state.match.route : undefined;
    state.plugins = view?.pluginsFor(route ? { name: route.name, service: route.service } : undefined, principal.username) ?? {};
    const p = state.plugins;
    if (p['correlation-id']) state.correlation = correlationOf(p['correlation-id'], req.headers, req.id);

    if (p['ip-restriction'] && !ipAllowed(p['ip-restriction'], clientAddress(req))) {
      throw new ApiError(403, 'ip_not_allowed', 'requests from this address are not allowed here');
    }
    if (p.authorization) {
      const decision = authorize(p.authorization, { roles: principal.roles, claims: principal.claims, method: req.method, path, ip: clientAddress(req), now: new Date() });
      if (!decision.allowed) {
        throw new ApiError(403, 'forbidden', `${principal.username} may not ${req.method} ${path}`, decision.rule === undefined ? undefined : [{ field: `authorization.rules.${decision.rule}`, message: 'denied by this rule' }]);
      }
    }
    const size = Number(req.headers['content-length'] ?? 0);
    if (p['request-size-limiting'] && size > p['request-size-limiting'].allowed_payload_size_bytes) {
      throw new ApiError(413, 'payload_too_large', `the body may be at most ${p['request-size-limiting'].allowed_payload_size_bytes} bytes`, [{ field: 'body', message: 'too large' }]);
    }
    const limits = view?.limitsFor(principal.tenant, route?.name, principal.username) ?? [];
    return limits.length ? ctx.rateLimiter.checkAll(limits) : [];
  }

  /** RateLimit-* headers on the answer; a refusal is logged and answered 429 with Retry-After. */
  function rateLimited(req: FastifyRequest, reply: FastifyReply, decisions: LimitDecision[]): void {
    if (decisions.length === 0) return;
    const headers = rateLimitHeaders(decisions);
    reply.headers(headers);
    const refused = decisions.find((d) => !d.allowed);
    if (!refused) return;
    const state = req.flowgate;
    state.rateLimited = true;
    const route = state.match?.kind === 'route' ? state.match.route : undefined;
    req.log.warn({ trace_id: state.span?.spanContext().traceId, tenant: state.principal?.tenant, consumer: state.principal?.username, policy: refused.policy, route: route?.name, source: refused.source }, 'rate limit refused a request');
    // Retry-After as the headers have it: the longest wait among the policies that refused.
    throw new ApiError(429, 'rate_limited', `rate limit ${refused.policy} exceeded: ${refused.limit} requests`, undefined, { 'Retry-After': headers['Retry-After']! });
  }

  // Callback hooks, not async ones: when every onSend hook finishes synchronously, the answer is
  // written before the handler returns, so Fastify does not have to wait for it with
  // end-of-stream listeners (Reply.then) on every request.
  app.addHook('onSend', (req, reply, payload, done) => {
    const correlation = req.flowgate?.correlation;
    if (!correlation || correlation.echo || correlation.name !== 'x-request-id') reply.header('X-Request-ID', req.id);
    if (correlation?.echo) reply.header(correlation.name, correlation.value);
    if (req.flowgate?.span) reply.header('X-Trace-ID', req.flowgate.span.spanContext().traceId);
    const p = req.flowgate?.plugins ?? {};
    if (p.cors && !isPreflight(req.method, req.headers)) {
      const cors = corsHeaders(p.cors, req.headers.origin);
      if (cors) reply.headers(cors);
      // An answer that depends on the Origin: caches keep one per origin.
      reply.header('vary', varyWith(reply.getHeader('vary'), ['Origin']));
    }

    // HTTPS as the client used it: this listener's TLS, or a trusted proxy's X-Forwarded-Proto.
    const secure = req.protocol === 'https';
    reply.headers(securityHeadersFor(p['security-headers'], secure));
    if (NEVER_STORED.has(reply.statusCode) || !reply.hasHeader('cache-control')) {
      reply.headers(cacheControl(p['cache-headers'], req.method, reply.statusCode, req.flowgate?.principal !== undefined));
    } else if (req.flowgate?.principal !== undefined) {
      // The upstream's own Cache-Control on a credential's answer: keyed on the credential too.
      const given = reply.getHeader('vary');
      const vary = upstreamCacheVary(String(reply.getHeader('cache-control')), Array.isArray(given) ? given.join(', ') : given === undefined ? undefined : String(given));
      if (vary) reply.header('vary', vary);
    }
    // Cache-Control: no-transform forbids an intermediary to change the body (RFC 9110 7.7):
    // @fastify/compress does not read it, but it does honour this request header.
    const cacheControlSet = reply.getHeader('cache-control');
    if (cacheControlSet !== undefined && NO_TRANSFORM.test(String(cacheControlSet))) req.headers['x-no-compression'] = '1';
    // The operator's last word on the answer's headers.
    const rt = p['response-transformer'];
    if (rt) {
      for (const h of rt.remove_headers) reply.removeHeader(h);
      reply.headers(rt.add_headers);
    }
    if (reply.statusCode >= 400 && req.flowgate && (typeof payload === 'string' || Buffer.isBuffer(payload))) req.flowgate.responseBody = payload;
    done(null, payload);
  });

  app.addHook('onResponse', (req, reply, done) => {
    try {
      responded(req, reply);
    } catch (err) {
      done(err as Error);
      return;
    }
    done();
  });

  /** Metrics, the span's end, the audit entry and the api_calls row of a request, once: answered, or its client gone. */
  function responded(req: FastifyRequest, reply: FastifyReply, closedEarly?: number): void {
    const state = req.flowgate;
    if (state?.recorded) return;
    if (state) state.recorded = true;
    const path = routeLabel(req);
    const status = closedEarly ?? reply.statusCode;
    const tenant = state?.principal?.tenant;
    ctx.metrics.pipeline.requests.inc({ method: req.method, path, status, tenant: tenant ?? 'unknown' });
    ctx.metrics.http.observe({ method: req.method, path, status, tenant: tenant ?? 'unknown' }, reply.elapsedTime / 1000);
    if (SKIP.has(req.routeOptions.url ?? '')) return;
    const span = state?.span;
    const traceId = span?.spanContext().traceId;
    if (span) {
      span.updateName(`${req.method} ${path}`);
      span.setAttributes({ 'http.request.method': req.method, 'http.route': path, 'http.response.status_code': status, 'flowgate.tenant': tenant ?? 'unknown', 'flowgate.request_id': req.id });
      endSpan(span, status >= 500 ? `status ${status}` : undefined);
    }
    if (status >= 500) req.log.warn({ status, path, trace_id: traceId }, 'request failed');
    const error = status >= 400;
    ctx.audit.record({
      trace_id: traceId,
      at: new Date(Date.now() - reply.elapsedTime).toISOString(),
      request_id: req.id,
      tenant,
      consumer: state?.principal?.consumerId,
      user: state?.principal?.username,
      auth_method: state?.principal?.method,
      method: req.method,
      route: path,
      path: maskPath(req.url.split('?', 1)[0]!.slice(0, 2048)),
      status,
      latency_ms: Math.round(reply.elapsedTime * 1000) / 1000,
      client_ip: clientAddress(req),
      upstream: state?.upstream,
      error_code: closedEarly ? 'client_closed_request' : state?.errorCode ?? (error ? errorCodeOf(state?.responseBody) : undefined),
      rate_limited: state?.rateLimited,
      request_body: error && req.body !== undefined ? maskBody(bodyText(req.body), req.headers['content-type']).slice(0, AUDIT_BODY_LIMIT) : undefined,
      response_body: error && state?.responseBody !== undefined ? maskBody(state.responseBody, String(reply.getHeader('content-type') ?? '')).slice(0, AUDIT_BODY_LIMIT) : undefined,
    });
  }
}

function bodyText(body: unknown): string | Buffer {
  return Buffer.isBuffer(body) || typeof body === 'string' ? body : JSON.stringify(body);
}

function errorCodeOf(body: Buffer | string | undefined): string | undefined {
  if (body === undefined) return undefined;
  const m = /"code"\s*:\s*"([a-z_]{1,64})"/.exec(String(body).slice(0, 512));
  return m?.[1];
}

function stageOf(err: ApiError): string {
  if (err.statusCode === 401) return 'authentication';
  if (err.code === 'tenant_mismatch' || err.code === 'tenant_unknown') return 'tenant';
  if (err.statusCode === 429) return 'rate_limit';
  if (err.statusCode === 403) return 'authorization';
  return 'request';
}

