import { hostname } from 'node:os';
import { connectNats, ensureStreams, natsHealthy } from '../lib/nats';
import { createAppPool } from '../lib/db-credentials';
import { startHeartbeats } from '../lib/heartbeats';
import { runProcess } from '../lib/process-runtime';
import { connectTemporal, temporalHealthy } from '../lib/temporal';
import { buildGateway } from './app';

void runProcess('gateway', async ({ config, logger, registry }) => {
  // DB-less: the declarative file is the whole config; PostgreSQL is not used at all.
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-gateway');
  const pool = config.FLOWGATE_DECLARATIVE_CONFIG ? undefined : await createAppPool(config, 20, { nats: nc, logger });
  await ensureStreams(nc);
  const temporal = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE);
  const { app, configStore } = await buildGateway({ config, logger, registry, pool, nc, temporal });
  await app.listen({ port: config.FLOWGATE_GATEWAY_PORT, host: config.FLOWGATE_HOST });
  const publicUrl = `http://${config.FLOWGATE_HOST === '0.0.0.0' ? hostname() : config.FLOWGATE_HOST}:${config.FLOWGATE_GATEWAY_PORT}`;
  // The instance-loss runbook may stop this instance: the same graceful shutdown as SIGTERM.
  const stopBeats = startHeartbeats(nc, config, () => ({ group: config.FLOWGATE_GATEWAY_GROUP, public_url: publicUrl, config: configStore.served() }),
    () => { logger.warn('stop requested on gateway.control'); process.kill(process.pid, 'SIGTERM'); });
  return {
    // Not PostgreSQL: the gateway serves its last good config while PostgreSQL is down.
    checks: [
      { name: 'nats', check: () => natsHealthy(nc) },
      { name: 'config', check: () => configStore.ready },
      { name: 'temporal', check: () => temporalHealthy(temporal) },
    ],
    info: () => ({ config: configStore.describe() }),
    // Stop accepting, let in-flight requests finish, then close the clients.
    shutdown: [
      ['http', () => app.close()],
      ['nats', async () => { stopBeats(); await nc.drain(); }],
      ['postgres', async () => pool?.end()],
      ['temporal', () => temporal.connection.close()],
    ],
  };
});
