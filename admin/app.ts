import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Pool } from 'pg';
import type { Config } from '../lib/config';
import { installErrorHandler } from '../lib/errors';
import { closeConnectionsOnShutdown } from '../lib/http-shutdown';
import type { Logger } from '../lib/logger';
import { authenticateAdmin } from './auth';
import { registerTriggerRoutes } from './triggers';
import type { NatsConnection } from 'nats';

export type AdminDeps = { config: Config; logger: Logger; pool: Pool; nc: NatsConnection };

/** The control plane (port 8001). Entities beyond workspaces arrive with the Admin API issue. */
export async function buildAdmin(deps: AdminDeps): Promise<FastifyInstance> {
  const app = Fastify({ loggerInstance: deps.logger as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true, requestIdLogLabel: 'correlation_id' }), genReqId: () => randomUUID() });
  installErrorHandler(app);
  closeConnectionsOnShutdown(app);
  app.get('/health', async () => ({ status: 'ok' }));
  app.get('/workspaces', async (req) => {
    const who = await authenticateAdmin(deps.pool, req, 'viewer');
    const res = await deps.pool.query<{ id: string; name: string; created_at: Date }>(
      'SELECT id, name, created_at FROM workspaces WHERE $1::text IS NULL OR id = $1 ORDER BY id',
      [who.workspace],
    );
    return { data: res.rows };
  });
  registerTriggerRoutes(app, deps);
  return app;
}
