import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { ExecutionMemo, TriggerMessage } from '../lib/trigger-message';
import { findWorkflowType } from '../lib/workflow-registry';
import { SA } from '../lib/workflow-search-attributes';

export type StartOutcome = 'started' | 'already_started';

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
    await client.workflow.start(def.workflow, {
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
    });
    return 'started';
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return 'already_started';
    throw err;
  }
}
