import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundle } from '@temporalio/worker';
import { createActivities } from '../activities';
import { createPool } from '../lib/postgres';
import { runProcess } from '../lib/process-runtime';

/** Bundles workflows/index.ts once; tests share one bundle across their workers. */
export function bundleWorkflows(): Promise<WorkflowBundle> {
  return bundleWorkflowCode({
    workflowsPath: require.resolve('../workflows'),
    workflowInterceptorModules: [require.resolve('../workflows/interceptors')],
    logger: { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } });
}

if (require.main === module) {
  void runProcess('worker', async ({ config, logger }) => {
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
        { name: 'postgres', check: async () => (await pool.query('SELECT 1')).rowCount === 1 },
        {
          name: 'temporal',
          check: async () => {
            await connection.workflowService.getSystemInfo({});
            return true;
          },
        },
      ],
      shutdown: [
        ['worker', async () => { worker.shutdown(); await run; }],
        ['temporal', () => connection.close()],
        ['postgres', () => pool.end()],
      ],
    };
  });
}
