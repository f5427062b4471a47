import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, validationError } from '../lib/errors';
import { renderInput } from '../lib/trigger-rules';
import { findWorkflowType } from '../lib/workflow-registry';
import type { GatewayContext } from './app';
import type { Route, Service } from './config-store';
import { createTriggering, type Accepted } from './triggering';

/**
 * Everything outside /api and /outbound: the workspace's configured routes (proxied to their
 * service) and route-bound trigger rules (start the workflow, then proxy to the rule's
 * upstream if it has one). The caller's API key decides the workspace, so a route of one
 * tenant is invisible to another.
 */

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer', 'host', 'content-length', 'authorization', 'x-api-key']);

/** Weighted round robin over a service's targets (or its one url). */
class Balancer {
  private counters = new Map<string, number>();

  pick(service: Service): string {
    if (service.url) return service.url;
    const total = service.targets.reduce((n, t) => n + t.weight, 0);
    const n = (this.counters.get(service.id) ?? 0) % total;
    this.counters.set(service.id, n + 1);
    let acc = 0;
    for (const t of service.targets) {
      acc += t.weight;
      if (n < acc) return t.url;
    }
    return service.targets[0]!.url;
  }
}

/** `/v1/orders/*` with strip_path drops `/v1/orders` (the pattern's static prefix) from the path. */
export function upstreamPath(pattern: string, path: string, strip: boolean): string {
  if (!strip) return path;
  const prefix = pattern.split(/[:*]/)[0]!.replace(/\/$/, '');
  const rest = path.startsWith(prefix) ? path.slice(prefix.length) : path;
  return rest.startsWith('/') ? rest : `/${rest}`;
}

function requestBody(req: FastifyRequest): string | Buffer | undefined {
  if (req.method === 'GET' || req.method === 'HEAD' || req.body === undefined || req.body === null) return undefined;
  if (Buffer.isBuffer(req.body) || typeof req.body === 'string') return req.body;
  return JSON.stringify(req.body);
}

export function registerConfiguredRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  const { accept } = createTriggering(ctx);
  const balancer = new Balancer();

  async function forward(req: FastifyRequest, reply: FastifyReply, target: URL, opts: {
    tenant: string; timeoutMs: number; retries: number; addHeaders?: Record<string, string>; removeHeaders?: string[];
    responseAdd?: Record<string, string>; responseRemove?: string[]; accepted?: Accepted;
  }) {
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !HOP_BY_HOP.has(k)) headers[k] = v;
    for (const h of opts.removeHeaders ?? []) delete headers[h.toLowerCase()];
    Object.assign(headers, Object.fromEntries(Object.entries(opts.addHeaders ?? {}).map(([k, v]) => [k.toLowerCase(), v])));
    headers['x-request-id'] = req.id;
    headers['x-tenant-id'] = opts.tenant;
    headers['x-forwarded-for'] = req.ip;
    if (opts.accepted) headers['x-workflow-execution-id'] = opts.accepted.executionId;
    let upstream: Response | undefined;
    // Retries only when the connection itself failed: the upstream never saw the request.
    for (let attempt = 0; !upstream; attempt++) {
      try {
        upstream = await fetch(target, { method: req.method, headers, body: requestBody(req), signal: AbortSignal.timeout(opts.timeoutMs), redirect: 'manual' });
      } catch (err) {
        const refused = (err as { cause?: { code?: string } }).cause?.code === 'ECONNREFUSED';
        if (refused && attempt < opts.retries) continue;
        req.log.warn({ err, upstream: target.origin }, 'upstream unavailable');
        const timedOut = (err as Error).name === 'TimeoutError';
        if (opts.accepted) reply.headers(opts.accepted.headers);
        // A trigger is durable already: the client still gets its execution id.
        return reply.code(timedOut ? 504 : 502).send({
          error: { code: timedOut ? 'upstream_timeout' : 'upstream_unavailable', message: timedOut ? 'the upstream did not answer in time' : 'the upstream did not answer' },
          correlation_id: req.id, ...(opts.accepted ? { execution_id: opts.accepted.executionId } : {}),
        });
      }
    }
    const body = Buffer.from(await upstream.arrayBuffer());
    reply.code(upstream.status);
    const drop = new Set((opts.responseRemove ?? []).map((h) => h.toLowerCase()));
    upstream.headers.forEach((v, k) => {
      if (!HOP_BY_HOP.has(k) && k !== 'content-encoding' && !drop.has(k)) reply.header(k, v);
    });
    for (const [k, v] of Object.entries(opts.responseAdd ?? {})) reply.header(k, v);
    if (opts.accepted) reply.headers({ 'X-Workflow-Execution-ID': opts.accepted.headers['X-Workflow-Execution-ID'], 'X-Workflow-Status-Endpoint': opts.accepted.headers['X-Workflow-Status-Endpoint'] });
    return reply.send(body);
  }

  const proxyRoute = (req: FastifyRequest, reply: FastifyReply, tenant: string, route: Route, service: Service, pattern: string, url: URL) => {
    const base = new URL(balancer.pick(service));
    const target = new URL(base);
    target.pathname = `${base.pathname.replace(/\/$/, '')}${upstreamPath(pattern, url.pathname, route.strip_path)}`;
    target.search = url.search;
    const t = route.transformations ?? {};
    return forward(req, reply, target, {
      tenant, timeoutMs: service.connect_timeout_ms + service.read_timeout_ms, retries: service.retries,
      addHeaders: t.request?.add_headers, removeHeaders: t.request?.remove_headers, responseAdd: t.response?.add_headers, responseRemove: t.response?.remove_headers,
    });
  };

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    const principal = await ctx.auth.authenticate(req);
    const url = new URL(req.url, 'http://gateway');
    const match = ctx.configStore.find(principal.tenant, req.method, req.headers.host, url.pathname);
    if (!match) throw new ApiError(404, 'route_not_found', `no route for ${req.method} ${url.pathname}`);
    reply.header('X-Flowgate-Config-Version', String(ctx.configStore.versionOf(principal.tenant) ?? 0));
    if (match.kind === 'route') return proxyRoute(req, reply, principal.tenant, match.route, match.service, match.pattern, url);

    const { rule, params } = match;
    const def = findWorkflowType(rule.workflow_type);
    if (!def) throw new ApiError(503, 'workflow_type_unavailable', `the route's workflow type ${rule.workflow_type} is not registered`);
    const input = renderInput(rule.input_template, {
      body: req.body,
      path: params,
      query: Object.fromEntries(url.searchParams),
      headers: req.headers,
      auth: { tenant: principal.tenant, consumer_id: principal.consumerId },
    });
    const parsed = def.input.safeParse(input);
    if (!parsed.success) throw validationError(parsed.error, 'body');
    const accepted = await accept(req, def, principal.tenant, parsed.data, 'route', rule.callback_url);
    if (!rule.upstream_url) return reply.code(202).headers(accepted.headers).send(accepted.body);
    const target = new URL(rule.upstream_url);
    target.pathname = `${target.pathname.replace(/\/$/, '')}${url.pathname}`;
    target.search = url.search;
    return forward(req, reply, target, { tenant: principal.tenant, timeoutMs: 5000, retries: 0, accepted });
  };
  app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url: '/*', handler });
}
