import { connectNats, ensureStreams, natsHealthy } from '../lib/nats';
import { createPool, postgresHealthy } from '../lib/postgres';
import { runProcess } from '../lib/process-runtime';
import { connectTemporal, temporalHealthy } from '../lib/temporal';
import { buildGateway } from './app';

void runProcess('gateway', async ({ config, logger, registry }) => {
  const pool = createPool(config.FLOWGATE_DATABASE_URL, 20);
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-gateway');
  await ensureStreams(nc);
  const temporal = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE);
  const app = await buildGateway({ config, logger, registry, pool, nc, temporal });
  await app.listen({ port: config.FLOWGATE_GATEWAY_PORT, host: config.FLOWGATE_HOST });
  return {
    checks: [
      { name: 'nats', check: () => natsHealthy(nc) },
      { name: 'postgres', check: () => postgresHealthy(pool) },
      { name: 'temporal', check: () => temporalHealthy(temporal) },
    ],
    // Stop accepting, let in-flight requests finish, then close the clients.
    shutdown: [
      ['http', () => app.close()],
      ['nats', () => nc.drain()],
      ['postgres', () => pool.end()],
      ['temporal', () => temporal.connection.close()],
    ],
  };
});
