import { Client, Connection, isGrpcServiceError, ServiceError, type WorkflowClientInterceptor } from '@temporalio/client';
import { OpenTelemetryWorkflowClientInterceptor } from '@temporalio/interceptors-opentelemetry';
import { ApiError } from './errors';

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

/** gRPC status codes of a Temporal that is away: DEADLINE_EXCEEDED (4), UNAVAILABLE (14). */
const GRPC_AWAY = new Set([4, 14]);

/** Temporal could not be reached, or did not answer in time: `503 temporal_unavailable`, to retry. */
export class TemporalAway extends ApiError {
  constructor(readonly call: string, override readonly cause: unknown) {
    super(503, 'temporal_unavailable', 'the workflow engine cannot be reached; retry', undefined, { 'Retry-After': '2' });
  }
}

/**
 * Runs `fn`'s calls to Temporal with a deadline `ms` away, for a client that is waiting: the SDK
 * alone retries an unreachable server for about 20 s. Unreachable or too slow is a TemporalAway.
 */
export async function withinDeadline<T>(client: Client, ms: number, call: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await client.withDeadline(Date.now() + ms, fn);
  } catch (err) {
    // The workflow handle wraps the gRPC error in a ServiceError; the raw service calls do not.
    const grpc = err instanceof ServiceError ? err.cause : err;
    if (isGrpcServiceError(grpc) && GRPC_AWAY.has(grpc.code)) throw new TemporalAway(call, err);
    throw err;
  }
}
