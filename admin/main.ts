import { connectNats, natsHealthy } from '../lib/nats';
import { createPool, postgresHealthy } from '../lib/postgres';
import { runProcess } from '../lib/process-runtime';
import { buildAdmin } from './app';

void runProcess('admin', async ({ config, logger }) => {
  const pool = createPool(config.FLOWGATE_DATABASE_URL, 10);
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-admin');
  const app = await buildAdmin({ config, logger, pool, nc });
  await app.listen({ port: config.FLOWGATE_ADMIN_PORT, host: config.FLOWGATE_HOST });
  return {
    checks: [
      { name: 'postgres', check: () => postgresHealthy(pool) },
      { name: 'nats', check: () => natsHealthy(nc) },
    ],
    shutdown: [
      ['http', () => app.close()],
      ['nats', () => nc.drain()],
      ['postgres', () => pool.end()],
    ],
  };
});
