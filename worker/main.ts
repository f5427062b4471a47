import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode, makeTelemetryFilterString, type LogLevel, type WorkflowBundle } from '@temporalio/worker';
import { readFile } from 'node:fs/promises';
import { OpenTelemetryActivityInboundInterceptor, OpenTelemetryActivityOutboundInterceptor, makeWorkflowExporter } from '@temporalio/interceptors-opentelemetry';
import { Resource } from '@opentelemetry/resources';
import type { Logger } from '../lib/logger';
import { DROP_SPANS, type Tracing } from '../lib/tracing';
import { freeLoopbackPort } from '../lib/free-port';
import { createActivities } from '../activities';
import { hostname } from 'node:os';
import { createKafka } from '../lib/kafka';
import { KafkaBatcher } from '../lib/kafka-batcher';
import { connectNats } from '../lib/nats';
import { startHeartbeats } from '../lib/heartbeats';
import { createAppPool } from '../lib/db-credentials';
import { postgresHealthy } from '../lib/postgres';
import { BreakerRegistry } from '../lib/third-party/breakers';
import { ThirdPartyClient } from '../lib/third-party/client';
import { CredentialCache } from '../lib/third-party/credentials';
import { createVault } from '../lib/vault';
import { connectTemporal, temporalHealthy } from '../lib/temporal';
import { startDbWatchdog } from '../lib/db-watchdog';
import { startWebhookRetrier } from '../lib/webhook-deliveries';
import { startClosureWebhooks } from './closure-webhooks';
import { runProcess } from '../lib/process-runtime';

/** The workflow code's modules: ours, and Temporal's OpenTelemetry interceptors (spans for workflows and the activities they schedule). */
export const WORKFLOW_INTERCEPTOR_MODULES = [require.resolve('../workflows/interceptors'), require.resolve('@temporalio/interceptors-opentelemetry/lib/workflow-interceptors')];

/**
 * The workflow bundle: prebuilt (FLOWGATE_WORKFLOW_BUNDLE, made by `node dist/worker/bundle.js` in
 * the image) or bundled from workflows/index.ts at start. Tests share one bundle across workers.
 */
export async function bundleWorkflows(prebuilt?: string): Promise<WorkflowBundle> {
  if (prebuilt) return { code: await readFile(prebuilt, 'utf8') };
  return bundleWorkflowCode({
    workflowsPath: require.resolve('../workflows'),
    workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES,
    logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } });
}

/** The sink the workflow interceptors export spans through; without tracing (tests, replays) they are dropped. */
export function workflowSinks(tracing?: Pick<Tracing, 'processor' | 'resource'>) {
  return { exporter: makeWorkflowExporter(tracing?.processor ?? DROP_SPANS, tracing?.resource ?? new Resource({})) };
}

const PINO_LEVEL: Record<LogLevel, 'trace' | 'debug' | 'info' | 'warn' | 'error'> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };
const SDK_LEVEL: Record<string, LogLevel> = { trace: 'TRACE', debug: 'DEBUG', info: 'INFO', warn: 'WARN', error: 'ERROR', fatal: 'ERROR', silent: 'ERROR' };

/**
 * The SDK's own logs (TS side and the Rust core) go to the process's pino logger as JSON, with
 * the trace id of the workflow or activity that wrote them. Its metrics (task latencies,
 * schedule-to-start, slots, outcomes) are served on a loopback port and appended to /metrics.
 */
function installSdkTelemetry(logger: Logger, level: string, metricsPort: number): void {
  const sdk = logger.child({ component: 'temporal-sdk' });
  Runtime.install({
    logger: new DefaultLogger(SDK_LEVEL[level] ?? 'INFO', (entry) => sdk[PINO_LEVEL[entry.level]]({ ...entry.meta }, entry.message)),
    telemetryOptions: {
      logging: { filter: makeTelemetryFilterString({ core: 'WARN' }), forward: {} },
      metrics: { prometheus: { bindAddress: `127.0.0.1:${metricsPort}`, useSecondsForDurations: true, countersTotalSuffix: true, unitSuffix: true } },
    },
  });
}

if (require.main === module) {
  void runProcess('worker', async ({ config, logger, registry, tracing }) => {
    // The SDK's metrics endpoint: bound by the Rust core on a loopback port, appended to /metrics.
    const sdkMetricsPort = await freeLoopbackPort();
    installSdkTelemetry(logger, config.FLOWGATE_LOG_LEVEL, sdkMetricsPort);
    const nats = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-worker');
    const pool = await createAppPool(config, 10, { nats, logger });
    const events = new KafkaBatcher(createKafka(config.FLOWGATE_KAFKA_BROKERS, 'flowgate-worker'), logger);
    const breakers = new BreakerRegistry(config.FLOWGATE_THIRD_PARTIES, { instance: `worker@${hostname()}:${process.pid}`, nats, registry, logger });
    void breakers.followFleet();
    const vault = createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN);
    const webhookTargets = { allowNonPublic: config.FLOWGATE_WEBHOOK_ALLOW_PRIVATE };
    const thirdParty = new ThirdPartyClient(config.FLOWGATE_THIRD_PARTIES, {
      credentials: new CredentialCache(vault),
      breakers, recorder: events, logger, registry,
    });
    const connection = await NativeConnection.connect({ address: config.FLOWGATE_TEMPORAL_ADDRESS });
    const worker = await Worker.create({
      connection,
      namespace: config.FLOWGATE_TEMPORAL_NAMESPACE,
      taskQueue: config.FLOWGATE_TASK_QUEUE,
      workflowBundle: await bundleWorkflows(config.FLOWGATE_WORKFLOW_BUNDLE),
      // Spans for every workflow (through a sink: workflow code cannot export) and activity, children of the starter's.
      sinks: workflowSinks(tracing),
      interceptors: {
        activity: [(ctx) => ({ inbound: new OpenTelemetryActivityInboundInterceptor(ctx), outbound: new OpenTelemetryActivityOutboundInterceptor(ctx) })],
      },
      activities: createActivities({
        logger, pool, thirdParty, events, registry, vault, nats, databaseUrl: config.FLOWGATE_DATABASE_URL, databaseCluster: config.FLOWGATE_DATABASE_CLUSTER,
        pgBin: config.FLOWGATE_PG_BIN, backupDir: config.FLOWGATE_BACKUP_DIR, services: config.FLOWGATE_THIRD_PARTIES,
        webhookFirstRetryMs: config.FLOWGATE_WEBHOOK_RETRY_BASE_MS, webhookTargets,
      }),
      // In-flight activities get this long to finish on SIGTERM (the SDK's default is 0).
      shutdownGraceTime: config.FLOWGATE_SHUTDOWN_GRACE_MS,
    });
    const temporal = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE);
    const stopWatchdog = startDbWatchdog({ config, nats, vault, temporal, logger, registry });
    const stopBeats = startHeartbeats(nats, config);
    const stopWebhookRetrier = startWebhookRetrier({
      pool, logger, registry, targets: webhookTargets,
      policy: { baseMs: config.FLOWGATE_WEBHOOK_RETRY_BASE_MS, maxMs: 3_600_000, retryForMs: config.FLOWGATE_WEBHOOK_RETRY_FOR_S * 1000, pollMs: config.FLOWGATE_WEBHOOK_RETRY_POLL_MS },
    });
    // Terminated and timed-out runs cannot send their own webhook: found in visibility, sent by the retrier.
    const stopClosureWebhooks = startClosureWebhooks({
      temporal, pool, logger, registry, pollMs: Math.max(1000, config.FLOWGATE_WEBHOOK_RETRY_POLL_MS),
    });
    const run = worker.run();
    run.catch((err: unknown) => {
      logger.fatal({ err }, 'worker stopped unexpectedly');
      process.exit(1);
    });
    return {
      extraMetrics: async () => (await fetch(`http://127.0.0.1:${sdkMetricsPort}/metrics`, { signal: AbortSignal.timeout(1000) })).text(),
      checks: [
        { name: 'worker', check: () => worker.getState() === 'RUNNING' },
        { name: 'postgres', check: () => postgresHealthy(pool) },
        { name: 'temporal', check: () => temporalHealthy(connection) },
      ],
      shutdown: [
        // The SDK stops the worker on SIGTERM too: whichever comes first, wait for the run to end.
        ['worker', async () => { if (worker.getState() === 'RUNNING') worker.shutdown(); await run; }],
        ['db-watchdog', stopWatchdog],
        ['webhook-retrier', stopWebhookRetrier],
        ['closure-webhooks', stopClosureWebhooks],
        ['temporal', async () => { await temporal.connection.close(); await connection.close(); }],
        ['kafka', () => events.close()],
        ['nats', async () => { stopBeats(); breakers.shutdown(); await nats.drain(); }],
        ['postgres', () => pool.end()],
      ],
    };
  });
}
