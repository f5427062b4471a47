import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Client } from '@temporalio/client';
import { headers as natsHeaderInit, type JetStreamClient, type KV, type MsgHdrs, type NatsConnection } from 'nats';
import type { Pool } from 'pg';
import type { Registry } from 'prom-client';
import type { Config } from '../lib/config';
import { installErrorHandler } from '../lib/errors';
import { closeConnectionsOnShutdown } from '../lib/http-shutdown';
import { ExecutionIds } from '../lib/execution-ids';
import type { Logger } from '../lib/logger';
import { prom } from '../lib/metrics';
import { ApiKeyAuthenticator } from './auth';
import { registerOutboundRoutes } from './routes/outbound';
import { registerWorkflowRoutes } from './routes/workflows';
import { ConfigStore } from './config-store';
import { registerConfiguredRoutes } from './configured-routes';

export type GatewayDeps = {
  config: Config;
  logger: Logger;
  registry: Registry;
  /** Absent in DB-less mode (FLOWGATE_DECLARATIVE_CONFIG). */
  pool?: Pool;
  nc: NatsConnection;
  temporal: Client;
};

/** An Idempotency-Key is remembered for 24 hours (as Stripe does). */
const IDEMPOTENCY_TTL_MS = 24 * 3600_000;
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

function gatewayMetrics(registry: Registry) {
  return {
    triggers: new prom.Counter({ name: 'workflow_triggers_total', help: 'Workflow triggers by outcome', labelNames: ['tenant', 'workflow', 'outcome'], registers: [registry] }),
    publishLatency: new prom.Histogram({ name: 'workflow_trigger_publish_duration_seconds', help: 'Time from publish to JetStream ack', labelNames: ['outcome'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 3], registers: [registry] }),
    statusLatency: new prom.Histogram({ name: 'workflow_status_request_duration_seconds', help: 'Status API latency', labelNames: ['route'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers: [registry] }),
    http: new prom.Histogram({ name: 'http_request_duration_seconds', help: 'Gateway request latency by route pattern', labelNames: ['method', 'path', 'status'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] }),
  };
}

export type GatewayContext = GatewayDeps & {
  configStore: ConfigStore;
  ids: ExecutionIds;
  auth: ApiKeyAuthenticator;
  js: JetStreamClient;
  metrics: ReturnType<typeof gatewayMetrics>;
  idempotencyKv: () => Promise<KV>;
  natsHeaders: (values: Record<string, string>) => MsgHdrs;
};

/** The gateway as a Fastify instance; tests drive it with inject, main.ts listens. */
export async function buildGateway(deps: GatewayDeps): Promise<{ app: FastifyInstance; configStore: ConfigStore }> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.config.FLOWGATE_BODY_LIMIT_BYTES,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'correlation_id' }),
    // The correlation id: the caller's X-Request-ID when well-formed, a new one otherwise.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
  });
  const js = deps.nc.jetstream();
  let kv: Promise<KV> | undefined;
  const configStore = new ConfigStore({
    pool: deps.pool, nc: deps.nc, file: deps.config.FLOWGATE_DECLARATIVE_CONFIG, logger: deps.logger,
    refreshMs: deps.config.FLOWGATE_CONFIG_REFRESH_MS, registry: deps.registry, group: deps.config.FLOWGATE_GATEWAY_GROUP,
  });
  const ctx: GatewayContext = {
    ...deps,
    configStore,
    ids: new ExecutionIds(deps.config.FLOWGATE_EXECUTION_ID_SECRET),
    auth: new ApiKeyAuthenticator(configStore, deps.pool),
    js,
    metrics: gatewayMetrics(deps.registry),
    idempotencyKv: () => {
      kv ??= js.views.kv('flowgate_idempotency', { ttl: IDEMPOTENCY_TTL_MS, history: 1 });
      kv.catch(() => { kv = undefined; });
      return kv;
    },
    natsHeaders: (values) => {
      const h = natsHeaderInit();
      for (const [k, v] of Object.entries(values)) h.set(k, v);
      return h;
    },
  };
  installErrorHandler(app);
  closeConnectionsOnShutdown(app);
  app.addHook('onSend', async (req, reply) => {
    reply.header('X-Request-ID', req.id);
  });
  app.addHook('onResponse', async (req, reply) => {
    ctx.metrics.http.observe({ method: req.method, path: req.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    if (reply.statusCode >= 500) req.log.warn({ status: reply.statusCode, path: req.routeOptions.url }, 'request failed');
  });
  app.get('/health', async () => ({ status: 'ok' }));
  registerWorkflowRoutes(app, ctx);
  registerOutboundRoutes(app, ctx);
  await configStore.start();
  app.addHook('onClose', async () => configStore.stop());
  // Bodies of any type pass through to upstreams as they came (JSON is still parsed for triggers).
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  registerConfiguredRoutes(app, ctx);
  return { app, configStore };
}
