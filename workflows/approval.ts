import { ApplicationFailure, condition, defineSignal, patched, proxyActivities, setHandler, workflowInfo } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { Caller, ExecutionMemo } from '../lib/trigger-message';
import { Progress } from './progress';

const { composeGreeting } = proxyActivities<ReturnType<typeof createActivities>>({ startToCloseTimeout: '10 seconds' });

export type Decision = { approver: string; comment?: string };
/** A decision, and its caller as the gateway authenticated it (absent when sent another way). */
export const approveSignal = defineSignal<[Decision, Caller?]>('approve');
/** patched() id of the check that refuses a decision received at or after its deadline (approvals and payments). */
export const APPROVAL_DEADLINE_PATCH = 'approval-deadline';
export const rejectSignal = defineSignal<[Decision, Caller?]>('reject');

/** patched() id of the requester check by consumer (approvals and payments). */
export const APPROVAL_BY_CONSUMER_PATCH = 'approval-by-consumer';

/**
 * The test of whether a decision comes from the one who asked: by name (what the input and the
 * decision say) and, when the gateway authenticated both the start and the decision, by
 * consumer, so a requester cannot approve their own request by writing another name. Made once,
 * at the run's start: a run begun on a worker without the consumer check keeps the name check
 * alone, so what that worker accepted replays the same.
 */
export function requesterTest(requester: string): (d: Decision, caller?: Caller) => boolean {
  const requestedBy = patched(APPROVAL_BY_CONSUMER_PATCH) ? (workflowInfo().memo as Partial<ExecutionMemo> | undefined)?.requested_by : undefined;
  return (d, caller) => d.approver === requester || (caller !== undefined && requestedBy !== undefined && caller.consumer_id === requestedBy.consumer_id);
}

export type ApprovalInput = { subject: string; requester: string; timeout_seconds?: number };
export type ApprovalResult = { decision: 'approved'; approver: string; message: string };

/**
 * A request that waits for a human decision: approve or reject, from someone other than the
 * requester, before a deadline. A rejection or an expiry ends the run as a typed failure.
 */
export async function approvalRequest(input: ApprovalInput): Promise<ApprovalResult> {
  const progress = new Progress(['await-decision', 'notify']);
  let decision: { kind: 'approve' | 'reject'; by: Decision; at: number } | undefined;
  const fromRequester = requesterTest(input.requester);
  const accept = (kind: 'approve' | 'reject') => (d: Decision, caller?: Caller) => {
    // Requester != approver; a decision once taken is final.
    if (decision || fromRequester(d, caller)) return;
    decision = { kind, by: d, at: Date.now() }; // workflow time: when the run received it
  };
  setHandler(approveSignal, accept('approve'));
  setHandler(rejectSignal, accept('reject'));

  const timeoutMs = (input.timeout_seconds ?? 86_400) * 1000;
  const expiresAt = Date.now() + timeoutMs;
  const decided = await progress.step('await-decision', () =>
    progress.waitingFor('approval', 'approve', () => condition(() => decision !== undefined, timeoutMs)),
  );
  // Received at or after the deadline (with the timer, while the workers were away): too late.
  // Histories recorded before this check replay as they ran.
  const late = decided && decision !== undefined && decision.at >= expiresAt && patched(APPROVAL_DEADLINE_PATCH);
  if (!decided || !decision || late) throw ApplicationFailure.nonRetryable('approval expired before a decision', 'ApprovalExpired');
  if (decision.kind === 'reject') {
    throw ApplicationFailure.nonRetryable(`rejected by ${decision.by.approver}`, 'ApprovalRejected', decision.by);
  }
  const message = await progress.step('notify', () => composeGreeting(`${input.subject} approved by ${decision!.by.approver}`));
  return progress.complete({ decision: 'approved', approver: decision.by.approver, message });
}
