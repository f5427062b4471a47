import { WorkflowFailedError, type Client, type WorkflowExecutionDescription, type WorkflowExecutionInfo } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/common';
import { publicTypeName } from '../lib/workflow-registry';
import { PROGRESS_MEMO_KEY, SA, type ProgressRecord } from '../lib/workflow-search-attributes';
import type { ExecutionMemo } from '../lib/trigger-message';

export type WaitingFor =
  | { kind: 'signal' | 'approval'; name: string; since: string }
  | { kind: 'activity'; name: string; attempt: number; since?: string; last_failure?: string; last_failure_type?: string; next_attempt_at?: string }
  | { kind: 'start'; name: 'temporal-unavailable' | 'queued'; since?: string };

export type ExecutionStatus = {
  execution_id: string;
  workflow_type: string | null;
  status: 'ACCEPTED' | 'RUNNING' | 'COMPLETED' | 'FAILED' | 'CANCELED' | 'TERMINATED' | 'TIMED_OUT' | 'CONTINUED_AS_NEW' | 'UNKNOWN';
  current_step: string | null;
  /** The workflow's business state, when it reports one (a payment's PENDING … REFUNDED). */
  state?: string;
  progress: number;
  last_update: string | null;
  started_at?: string;
  closed_at?: string;
  correlation_id?: string;
  waiting_for?: WaitingFor | null;
  result?: unknown;
  error?: { message: string; type?: string; details?: unknown };
};

const STATUS_NAMES: Record<string, ExecutionStatus['status']> = {
  RUNNING: 'RUNNING', COMPLETED: 'COMPLETED', FAILED: 'FAILED', CANCELLED: 'CANCELED', TERMINATED: 'TERMINATED',
  TIMED_OUT: 'TIMED_OUT', CONTINUED_AS_NEW: 'CONTINUED_AS_NEW',
};

export const accepted = (id: string, waiting: WaitingFor | null = { kind: 'start', name: 'queued' }): ExecutionStatus => ({
  execution_id: id, workflow_type: null, status: 'ACCEPTED', current_step: null, progress: 0, last_update: null, waiting_for: waiting,
});

/** The tenant a workflow was started for (search attribute set at start by the consumer). */
export const tenantOf = (d: Pick<WorkflowExecutionInfo, 'typedSearchAttributes'>): string | undefined => d.typedSearchAttributes.get(SA.tenant);

/** The summary fields of a list row or a describe: no history read, no worker needed. */
export function summarize(d: Omit<WorkflowExecutionInfo, 'raw'>): ExecutionStatus {
  const progress = d.memo?.[PROGRESS_MEMO_KEY] as ProgressRecord | undefined;
  const memo = d.memo as Partial<ExecutionMemo> | undefined;
  const status = STATUS_NAMES[d.status.name] ?? 'UNKNOWN';
  return {
    execution_id: d.workflowId,
    workflow_type: publicTypeName(d.type),
    status,
    current_step: progress?.current_step ?? null,
    ...(progress?.state ? { state: progress.state } : {}),
    progress: status === 'COMPLETED' ? 100 : progress?.progress ?? 0,
    last_update: (progress?.last_update ?? d.closeTime?.toISOString() ?? d.startTime.toISOString()) || null,
    started_at: d.startTime.toISOString(),
    closed_at: d.closeTime?.toISOString(),
    correlation_id: memo?.correlation_id,
    waiting_for: status === 'RUNNING' ? progress?.waiting_for ?? null : null,
  };
}

/** Why a running workflow is not moving: a pending activity's attempt and last failure, or its own waiting record. */
function pendingActivity(d: WorkflowExecutionDescription): WaitingFor | null {
  const pending = d.raw.pendingActivities ?? [];
  const stuck = pending.find((a) => (a.attempt ?? 1) > 1 || a.lastFailure) ?? pending[0];
  if (!stuck) return null;
  const ts = stuck.lastAttemptCompleteTime ?? stuck.lastStartedTime ?? stuck.scheduledTime;
  const since = ts?.seconds != null ? new Date(Number(ts.seconds) * 1000).toISOString() : undefined;
  return {
    kind: 'activity',
    name: stuck.activityType?.name ?? 'unknown',
    attempt: stuck.attempt ?? 1,
    since,
    last_failure: stuck.lastFailure?.message ?? undefined,
    // `BreakerOpen`: the third party is known to be down and the next attempt waits for its breaker.
    last_failure_type: stuck.lastFailure?.applicationFailureInfo?.type ?? undefined,
    next_attempt_at: stuck.nextAttemptScheduleTime?.seconds != null ? new Date(Number(stuck.nextAttemptScheduleTime.seconds) * 1000).toISOString() : undefined,
  };
}

/**
 * Status of one execution for `tenant`, or null when it is not the tenant's (the caller answers
 * 404). `notStarted` decides what an id unknown to Temporal means (ACCEPTED, dead-lettered, or
 * null: gone).
 */
export async function describeExecution(
  client: Client,
  id: string,
  tenant: string,
  notStarted: () => Promise<ExecutionStatus | null>,
): Promise<ExecutionStatus | null> {
  const handle = client.workflow.getHandle(id);
  let d: WorkflowExecutionDescription;
  try {
    d = await handle.describe();
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) return notStarted();
    throw err;
  }
  if (tenantOf(d) !== tenant) return null;
  const out = summarize(d);
  if (out.status === 'RUNNING') out.waiting_for = out.waiting_for ?? pendingActivity(d);
  if (out.status === 'COMPLETED') {
    out.result = await handle.result();
  } else if (out.status !== 'RUNNING' && out.status !== 'CONTINUED_AS_NEW') {
    try {
      await handle.result();
    } catch (err) {
      out.error = failureOf(err);
    }
  }
  return out;
}

function failureOf(err: unknown): ExecutionStatus['error'] {
  if (err instanceof WorkflowFailedError) {
    const cause = err.cause as (Error & { type?: string; details?: unknown[] }) | undefined;
    return { message: cause?.message ?? err.message, type: cause?.type ?? cause?.name, details: cause?.details?.[0] };
  }
  return { message: (err as Error).message };
}
