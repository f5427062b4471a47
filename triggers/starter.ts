import { ServiceError, WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { DependencyUnavailableError } from '../lib/jetstream-worker';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { ExecutionMemo, TriggerMessage } from '../lib/trigger-message';
import { findWorkflowType } from '../lib/workflow-registry';
import { SA } from '../lib/workflow-search-attributes';

export type StartOutcome = 'started' | 'already_started';

const START_DEADLINE_MS = 5_000;
/** gRPC UNAVAILABLE (14) and DEADLINE_EXCEEDED (4): Temporal is away, not the request at fault. */
const OUTAGE_CODES = new Set([4, 14]);

export function isUnavailable(err: unknown): boolean {
  const e = err as { code?: number; cause?: { code?: number } };
  return (err instanceof ServiceError && OUTAGE_CODES.has(e.cause?.code ?? -1)) || OUTAGE_CODES.has(e.code ?? -1);
}

/** A trigger that can never start (unknown type, invalid input): dead-letter it at once. */
export class PoisonTriggerError extends Error {}

/**
 * Starts the workflow of one trigger with workflow id = execution id. Temporal refuses a second
 * start of the same id (REJECT_DUPLICATE), so a redelivered trigger never starts a second run.
 */
export async function startFromTrigger(client: Client, taskQueue: string, msg: TriggerMessage): Promise<StartOutcome> {
  const def = findWorkflowType(msg.workflow_type);
  if (!def) throw new PoisonTriggerError(`unknown workflow type ${msg.workflow_type}`);
  const parsed = def.input.safeParse(msg.input);
  if (!parsed.success) throw new PoisonTriggerError(`input not valid for ${def.name}: ${parsed.error.message}`);
  const memo: ExecutionMemo = {
    tenant: msg.tenant,
    workflow_type: def.name,
    correlation_id: msg.correlation_id,
    accepted_at: msg.accepted_at,
    ...(msg.callback_url ? { callback_url: msg.callback_url } : {}),
  };
  try {
    // A deadline of its own: while Temporal is away the SDK would otherwise keep retrying.
    await client.withDeadline(Date.now() + START_DEADLINE_MS, () => client.workflow.start(def.workflow, {
      workflowId: msg.execution_id,
      taskQueue: def.taskQueue ?? taskQueue,
      args: [parsed.data],
      workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
      workflowExecutionTimeout: def.executionTimeout,
      memo,
      typedSearchAttributes: [
        { key: SA.tenant, value: msg.tenant },
        { key: SA.correlationId, value: msg.correlation_id },
      ],
    }));
    return 'started';
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return 'already_started';
    if (isUnavailable(err)) throw new DependencyUnavailableError(`temporal unavailable: ${(err as Error).message}`);
    throw err;
  }
}
