import { randomUUID } from 'node:crypto';
import zlib from 'node:zlib';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { trace, type Tracer } from '@opentelemetry/api';
import type { Client } from '@temporalio/client';
import { headers as natsHeaderInit, type JetStreamClient, type JetStreamManager, type KV, type MsgHdrs, type NatsConnection } from 'nats';
import type { Pool } from 'pg';
import type { Registry } from 'prom-client';
import type { Config } from '../lib/config';
import { installErrorHandler } from '../lib/errors';
import { closeConnectionsOnShutdown } from '../lib/http-shutdown';
import { ExecutionIds } from '../lib/execution-ids';
import { LazyChildLogger, type Logger } from '../lib/logger';
import { prom } from '../lib/metrics';
import { KV_BUCKETS, openBucket } from '../lib/nats';
import compress from '@fastify/compress';
import type { AuditProducer } from './request-audit';
import type { VaultClient } from '../lib/vault';
import { isCallerRequestId } from '../lib/request-id';
import { upstreamPolicyFor } from '../lib/upstream-policy';
import { Authenticator } from './auth';
import { JwtVerifier } from './jwt';
import { pipelineMetrics, registerPipeline } from './pipeline';
import { RateLimiter } from './rate-limit';
import { RequestAudit } from './request-audit';
import { Upstreams } from './upstreams';
import { registerOutboundRoutes } from './routes/outbound';
import { registerWorkflowRoutes } from './routes/workflows';
import { ConfigStore } from './config-store';
import { registerConfiguredRoutes } from './configured-routes';
import { keepRawJson } from './raw-body';
import { SecretRefs } from './secret-refs';
import { TriggerBacklog } from './trigger-backlog';

export type GatewayDeps = {
  config: Config;
  logger: Logger;
  registry: Registry;
  /** Absent in DB-less mode (FLOWGATE_DECLARATIVE_CONFIG). */
  pool?: Pool;
  nc: NatsConnection;
  temporal: Client;
  /** The audit trail's producer; absent, requests are audited only in api_calls. */
  kafka?: AuditProducer;
  /** HS256 JWT secrets (secret/data/jwt/{workspace}/{kid}). */
  vault?: VaultClient;
  /** The gateway's spans (lib/tracing.ts); absent, the global tracer (a no-op unless set up). */
  tracer?: Tracer;
};

function gatewayMetrics(registry: Registry) {
  return {
    triggers: new prom.Counter({ name: 'workflow_triggers_total', help: 'Workflow triggers by outcome', labelNames: ['tenant', 'workflow', 'outcome'], registers: [registry] }),
    publishLatency: new prom.Histogram({ name: 'workflow_trigger_publish_duration_seconds', help: 'Time from publish to JetStream ack', labelNames: ['outcome'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 3], registers: [registry] }),
    statusLatency: new prom.Histogram({ name: 'workflow_status_request_duration_seconds', help: 'Status API latency', labelNames: ['route'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1], registers: [registry] }),
    // By tenant too, so a config rollout's canary is judged on the workspace it rolls out (activities/rollout.ts).
    http: new prom.Histogram({ name: 'http_request_duration_seconds', help: 'Gateway request latency by route pattern', labelNames: ['method', 'path', 'status', 'tenant'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers: [registry] }),
    pipeline: pipelineMetrics(registry),
  };
}

export type GatewayContext = GatewayDeps & {
  configStore: ConfigStore;
  ids: ExecutionIds;
  auth: Authenticator;
  rateLimiter: RateLimiter;
  /** `{vault:NAME#FIELD}` header values, read from OpenBao (gateway/secret-refs.ts). */
  secretRefs: SecretRefs;
  upstreams: Upstreams;
  audit: RequestAudit;
  js: JetStreamClient;
  metrics: ReturnType<typeof gatewayMetrics>;
  idempotencyKv: () => Promise<KV>;
  backlog: TriggerBacklog;
  natsHeaders: (values: Record<string, string>) => MsgHdrs;
  tracer: Tracer;
};

/** The gateway as a Fastify instance; tests drive it with inject, main.ts listens. */
export async function buildGateway(deps: GatewayDeps): Promise<{ app: FastifyInstance; configStore: ConfigStore; upstreams: Upstreams }> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    // Behind trusted proxies, req.ip and req.protocol are the client's (X-Forwarded-For/-Proto).
    trustProxy: deps.config.FLOWGATE_TRUSTED_PROXIES.length ? deps.config.FLOWGATE_TRUSTED_PROXIES : false,
    bodyLimit: deps.config.FLOWGATE_BODY_LIMIT_BYTES,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'correlation_id' }),
    childLoggerFactory: (logger, bindings, opts) => new LazyChildLogger(logger as Logger, bindings, opts) as unknown as FastifyBaseLogger,
    // The correlation id: the caller's X-Request-ID when well-formed, a new one otherwise.
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && isCallerRequestId(given) ? given : randomUUID();
    },
  });
  const js = deps.nc.jetstream();
  let kv: Promise<KV> | undefined;
  let jsm: Promise<JetStreamManager> | undefined;
  const configStore = new ConfigStore({
    pool: deps.pool, nc: deps.nc, file: deps.config.FLOWGATE_DECLARATIVE_CONFIG, logger: deps.logger,
    refreshMs: deps.config.FLOWGATE_CONFIG_REFRESH_MS, registry: deps.registry, group: deps.config.FLOWGATE_GATEWAY_GROUP,
  });
  const metrics = gatewayMetrics(deps.registry);
  // Where tenants' URLs may lead the gateway (services, trigger upstreams, JWKS): never its own
  // listeners either (its status port serves every tenant's metrics).
  const upstreamPolicy = upstreamPolicyFor(deps.config, [deps.config.FLOWGATE_GATEWAY_PORT, deps.config.statusPort, deps.config.FLOWGATE_TLS_PORT].filter((p): p is number => p !== undefined));
  const jwt = new JwtVerifier(async (workspace, kid) => {
    if (!deps.vault) return undefined;
    try {
      const res = await deps.vault.read(`secret/data/jwt/${workspace}/${kid}`) as { data?: { data?: { secret?: string } } };
      return res.data?.data?.secret;
    } catch (err) {
      // Not there is an answer; anything else (Vault away) is thrown, and the verifier retries soon.
      if ((err as { response?: { statusCode?: number } }).response?.statusCode === 404) return undefined;
      throw err;
    }
  }, undefined, upstreamPolicy);
  const upstreams = new Upstreams({
    logger: deps.logger, registry: deps.registry, maxResponseBytes: deps.config.FLOWGATE_UPSTREAM_MAX_RESPONSE_BYTES,
    policy: upstreamPolicy,
  });
  const ctx: GatewayContext = {
    ...deps,
    configStore,
    ids: new ExecutionIds(deps.config.FLOWGATE_EXECUTION_ID_SECRET),
    auth: new Authenticator({ store: configStore, pool: deps.pool, jwt, tenantHostSuffix: deps.config.FLOWGATE_TENANT_HOST_SUFFIX, latency: metrics.pipeline.authLatency }),
    rateLimiter: new RateLimiter({ redisUrl: deps.config.FLOWGATE_REDIS_URL, logger: deps.logger, registry: deps.registry, keyPrefix: 'flowgate:rl:', commandTimeoutMs: deps.config.FLOWGATE_RATE_LIMIT_TIMEOUT_MS }),
    upstreams,
    secretRefs: new SecretRefs({ vault: deps.vault, logger: deps.logger, ttlMs: deps.config.FLOWGATE_SECRET_REF_TTL_MS }),
    audit: new RequestAudit({ kafka: deps.kafka, pool: deps.pool, logger: deps.logger, registry: deps.registry, successSample: deps.config.FLOWGATE_API_CALLS_SAMPLE }),
    js,
    metrics,
    tracer: deps.tracer ?? trace.getTracer('flowgate-gateway'),
    backlog: new TriggerBacklog(() => (jsm ??= deps.nc.jetstreamManager().catch((err: unknown) => { jsm = undefined; throw err; })), { max: deps.config.FLOWGATE_TRIGGER_BACKLOG_MAX, tenantMax: deps.config.FLOWGATE_TRIGGER_BACKLOG_TENANT_MAX }, { pollMs: deps.config.FLOWGATE_TRIGGER_BACKLOG_POLL_MS, logger: deps.logger, registry: deps.registry }),
    idempotencyKv: () => {
      kv ??= openBucket(js, KV_BUCKETS.idempotency);
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
  // Compressed when the client accepts it and the answer is worth it; upstream answers already encoded pass as they are.
  await app.register(compress, { global: true, threshold: 1024, encodings: ['br', 'gzip'], brotliOptions: { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 4 } } });
  registerPipeline(app, ctx);
  app.get('/health', async () => ({ status: 'ok' }));
  registerWorkflowRoutes(app, ctx);
  registerOutboundRoutes(app, ctx);
  await configStore.start();
  configStore.onServices((services) => upstreams.sync(services));
  ctx.backlog.start();
  app.addHook('onClose', async () => {
    configStore.stop();
    await ctx.backlog.stop();
    await ctx.audit.close();
    await ctx.rateLimiter.close();
    await upstreams.close();
  });
  // Bodies of any type pass through to upstreams as they came (JSON is still parsed for triggers,
  // and its bytes kept for the upstream: raw-body.ts).
  keepRawJson(app);
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  registerConfiguredRoutes(app, ctx);
  return { app, configStore, upstreams };
}
