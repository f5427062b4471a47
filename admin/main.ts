import { createKafka, TOPICS } from '../lib/kafka';
import { HeartbeatMonitor } from '../lib/heartbeat-monitor';
import { startHeartbeats } from '../lib/heartbeats';
import { connectNats, natsHealthy } from '../lib/nats';
import { createAppPool } from '../lib/db-credentials';
import { postgresHealthy } from '../lib/postgres';
import { runProcess } from '../lib/process-runtime';
import { connectTemporal } from '../lib/temporal';
import { buildAdmin, natsAnnouncer } from './app';
import { AuditOutbox } from './audit-outbox';
import { PlatformTokenMirror } from './auth';
import { KafkaBatcher } from '../lib/kafka-batcher';

void runProcess('admin', async ({ config, logger, registry }) => {
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-admin');
  const pool = await createAppPool(config, 10, { nats: nc, logger });
  const temporal = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE, { traced: true });
  const kafka = createKafka(config.FLOWGATE_KAFKA_BROKERS, 'flowgate-admin');
  const tokenMirror = new PlatformTokenMirror(pool);
  tokenMirror.start();
  const auditFallback = new KafkaBatcher(kafka, logger);
  const app = await buildAdmin({ config, logger, pool, nc, temporal, announce: natsAnnouncer(nc), tokenMirror, auditFallback });
  // Kafka is not a readiness dependency: audit records wait in the outbox while it is down.
  const outbox = new AuditOutbox(pool, kafka, logger);
  outbox.start();
  await app.listen({ port: config.FLOWGATE_ADMIN_PORT, host: config.FLOWGATE_HOST });
  // Every process beats on health.heartbeats; the control plane reports the ones that fall silent.
  const monitor = new HeartbeatMonitor({
    nc, registry, logger, silentAfterMs: config.FLOWGATE_HEARTBEAT_SILENT_MS,
    emit: async (e) => { await auditFallback.sendWithin(2000, TOPICS.events, e.tenant, e); },
  });
  monitor.start();
  const stopBeats = startHeartbeats(nc, config);
  return {
    info: () => ({ processes: monitor.instances() }),
    checks: [
      { name: 'postgres', check: () => postgresHealthy(pool) },
      { name: 'nats', check: () => natsHealthy(nc) },
    ],
    shutdown: [
      ['http', () => app.close()],
      ['audit outbox', () => outbox.stop()],
      ['kafka', async () => { tokenMirror.stop(); await auditFallback.close(); }],
      ['nats', async () => { monitor.stop(); stopBeats(); await nc.drain(); }],
      ['postgres', () => pool.end()],
      ['temporal', () => temporal.connection.close()],
    ],
  };
});
