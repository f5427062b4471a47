import type { ExecutionMemo } from './trigger-message';

/** How a run ended, as its webhook says. */
export type WebhookStatus = 'COMPLETED' | 'FAILED' | 'CANCELED' | 'TERMINATED' | 'TIMED_OUT';

/**
 * The webhook a run sends when it ends. Completed, failed and canceled runs send it themselves
 * (workflows/interceptors.ts); terminated and timed-out ones, whose code does not run again, are
 * found by the worker's closure watcher (worker/closure-webhooks.ts).
 */
export type WebhookEvent = {
  id: string;
  type: 'workflow.completed' | 'workflow.failed' | 'workflow.canceled' | 'workflow.terminated' | 'workflow.timed_out';
  execution_id: string;
  workflow_type: string;
  tenant: string;
  status: WebhookStatus;
  occurred_at: string;
  correlation_id?: string;
  result?: unknown;
  error?: { message: string; type?: string };
};

/**
 * A run's end-of-run webhook. Its id, `{execution}:{status}`, is what receivers and the
 * retrier's table deduplicate on, whichever process builds it. Pure: workflow code uses it.
 */
export function webhookEvent(
  run: { workflowId: string; workflowType: string; memo: Partial<ExecutionMemo> }, status: WebhookStatus, at: Date, extra: Pick<WebhookEvent, 'result' | 'error'> = {},
): WebhookEvent {
  return {
    id: `${run.workflowId}:${status}`,
    type: `workflow.${status.toLowerCase()}` as WebhookEvent['type'],
    execution_id: run.workflowId,
    workflow_type: run.memo.workflow_type ?? run.workflowType,
    tenant: run.memo.tenant ?? '',
    status,
    occurred_at: at.toISOString(),
    correlation_id: run.memo.correlation_id,
    ...extra,
  };
}
