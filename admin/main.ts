import { createKafka } from '../lib/kafka';
import { connectNats, natsHealthy } from '../lib/nats';
import { createPool, postgresHealthy } from '../lib/postgres';
import { runProcess } from '../lib/process-runtime';
import { buildAdmin, natsAnnouncer } from './app';
import { AuditOutbox } from './audit-outbox';

void runProcess('admin', async ({ config, logger }) => {
  const pool = createPool(config.FLOWGATE_DATABASE_URL, 10);
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-admin');
  const app = await buildAdmin({ config, logger, pool, nc, announce: natsAnnouncer(nc) });
  // Kafka is not a readiness dependency: audit records wait in the outbox while it is down.
  const outbox = new AuditOutbox(pool, createKafka(config.FLOWGATE_KAFKA_BROKERS, 'flowgate-admin'), logger);
  outbox.start();
  await app.listen({ port: config.FLOWGATE_ADMIN_PORT, host: config.FLOWGATE_HOST });
  return {
    checks: [
      { name: 'postgres', check: () => postgresHealthy(pool) },
      { name: 'nats', check: () => natsHealthy(nc) },
    ],
    shutdown: [
      ['http', () => app.close()],
      ['audit outbox', () => outbox.stop()],
      ['nats', () => nc.drain()],
      ['postgres', () => pool.end()],
    ],
  };
});
