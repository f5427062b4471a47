import { WorkflowExecutionAlreadyStartedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { WorkflowIdReusePolicy } from '@temporalio/common';
import type { Caller, ExecutionMemo } from './trigger-message';
import type { WorkflowTypeDef } from './workflow-registry';
import { SA } from './workflow-search-attributes';

export type StartRequest = {
  def: WorkflowTypeDef;
  executionId: string;
  tenant: string;
  correlationId: string;
  acceptedAt: string;
  /** Already validated against `def.input`. */
  input: unknown;
  taskQueue: string;
  callbackUrl?: string;
  /** The authenticated caller of the start, kept in the memo. */
  requestedBy?: Caller;
  /** Gives up after this long (while Temporal is away the SDK would otherwise keep retrying). */
  deadlineMs?: number;
  /**
   * REJECT_DUPLICATE (default): an execution id runs once, whatever became of it. The outbound
   * proxy uses ALLOW_DUPLICATE_FAILED_ONLY: a call that failed may be retried under its key.
   */
  reusePolicy?: WorkflowIdReusePolicy;
};

/**
 * Starts a registered workflow type with workflow id = execution id, the memo the status API
 * and webhooks read, and the tenant as a search attribute. Temporal refuses a second start of
 * the same id (REJECT_DUPLICATE): `started: false` then, with a handle on the first run.
 */
export async function startWorkflow(client: Client, r: StartRequest): Promise<{ started: boolean; handle: WorkflowHandle }> {
  const memo: ExecutionMemo = {
    tenant: r.tenant,
    workflow_type: r.def.name,
    correlation_id: r.correlationId,
    accepted_at: r.acceptedAt,
    ...(r.callbackUrl ? { callback_url: r.callbackUrl } : {}),
    ...(r.requestedBy ? { requested_by: r.requestedBy } : {}),
  };
  try {
    const handle = await client.withDeadline(Date.now() + (r.deadlineMs ?? 5000), () => client.workflow.start(r.def.workflow, {
      workflowId: r.executionId,
      taskQueue: r.def.taskQueue ?? r.taskQueue,
      args: [r.input],
      workflowIdReusePolicy: r.reusePolicy ?? WorkflowIdReusePolicy.REJECT_DUPLICATE,
      workflowExecutionTimeout: r.def.executionTimeout,
      memo,
      typedSearchAttributes: [
        { key: SA.tenant, value: r.tenant },
        { key: SA.correlationId, value: r.correlationId },
      ],
    }));
    return { started: true, handle };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return { started: false, handle: client.workflow.getHandle(r.executionId) };
    throw err;
  }
}
