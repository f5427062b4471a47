import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import FindMyWay, { type HTTPVersion, type Instance } from 'find-my-way';
import type { Subscription } from 'nats';
import { ApiError, validationError } from '../lib/errors';
import { subjects } from '../lib/nats';
import { loadTriggerRules, renderInput, type TriggerRule } from '../lib/trigger-rules';
import { findWorkflowType } from '../lib/workflow-registry';
import type { GatewayContext } from './app';
import { createTriggering } from './triggering';

/** Config pull interval (seed 000: every 30 s, and at once on config.invalidations). */
export const RULE_REFRESH_MS = 30_000;
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection', 'te', 'trailer', 'host', 'content-length', 'authorization', 'x-api-key']);

type Router = Instance<HTTPVersion.V1>;

/** Route-bound trigger rules, one router per tenant; the last good table is kept if a refresh fails. */
export class RouteTriggerTable {
  private routers = new Map<string, Router>();
  private timer?: NodeJS.Timeout;
  private sub?: Subscription;
  version = 0;

  constructor(private readonly ctx: GatewayContext) {}

  async refresh(): Promise<void> {
    const rules = (await loadTriggerRules(this.ctx.pool)).filter((r) => r.route_path);
    const next = new Map<string, Router>();
    for (const rule of rules) {
      let router = next.get(rule.workspace_id);
      if (!router) next.set(rule.workspace_id, (router = FindMyWay({ ignoreTrailingSlash: true })));
      for (const method of rule.route_methods ?? ['POST']) {
        try {
          router.on(method as 'POST', rule.route_path!, () => undefined, { rule });
        } catch (err) {
          this.ctx.logger.warn({ err, rule: rule.id }, 'trigger rule route conflicts with another; skipped');
        }
      }
    }
    this.routers = next;
    this.version++;
  }

  find(tenant: string, method: string, path: string): { rule: TriggerRule; params: Record<string, string | undefined> } | null {
    const found = this.routers.get(tenant)?.find(method as 'POST', path);
    if (!found) return null;
    return { rule: (found.store as { rule: TriggerRule }).rule, params: found.params };
  }

  async start(): Promise<void> {
    await this.refresh();
    const again = () => this.refresh().catch((err) => this.ctx.logger.warn({ err }, 'trigger rule refresh failed; serving the last good table'));
    this.timer = setInterval(again, RULE_REFRESH_MS);
    this.timer.unref();
    this.sub = this.ctx.nc.subscribe(subjects.configInvalidations, { callback: () => void again() });
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }
}

/** Any route bound to a trigger rule: start its workflow, then proxy to its upstream if it has one. */
export function registerRouteTriggers(app: FastifyInstance, ctx: GatewayContext, table: RouteTriggerTable): void {
  const { accept } = createTriggering(ctx);
  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    const principal = await ctx.auth.authenticate(req);
    const url = new URL(req.url, 'http://gateway');
    const match = table.find(principal.tenant, req.method, url.pathname);
    if (!match) throw new ApiError(404, 'route_not_found', `no route for ${req.method} ${url.pathname}`);
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
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === 'string' && !HOP_BY_HOP.has(k)) headers[k] = v;
    headers['x-request-id'] = req.id;
    headers['x-tenant-id'] = principal.tenant;
    headers['x-workflow-execution-id'] = accepted.executionId;
    let upstream: Response;
    try {
      upstream = await fetch(target, {
        method: req.method,
        headers,
        body: req.method === 'GET' || req.method === 'HEAD' || req.body === undefined ? undefined : JSON.stringify(req.body),
        signal: AbortSignal.timeout(5000),
        redirect: 'manual',
      });
    } catch (err) {
      req.log.warn({ err, upstream: target.origin }, 'upstream unavailable');
      // The trigger is durable already: the client still gets its execution id.
      return reply.code(502).headers(accepted.headers).send({ error: { code: 'upstream_unavailable', message: 'the upstream did not answer' }, correlation_id: req.id, execution_id: accepted.executionId });
    }
    const body = Buffer.from(await upstream.arrayBuffer());
    reply.code(upstream.status);
    upstream.headers.forEach((v, k) => {
      if (!HOP_BY_HOP.has(k) && k !== 'content-encoding') reply.header(k, v);
    });
    return reply.headers({ 'X-Workflow-Execution-ID': accepted.headers['X-Workflow-Execution-ID'], 'X-Workflow-Status-Endpoint': accepted.headers['X-Workflow-Status-Endpoint'] }).send(body);
  };
  app.route({ method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'], url: '/*', handler });
}
