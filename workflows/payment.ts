import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  log,
  patched,
  proxyActivities,
  workflowInfo,
} from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { PaymentContext, PaymentInput, PaymentResult, PaymentState } from '../lib/payments';
import type { ExecutionMemo } from '../lib/trigger-message';
import { APPROVAL_BY_CONSUMER_PATCH, APPROVAL_DEADLINE_PATCH, Decisions } from './approval';
import { Progress } from './progress';

type Activities = ReturnType<typeof createActivities>;

/** Answers that will not change on a retry. */
const NON_RETRYABLE = ['PaymentInvalid', 'PaymentDeclined', 'PaymentDuplicate', 'PaymentRejected', 'LedgerRejected'];

// A cancel waits for a running step to settle (WAIT_CANCELLATION_COMPLETED): the undo must see
// what the step did, not race a booking or a charge that is still in flight.
const { validatePayment, recordLedger, reverseLedger, publishPaymentEvent, raisePaymentAlert } = proxyActivities<Activities>({
  startToCloseTimeout: '10 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '500 ms', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: 6, nonRetryableErrorTypes: NON_RETRYABLE },
});
// Provider calls: 5xx and timeouts are retried with backoff, an open breaker sets its own delay
// (activities/third-party.ts); the heartbeat notices a dead worker within 10 s.
const { chargePayment, refundPayment } = proxyActivities<Activities>({
  startToCloseTimeout: '30 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 12, nonRetryableErrorTypes: NON_RETRYABLE },
});
// Retried until it goes out: a receiver that is down takes the webhook's own path (three
// attempts, then the worker's retrier: activities/webhooks.ts), so what fails here for longer is
// the platform's own (PostgreSQL, Kafka away), and the payment's notice must not be lost to it.
const { notifyPayment } = proxyActivities<Activities>({
  startToCloseTimeout: '15 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '1 minute' },
});

/** Changes to processPayment's commands, each kept for the runs that started before it (workflow.patched). */
export const PATCHES = {
  approvalStateWithItsWait: 'approval-state-with-its-wait', approvalDeadline: APPROVAL_DEADLINE_PATCH, approvalByConsumer: APPROVAL_BY_CONSUMER_PATCH,
} as const;

export const PAYMENT_STEPS = ['validate', 'approval', 'charge', 'ledger', 'notify'];

const failureType = (err: unknown): string | undefined => {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  return cause instanceof ApplicationFailure ? cause.type ?? undefined : undefined;
};
const failureDetails = (err: unknown): Record<string, unknown> => {
  const cause = err instanceof ActivityFailure ? err.cause : err;
  return ((cause instanceof ApplicationFailure ? cause.details?.[0] : undefined) ?? {}) as Record<string, unknown>;
};

/**
 * A payment as a saga: validate → (approval above the tenant's threshold) → charge → ledger →
 * notify. Each step that has an undo pushes it before it runs, and a failure after the charge
 * (or a cancel) runs the undos in reverse: the ledger reversed, then the charge refunded. The
 * charge's idempotency key comes from the business key or the execution, so it happens at most
 * once whatever is retried. Declines and invalid input end as PAYMENT_FAILED results; anything
 * else that stops a payment alerts an operator and fails the run.
 */
export async function processPayment(input: PaymentInput): Promise<PaymentResult> {
  const info = workflowInfo();
  const memo = info.memo as Partial<ExecutionMemo> | undefined;
  if (!memo?.tenant) throw ApplicationFailure.nonRetryable('a payment is started with its tenant in the memo', 'PaymentInvalid', { field: 'memo.tenant' });
  const ctx: PaymentContext = { tenant: memo.tenant, payment_id: info.workflowId, correlation_id: memo.correlation_id ?? info.workflowId };
  const progress = new Progress(PAYMENT_STEPS);
  const base = { payment_id: ctx.payment_id, amount: input.amount, currency: input.currency };
  const end = (state: PaymentState, extra: Partial<PaymentResult> = {}): PaymentResult => {
    progress.setState(state);
    return progress.complete({ ...base, state, ...extra });
  };
  progress.setState('PENDING');

  const requester = input.requested_by ?? input.payer.id;
  const decisions = new Decisions(requester);

  const undo: { step: string; run: () => Promise<unknown> }[] = [];
  let refunded = false;
  let refundId: string | undefined;
  try {
    let approvalRequired: boolean;
    try {
      ({ approval_required: approvalRequired } = await progress.step('validate', () => validatePayment(ctx, input)));
    } catch (err) {
      if (failureType(err) !== 'PaymentInvalid') throw err;
      const d = failureDetails(err);
      return end('PAYMENT_FAILED', { reason: 'invalid', field: String(d.field ?? '') });
    }

    let approvedBy: string | undefined;
    if (approvalRequired) {
      const timeoutMs = (input.approval_timeout_seconds ?? 86_400) * 1000;
      const awaiting = () => publishPaymentEvent(ctx, 'payment.awaiting_approval', { requester, expires_in_seconds: timeoutMs / 1000 });
      // The state and its waiting_for change in one workflow task, so a client polling the status
      // never sees AWAITING_APPROVAL while the event is still being published (waiting_for was the
      // publish activity then). Runs started before this change keep their order on replay.
      if (patched(PATCHES.approvalStateWithItsWait)) {
        await awaiting();
        progress.setState('AWAITING_APPROVAL');
      } else {
        progress.setState('AWAITING_APPROVAL');
        await awaiting();
      }
      const decision = await progress.step('approval', () => progress.waitingFor('approval', 'approve', () => decisions.wait(timeoutMs)));
      if (decision?.kind !== 'approve') {
        const reason = decision ? 'rejected' : 'approval_expired';
        await publishPaymentEvent(ctx, `payment.${reason}`, { by: decision?.by.approver ?? null, comment: decision?.by.comment ?? null });
        return end('CANCELLED', { reason, approved_by: undefined });
      }
      approvedBy = decision.by.approver;
      await publishPaymentEvent(ctx, 'payment.approved', { by: approvedBy, comment: decision.by.comment ?? null });
    }

    progress.setState('PAYMENT_PROCESSING');
    // Pushed before the charge: a charge whose answer was lost is still refunded (looked up by key).
    undo.push({ step: 'refund', run: async () => { ({ refunded, refund_id: refundId } = await refundPayment(ctx, input)); } });
    let chargeId: string;
    try {
      ({ charge_id: chargeId } = await progress.step('charge', () => chargePayment(ctx, input)));
    } catch (err) {
      const type = failureType(err);
      // Refused outright, so nothing of this payment's was charged: nothing to refund.
      if (type === 'PaymentDeclined') {
        undo.pop();
        return end('PAYMENT_FAILED', { reason: 'declined', decline_code: String(failureDetails(err).decline_code ?? 'declined') });
      }
      if (type === 'PaymentDuplicate' || type === 'PaymentRejected') {
        undo.pop();
        return end('PAYMENT_FAILED', { reason: type === 'PaymentDuplicate' ? 'duplicate' : 'rejected', charge_id: failureDetails(err).charge_id as string | undefined });
      }
      throw err;
    }

    undo.push({ step: 'reverse-ledger', run: () => reverseLedger(ctx) });
    await progress.step('ledger', () => recordLedger(ctx, input, chargeId));
    progress.setState('CONFIRMED');
    try {
      await progress.step('notify', () => notifyPayment(ctx, { charge_id: chargeId, amount: input.amount, currency: input.currency, callback_url: memo.callback_url }));
    } catch (err) {
      // A cancel still refunds (it came before the run ended); a client that cannot be told is
      // no reason to: the money moved and is booked.
      if (isCancellation(err)) throw err;
      log.warn('payment notification gave up', { error: String(err) });
    }
    return end('CONFIRMED', { charge_id: chargeId, approved_by: approvedBy });
  } catch (err) {
    const canceled = isCancellation(err);
    const failed: string[] = [];
    await CancellationScope.nonCancellable(async () => {
      for (const u of [...undo].reverse()) {
        try {
          await u.run();
        } catch (e) {
          failed.push(u.step);
          log.error('compensation failed', { step: u.step, error: String(e) });
        }
      }
    });
    const state: PaymentState = refunded ? 'REFUNDED' : canceled ? 'CANCELLED' : 'PAYMENT_FAILED';
    progress.setState(state);
    if (canceled && !failed.length) {
      await CancellationScope.nonCancellable(() => publishPaymentEvent(ctx, 'payment.cancelled', { state, refund_id: refundId ?? null }));
      throw err;
    }
    const reason = failed.length ? 'compensation_failed' : failureType(err) ?? 'failed';
    await CancellationScope.nonCancellable(() => raisePaymentAlert(ctx, { reason, state, error: String((err as Error).message ?? err), refunded }));
    if (canceled) throw err;
    throw ApplicationFailure.nonRetryable(`payment ${state === 'REFUNDED' ? 'refunded' : 'failed'}: ${(err as Error).message}`, 'PaymentFailed', {
      state, reason, refund_id: refundId ?? null, compensations_failed: failed,
    });
  }
}
