import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createServer as createHttpsServer } from 'node:https';
import { hostname } from 'node:os';
import { KafkaProducerThread } from '../lib/kafka-thread';
import { createVault } from '../lib/vault';
import { connectNats, ensureStreams, natsHealthy } from '../lib/nats';
import { createAppPool } from '../lib/db-credentials';
import { startHeartbeats } from '../lib/heartbeats';
import { runProcess } from '../lib/process-runtime';
import { connectTemporal, temporalHealthy } from '../lib/temporal';
import { buildGateway } from './app';

void runProcess('gateway', async ({ config, logger, registry, tracing }) => {
  // DB-less: the declarative file is the whole config; PostgreSQL is not used at all.
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-gateway');
  const pool = config.FLOWGATE_DECLARATIVE_CONFIG ? undefined : await createAppPool(config, 20, { nats: nc, logger });
  await ensureStreams(nc);
  const temporal = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE);
  // The audit trail waits in memory while Kafka is down (200k entries, about 80 MB) and is sent when it is back.
  const spoolFile = config.FLOWGATE_SPOOL_DIR ? path.join(config.FLOWGATE_SPOOL_DIR, `gateway-${config.FLOWGATE_GATEWAY_PORT}.audit.jsonl`) : undefined;
  if (config.FLOWGATE_SPOOL_DIR) mkdirSync(config.FLOWGATE_SPOOL_DIR, { recursive: true, mode: 0o700 });
  // Produced from a thread of its own: one record per request must not cost the event loop kafkajs's encoding.
  const kafka = new KafkaProducerThread({
    brokers: config.FLOWGATE_KAFKA_BROKERS, clientId: 'flowgate-gateway', service: 'gateway', logLevel: config.FLOWGATE_LOG_LEVEL,
    lingerMs: 50, maxBatch: 5000, maxQueued: 200_000, spoolFile,
  }, logger);
  const vault = createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN);
  const { app, configStore, upstreams } = await buildGateway({ config, logger, registry, pool, nc, temporal, kafka, vault, tracer: tracing.tracer });
  await app.listen({ port: config.FLOWGATE_GATEWAY_PORT, host: config.FLOWGATE_HOST });
  // The optional TLS listener serves the same routes; with a client CA it asks for client certificates (mTLS)
  // and lets the pipeline refuse a missing or untrusted one, so the error is an API answer, not a failed handshake.
  const tls = config.FLOWGATE_TLS_PORT && config.FLOWGATE_TLS_CERT && config.FLOWGATE_TLS_KEY
    ? createHttpsServer({
      cert: readFileSync(config.FLOWGATE_TLS_CERT), key: readFileSync(config.FLOWGATE_TLS_KEY), minVersion: 'TLSv1.2',
      ...(config.FLOWGATE_TLS_CLIENT_CA ? { ca: readFileSync(config.FLOWGATE_TLS_CLIENT_CA), requestCert: true, rejectUnauthorized: false } : {}),
    }, (req, res) => app.routing(req, res))
    : undefined;
  if (tls) {
    await new Promise<void>((resolve, reject) => tls.once('error', reject).listen(config.FLOWGATE_TLS_PORT, config.FLOWGATE_HOST, () => resolve()));
    logger.info({ port: config.FLOWGATE_TLS_PORT, mtls: Boolean(config.FLOWGATE_TLS_CLIENT_CA) }, 'TLS listener ready');
  }
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
    info: () => ({ config: configStore.describe(), upstreams: upstreams.health() }),
    // Stop accepting, let in-flight requests finish, then close the clients.
    shutdown: [
      ['http', async () => {
        tls?.close();
        tls?.closeIdleConnections();
        await app.close();
      }],
      ['kafka', () => kafka.close()],
      ['nats', async () => { stopBeats(); await nc.drain(); }],
      ['postgres', async () => pool?.end()],
      ['temporal', () => temporal.connection.close()],
    ],
  };
});
