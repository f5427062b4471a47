import { DefaultLogger, NativeConnection, Runtime, Worker, bundleWorkflowCode, makeTelemetryFilterString, type LogLevel, type WorkflowBundle } from '@temporalio/worker';
import type { Logger } from '../lib/logger';
import { createActivities } from '../activities';
import { createPool, postgresHealthy } from '../lib/postgres';
import { temporalHealthy } from '../lib/temporal';
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
  void runProcess('worker', async ({ config, logger }) => {
    installSdkLogging(logger);
    const pool = createPool(config.FLOWGATE_DATABASE_URL, 10);
    const connection = await NativeConnection.connect({ address: config.FLOWGATE_TEMPORAL_ADDRESS });
    const worker = await Worker.create({
      connection,
      namespace: config.FLOWGATE_TEMPORAL_NAMESPACE,
      taskQueue: config.FLOWGATE_TASK_QUEUE,
      workflowBundle: await bundleWorkflows(),
      activities: createActivities({ logger, pool }),
      // In-flight activities get this long to finish on SIGTERM (the SDK's default is 0).
      shutdownGraceTime: config.FLOWGATE_SHUTDOWN_GRACE_MS,
    });
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
        ['worker', async () => { worker.shutdown(); await run; }],
        ['temporal', () => connection.close()],
        ['postgres', () => pool.end()],
      ],
    };
  });
}
