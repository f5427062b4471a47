import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Client } from '@temporalio/client';
import type { NatsConnection } from 'nats';
import type { Pool } from 'pg';
import type { Config } from '../lib/config';
import { installErrorHandler } from '../lib/errors';
import { closeConnectionsOnShutdown } from '../lib/http-shutdown';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import type { Logger } from '../lib/logger';
import { subjects } from '../lib/nats';
import { upstreamPolicyFor } from '../lib/upstream-policy';
import { registerCollections } from './collections';
import { registerConfig } from './config';
import type { PlatformTokenMirror } from './auth';
import { AdminApi } from './endpoint';
import { registerPayments } from './payments';
import { registerRunbooks } from './runbooks';
import { registerPlatform } from './platform';

export type AdminDeps = {
  config: Config;
  logger: Logger;
  pool: Pool;
  nc: NatsConnection;
  /** Runbook runs are Temporal workflows; without a client the runbook endpoints are absent. */
  temporal?: Client;
  /** Tells every data plane that a workspace's config is now at `version` (config.invalidations). */
  announce: (workspace: string, version: number) => void;
  /** Platform tokens that still authenticate while PostgreSQL is unreachable (runbooks during a failover). */
  tokenMirror?: PlatformTokenMirror;
  /** Where runbook audit records go when PostgreSQL cannot take them (Kafka api.audit-trail). */
  auditFallback?: KafkaBatcher;
};

/** `config.invalidations` messages: the workspace and the version it moved to. */
export function natsAnnouncer(nc: NatsConnection): AdminDeps['announce'] {
  return (workspace, version) => nc.publish(subjects.configInvalidations, JSON.stringify({ workspace, version, at: new Date().toISOString() }));
}

/** The control plane (port 8001): the Admin API over PostgreSQL, documented at /openapi.json. */
export async function buildAdmin(deps: AdminDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.config.FLOWGATE_BODY_LIMIT_BYTES,
    logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'correlation_id' }),
    genReqId: () => randomUUID(),
  });
  installErrorHandler(app);
  closeConnectionsOnShutdown(app);
  // Declarative config arrives as YAML.
  app.addContentTypeParser(['application/yaml', 'application/x-yaml', 'text/yaml', 'text/plain'], { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.addHook('onSend', async (req, reply) => {
    reply.header('X-Request-ID', req.id);
  });
  app.get('/health', async () => ({ status: 'ok' }));
  const api = new AdminApi(app, deps.pool, deps.tokenMirror);
  registerPlatform(api, deps);
  // Where services, rule upstreams and JWKS may point (the gateway's rule, checked when saved).
  const upstreamPolicy = upstreamPolicyFor(deps.config);
  registerCollections(api, deps, upstreamPolicy);
  registerConfig(api, deps, upstreamPolicy);
  registerPayments(api, deps);
  if (deps.temporal) registerRunbooks(api, { ...deps, temporal: deps.temporal });
  const openapi = api.openapi();
  app.get('/openapi.json', async () => openapi);
  return app;
}
