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
function requesterTest(requester: string): (d: Decision, caller?: Caller) => boolean {
  const requestedBy = patched(APPROVAL_BY_CONSUMER_PATCH) ? (workflowInfo().memo as Partial<ExecutionMemo> | undefined)?.requested_by : undefined;
  return (d, caller) => d.approver === requester || (caller !== undefined && requestedBy !== undefined && caller.consumer_id === requestedBy.consumer_id);
}

export type Taken = { kind: 'approve' | 'reject'; by: Decision; at: number };

/**
 * The approve and reject signals of a run that waits for a human decision (approvalRequest,
 * processPayment): the first one taken is final, and none is taken from the requester.
 * Made at the run's start, where it registers the signal handlers.
 */
export class Decisions {
  private taken: Taken | undefined;

  constructor(requester: string) {
    const fromRequester = requesterTest(requester);
    const take = (kind: Taken['kind']) => (d: Decision, caller?: Caller) => {
      if (this.taken || fromRequester(d, caller)) return;
      this.taken = { kind, by: d, at: Date.now() }; // workflow time: when the run received it
    };
    setHandler(approveSignal, take('approve'));
    setHandler(rejectSignal, take('reject'));
  }

  /**
   * Waits up to `timeoutMs` for a decision; undefined when none came in time. One that reached
   * the run only at or after its deadline (the workers were away while both the timer and the
   * signal came) is too late and counts as none; histories recorded before that check replay as they ran.
   */
  async wait(timeoutMs: number): Promise<Taken | undefined> {
    const expiresAt = Date.now() + timeoutMs;
    const decided = await condition(() => this.taken !== undefined, timeoutMs);
    if (decided && this.taken!.at >= expiresAt && patched(APPROVAL_DEADLINE_PATCH)) return undefined;
    return decided ? this.taken : undefined;
  }
}

export type ApprovalInput = { subject: string; requester: string; timeout_seconds?: number };
export type ApprovalResult = { decision: 'approved'; approver: string; message: string };

/**
 * A request that waits for a human decision: approve or reject, from someone other than the
 * requester, before a deadline. A rejection or an expiry ends the run as a typed failure.
 */
export async function approvalRequest(input: ApprovalInput): Promise<ApprovalResult> {
  const progress = new Progress(['await-decision', 'notify']);
  const decisions = new Decisions(input.requester);

  const timeoutMs = (input.timeout_seconds ?? 86_400) * 1000;
  const decision = await progress.step('await-decision', () => progress.waitingFor('approval', 'approve', () => decisions.wait(timeoutMs)));
  if (!decision) throw ApplicationFailure.nonRetryable('approval expired before a decision', 'ApprovalExpired');
  if (decision.kind === 'reject') {
    throw ApplicationFailure.nonRetryable(`rejected by ${decision.by.approver}`, 'ApprovalRejected', decision.by);
  }
  const message = await progress.step('notify', () => composeGreeting(`${input.subject} approved by ${decision.by.approver}`));
  return progress.complete({ decision: 'approved', approver: decision.by.approver, message });
}
