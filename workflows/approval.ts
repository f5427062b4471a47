import { ApplicationFailure, condition, defineSignal, patched, proxyActivities, setHandler } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { Progress } from './progress';

const { composeGreeting } = proxyActivities<ReturnType<typeof createActivities>>({ startToCloseTimeout: '10 seconds' });

export type Decision = { approver: string; comment?: string };
export const approveSignal = defineSignal<[Decision]>('approve');
/** patched() id of the check that refuses a decision received at or after its deadline (approvals and payments). */
export const APPROVAL_DEADLINE_PATCH = 'approval-deadline';
export const rejectSignal = defineSignal<[Decision]>('reject');

export type ApprovalInput = { subject: string; requester: string; timeout_seconds?: number };
export type ApprovalResult = { decision: 'approved'; approver: string; message: string };

/**
 * A request that waits for a human decision: approve or reject, from someone other than the
 * requester, before a deadline. A rejection or an expiry ends the run as a typed failure.
 */
export async function approvalRequest(input: ApprovalInput): Promise<ApprovalResult> {
  const progress = new Progress(['await-decision', 'notify']);
  let decision: { kind: 'approve' | 'reject'; by: Decision; at: number } | undefined;
  const accept = (kind: 'approve' | 'reject') => (d: Decision) => {
    // Requester != approver; a decision once taken is final.
    if (decision || d.approver === input.requester) return;
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
