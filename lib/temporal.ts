import { Client, Connection, type WorkflowClientInterceptor } from '@temporalio/client';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry';

/** True when Temporal's frontend answers (a readiness check); works for Client and NativeConnection. */
export async function temporalHealthy(conn: { workflowService: { getSystemInfo(req: object): Promise<unknown> } }): Promise<boolean> {
  await conn.workflowService.getSystemInfo({});
  return true;
}

/**
 * A client for the namespace. `traced`: starts and signals carry the active span to the workflow
 * (Temporal's OpenTelemetry interceptor reads it from the active context, so only the processes
 * that keep one — not the gateway — pass it).
 */
export async function connectTemporal(address: string, namespace: string, opts: { traced?: boolean } = {}): Promise<Client> {
  const connection = await Connection.connect({ address, connectTimeout: 5000 });
  // Connecting runs inside the connection's AsyncLocalStorage, which on Node 20 switches on
  // async_hooks promise tracking for the whole process from then on: every promise of every
  // request pays for it (the gateway served about a third more requests per second without).
  // Nothing needs the context after connecting; a later withDeadline/withAbortSignal switches
  // it on again for the calls that use it.
  (connection as unknown as { callContextStorage?: { disable(): void } }).callContextStorage?.disable();
  const workflow: WorkflowClientInterceptor[] = opts.traced ? [new OpenTelemetryWorkflowClientInterceptor()] : [];
  return new Client({ connection, namespace, interceptors: { workflow } });
}
