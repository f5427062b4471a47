import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode, makeTelemetryFilterString, type LogLevel, type WorkflowBundle } from '@temporalio/worker';
import type { Logger } from '../lib/logger';
import { createActivities } from '../activities';
import { hostname } from 'node:os';
import { createKafka } from '../lib/kafka';
import { KafkaBatcher } from '../lib/kafka-batcher';
import { connectNats } from '../lib/nats';
import { createAppPool } from '../lib/db-credentials';
import { postgresHealthy } from '../lib/postgres';
import { BreakerRegistry } from '../lib/third-party/breakers';
import { ThirdPartyClient } from '../lib/third-party/client';
import { CredentialCache } from '../lib/third-party/credentials';
import { createVault } from '../lib/vault';
import { connectTemporal, temporalHealthy } from '../lib/temporal';
import { startDbWatchdog } from '../lib/db-watchdog';
import { runProcess } from '../lib/process-runtime';

/** Bundles workflows/index.ts once; tests share one bundle across their workers. */
export function bundleWorkflows(): Promise<WorkflowBundle> {
  return bundleWorkflowCode({
    workflowsPath: require.resolve('../workflows'),
    workflowInterceptorModules: [require.resolve('../workflows/interceptors')],
    logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } });
}

const PINO_LEVEL: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

/** The SDK's own logs (TS side and the Rust core) go to the process's pino logger as JSON. */
function installSdkLogging(logger: Logger): void {
  const sdk = logger.child({ component: 'temporal-sdk' });
  Runtime.install({
    logger: new DefaultLogger('INFO', (entry) => sdk[PINO_LEVEL[entry.level]]({ ...entry.meta }, entry.message)),
    telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'WARN' }), forward: {} } },
  });
}

if (require.main === module) {
  void runProcess('worker', async ({ config, logger, registry }) => {
    installSdkLogging(logger);
    const nats = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-worker');
    const pool = await createAppPool(config, 10, { nats, logger });
    const events = new KafkaBatcher(createKafka(config.FLOWGATE_KAFKA_BROKERS, 'flowgate-worker'), logger);
    const breakers = new BreakerRegistry(config.FLOWGATE_THIRD_PARTIES, { instance: `worker@${hostname()}:${process.pid}`, nats, registry, logger });
    void breakers.followFleet();
    const vault = createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN);
    const thirdParty = new ThirdPartyClient(config.FLOWGATE_THIRD_PARTIES, {
      credentials: new CredentialCache(vault),
      breakers, recorder: events, logger, registry,
    });
    const connection = await NativeConnection.connect({ address: config.FLOWGATE_TEMPORAL_ADDRESS });
    const worker = await Worker.create({
      connection,
      namespace: config.FLOWGATE_TEMPORAL_NAMESPACE,
      taskQueue: config.FLOWGATE_TASK_QUEUE,
      workflowBundle: await bundleWorkflows(),
      activities: createActivities({
        logger, pool, thirdParty, events, registry, vault, nats, databaseUrl: config.FLOWGATE_DATABASE_URL, databaseCluster: config.FLOWGATE_DATABASE_CLUSTER,
        pgBin: config.FLOWGATE_PG_BIN, backupDir: config.FLOWGATE_BACKUP_DIR, services: config.FLOWGATE_THIRD_PARTIES,
      }),
      // In-flight activities get this long to finish on SIGTERM (the SDK's default is 0).
      shutdownGraceTime: config.FLOWGATE_SHUTDOWN_GRACE_MS,
    });
    const temporal = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE);
    const stopWatchdog = startDbWatchdog({ config, nats, vault, temporal, logger, registry });
    const run = worker.run();
    run.catch((err: unknown) => {
      logger.fatal({ err }, 'worker stopped unexpectedly');
      process.exit(1);
    });
    return {
      checks: [
        { name: 'worker', check: () => worker.getState() === 'RUNNING' },
        { name: 'postgres', check: () => postgresHealthy(pool) },
        { name: 'temporal', check: () => temporalHealthy(connection) },
      ],
      shutdown: [
        // The SDK stops the worker on SIGTERM too: whichever comes first, wait for the run to end.
        ['worker', async () => { if (worker.getState() === 'RUNNING') worker.shutdown(); await run; }],
        ['db-watchdog', stopWatchdog],
        ['temporal', async () => { await temporal.connection.close(); await connection.close(); }],
        ['kafka', () => events.close()],
        ['nats', async () => { breakers.shutdown(); await nats.drain(); }],
        ['postgres', () => pool.end()],
      ],
    };
  });
}
