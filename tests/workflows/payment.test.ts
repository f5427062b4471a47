import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { CancelledFailure, WorkflowFailedError, type WorkflowHandle } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { PaymentInput } from '../../lib/payments';
import { PROGRESS_MEMO_KEY, type ProgressRecord } from '../../lib/workflow-search-attributes';
import { approveSignal, rejectSignal } from '../../workflows/approval';
import type { processPayment } from '../../workflows/payment';
import { progressQuery } from '../../workflows/progress';
import { FAKE_THRESHOLD as THRESHOLD, paymentFakes, type PaymentActivities } from '../helpers/payment-fakes';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

/** One activity call: `at` is the test server's (skipped) time when it started. */
type Call = { name: string; attempt: number; args: unknown[]; at: number };

const MEMO = { tenant: 't1', correlation_id: 'c1' };
/** A stuck run fails its test instead of hanging the file. */
const LIMIT = { timeout: 60_000 };

/**
 * Fakes of every activity processPayment proxies (and the interceptor's webhook), each call
 * recorded with its attempt and workflow time; `overrides` replace single activities.
 */
function fakeActivities(env: TestWorkflowEnvironment, overrides: Partial<PaymentActivities> = {}) {
  const calls: Call[] = [];
  const impl: Record<string, (...args: never[]) => Promise<unknown>> = paymentFakes(overrides);
  const activities = Object.fromEntries(
    Object.entries(impl).map(([name, fn]) => [name, async (...args: never[]) => {
      const call: Call = { name, attempt: Context.current().info.attempt, args, at: Number.NaN };
      calls.push(call);
      call.at = await env.currentTimeMs();
      return fn(...args);
    }]),
  );
  const names = () => calls.map((c) => c.name);
  const callsOf = (name: string) => calls.filter((c) => c.name === name);
  const count = (name: string) => callsOf(name).length;
  const events = () => callsOf('publishPaymentEvent').map((c) => c.args[1] as string);
  return { activities, calls, names, count, events, callsOf };
}

const input = (over: Partial<PaymentInput> = {}): PaymentInput => ({
  amount: 5_000, currency: 'EUR', payer: { id: 'payer-1' }, payment_method: 'pm_card_visa', ...over,
});

/** Polls (in real time) until `check` holds; the workflow's own time stays locked meanwhile. */
async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Waits until the workflow has finished the task that handled its last signal. */
async function signalHandled(handle: WorkflowHandle): Promise<void> {
  await until('the signal to be handled', async () => {
    const events = (await handle.fetchHistory()).events ?? [];
    const lastSignal = events.map((e) => e.workflowExecutionSignaledEventAttributes != null).lastIndexOf(true);
    return lastSignal >= 0 && events.slice(lastSignal + 1).some((e) => e.workflowTaskCompletedEventAttributes != null);
  });
}

async function memoProgress(handle: WorkflowHandle): Promise<ProgressRecord | undefined> {
  return (await handle.describe()).memo?.[PROGRESS_MEMO_KEY] as ProgressRecord | undefined;
}

describe('processPayment (time skipping)', () => {
  let env: TestWorkflowEnvironment;
  before(async () => {
    env = await timeSkippingEnv();
  });
  after(async () => {
    await env?.teardown();
  });

  /** Runs `body` with a worker on a fresh task queue and a started payment. */
  async function withPayment(
    fakes: ReturnType<typeof fakeActivities>,
    args: PaymentInput,
    body: (handle: WorkflowHandle<typeof processPayment>) => Promise<void>,
  ): Promise<void> {
    const taskQueue = `payment-${randomUUID()}`;
    const worker = await testWorker(env, taskQueue, fakes.activities);
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start<typeof processPayment>('processPayment', {
        taskQueue, workflowId: `pay-${randomUUID()}`, args: [args], memo: MEMO,
      });
      await body(handle);
    });
  }

  test('below the approval threshold: validate → charge → ledger → notify, CONFIRMED', LIMIT, async () => {
    const fakes = fakeActivities(env, { validatePayment: async () => ({ approval_required: false, approval_threshold: THRESHOLD }) });
    await withPayment(fakes, input(), async (handle) => {
      const result = await handle.result();
      assert.equal(result.state, 'CONFIRMED');
      assert.equal(result.charge_id, 'ch_1');
      assert.equal(result.payment_id, handle.workflowId);
      assert.deepEqual(fakes.names(), ['validatePayment', 'chargePayment', 'recordLedger', 'notifyPayment']);
      assert.deepEqual(fakes.calls[0]!.args[0], { tenant: 't1', payment_id: handle.workflowId, correlation_id: 'c1' });
      assert.equal((await handle.query(progressQuery)).state, 'CONFIRMED');
      const memo = await memoProgress(handle);
      assert.equal(memo?.state, 'CONFIRMED');
      assert.equal(memo?.progress, 100);
    });
  });

  test('above the threshold: waits for an approval; the requester cannot approve, someone else can', LIMIT, async () => {
    const fakes = fakeActivities(env);
    await withPayment(fakes, input({ amount: 250_000, requested_by: 'alice' }), async (handle) => {
      await until('the approval wait', async () => (await handle.query(progressQuery)).waiting_for?.kind === 'approval');
      const waiting = await handle.query(progressQuery);
      assert.equal(waiting.state, 'AWAITING_APPROVAL');
      assert.equal(waiting.current_step, 'approval');
      assert.deepEqual(fakes.events(), ['payment.awaiting_approval']);

      await handle.signal(approveSignal, { approver: 'alice' });
      await signalHandled(handle);
      const still = await handle.query(progressQuery);
      assert.equal(still.state, 'AWAITING_APPROVAL');
      assert.equal(still.waiting_for?.kind, 'approval');
      assert.equal(fakes.count('chargePayment'), 0);

      await handle.signal(approveSignal, { approver: 'bob', comment: 'ok' });
      const result = await handle.result();
      assert.equal(result.state, 'CONFIRMED');
      assert.equal(result.approved_by, 'bob');
      assert.deepEqual(fakes.names().filter((n) => n !== 'publishPaymentEvent'), ['validatePayment', 'chargePayment', 'recordLedger', 'notifyPayment']);
      assert.deepEqual(fakes.events(), ['payment.awaiting_approval', 'payment.approved']);
    });
  });

  test('AWAITING_APPROVAL shows only with its approval wait, never while its event is being published', LIMIT, async () => {
    let release!: () => void;
    const released = new Promise<void>((r) => { release = r; });
    let publishing = false;
    const fakes = fakeActivities(env, {
      publishPaymentEvent: async (_ctx, type) => {
        if (type !== 'payment.awaiting_approval') return;
        publishing = true;
        await released;
      },
    });
    await withPayment(fakes, input({ amount: 250_000, requested_by: 'alice' }), async (handle) => {
      await until('the awaiting_approval event in flight', async () => publishing);
      const during = await memoProgress(handle);
      release();
      assert.notEqual(during?.state, 'AWAITING_APPROVAL', 'the status a client polls does not say AWAITING_APPROVAL yet');
      await until('the approval wait', async () => (await memoProgress(handle))?.state === 'AWAITING_APPROVAL');
      const waiting = await memoProgress(handle);
      assert.equal(waiting?.waiting_for?.kind, 'approval', 'state and waiting_for change together');
      await handle.signal(approveSignal, { approver: 'bob' });
      assert.equal((await handle.result()).state, 'CONFIRMED');
    });
  });

  test('the payer is the requester when requested_by is absent', LIMIT, async () => {
    const fakes = fakeActivities(env);
    await withPayment(fakes, input({ amount: 250_000 }), async (handle) => {
      await until('the approval wait', async () => (await handle.query(progressQuery)).waiting_for?.kind === 'approval');
      await handle.signal(approveSignal, { approver: 'payer-1' });
      await signalHandled(handle);
      assert.equal((await handle.query(progressQuery)).state, 'AWAITING_APPROVAL');
      await handle.signal(approveSignal, { approver: 'carol' });
      const result = await handle.result();
      assert.equal(result.state, 'CONFIRMED');
      assert.equal(result.approved_by, 'carol');
    });
  });

  test('an approval nobody gives expires: CANCELLED, approval_expired, no charge', LIMIT, async () => {
    const fakes = fakeActivities(env);
    await withPayment(fakes, input({ amount: 250_000, approval_timeout_seconds: 3600 }), async (handle) => {
      const result = await handle.result();
      assert.equal(result.state, 'CANCELLED');
      assert.equal(result.reason, 'approval_expired');
      // Timed between the activities around the wait: after the run closes the test server skips
      // its clock far ahead (to the run timeout), so env.currentTimeMs() then says nothing.
      const [asked, expired] = fakes.callsOf('publishPaymentEvent').map((c) => c.at);
      const waited = expired! - asked!;
      assert.ok(waited >= 3600_000 && waited < 2 * 3600_000, `the hour given, not the default day: waited ${waited} ms`);
      assert.equal(fakes.count('chargePayment'), 0);
      assert.deepEqual(fakes.events(), ['payment.awaiting_approval', 'payment.approval_expired']);
      assert.equal((await memoProgress(handle))?.state, 'CANCELLED');
    });
  });

  test('an approval that reaches the run only after its deadline: CANCELLED, approval_expired, no charge', LIMIT, async () => {
    const fakes = fakeActivities(env);
    const taskQueue = `payment-${randomUUID()}`;
    const handle = await env.client.workflow.start<typeof processPayment>('processPayment', {
      taskQueue, workflowId: `pay-${randomUUID()}`, args: [input({ amount: 250_000, requested_by: 'alice', approval_timeout_seconds: 2 })], memo: MEMO,
    });
    await (await testWorker(env, taskQueue, fakes.activities, { cache: false })).runUntil(
      until('the approval wait', async () => (await handle.query(progressQuery)).waiting_for?.kind === 'approval'));
    // The workers are away while the deadline passes; then bob approves. The next worker gets both at once.
    await sleep(2500);
    await handle.signal(approveSignal, { approver: 'bob' });
    await (await testWorker(env, taskQueue, fakes.activities)).runUntil(async () => {
      const result = await handle.result();
      assert.equal(result.state, 'CANCELLED');
      assert.equal(result.reason, 'approval_expired');
    });
    assert.equal(fakes.count('chargePayment'), 0);
  });

  test('a rejection: CANCELLED, rejected, no charge', LIMIT, async () => {
    const fakes = fakeActivities(env);
    await withPayment(fakes, input({ amount: 250_000, requested_by: 'alice' }), async (handle) => {
      await handle.signal(rejectSignal, { approver: 'carol', comment: 'not today' });
      const result = await handle.result();
      assert.equal(result.state, 'CANCELLED');
      assert.equal(result.reason, 'rejected');
      assert.equal(result.approved_by, undefined);
      assert.equal(fakes.count('chargePayment'), 0);
      assert.deepEqual(fakes.events(), ['payment.awaiting_approval', 'payment.rejected']);
      const rejected = fakes.calls.find((c) => c.args[1] === 'payment.rejected');
      assert.deepEqual(rejected?.args[2], { by: 'carol', comment: 'not today' });
    });
  });

  test('a decline: PAYMENT_FAILED with its decline code, charged once, nothing to undo', LIMIT, async () => {
    const fakes = fakeActivities(env, {
      chargePayment: async () => {
        throw ApplicationFailure.nonRetryable('card declined: insufficient_funds', 'PaymentDeclined', { decline_code: 'insufficient_funds', charge_id: 'ch_x' });
      },
    });
    await withPayment(fakes, input(), async (handle) => {
      const result = await handle.result();
      assert.equal(result.state, 'PAYMENT_FAILED');
      assert.equal(result.reason, 'declined');
      assert.equal(result.decline_code, 'insufficient_funds');
      assert.equal(fakes.count('chargePayment'), 1);
      assert.equal(fakes.count('refundPayment'), 0);
      assert.equal(fakes.count('raisePaymentAlert'), 0);
      assert.equal(fakes.count('recordLedger'), 0);
    });
  });

  test('a provider outage is retried with backoff (1 s, 2 s, 4 s) until the charge goes through', LIMIT, async () => {
    const fakes = fakeActivities(env, {
      chargePayment: async () => {
        if (Context.current().info.attempt < 4) throw ApplicationFailure.retryable('payments provider answered 503', 'ThirdPartyUnavailable');
        return { charge_id: 'ch_4' };
      },
    });
    await withPayment(fakes, input(), async (handle) => {
      const result = await handle.result();
      assert.equal(result.state, 'CONFIRMED');
      assert.equal(result.charge_id, 'ch_4');
      const charges = fakes.callsOf('chargePayment');
      assert.deepEqual(charges.map((c) => c.attempt), [1, 2, 3, 4]);
      const backoff = charges[3]!.at - charges[0]!.at;
      assert.ok(backoff >= 7_000, `at least 1 + 2 + 4 s of backoff, got ${backoff} ms`);
      assert.equal(fakes.count('refundPayment'), 0);
    });
  });

  test("an open breaker's retry delay wins over the backoff", LIMIT, async () => {
    const fakes = fakeActivities(env, {
      chargePayment: async () => {
        if (Context.current().info.attempt === 1) {
          throw ApplicationFailure.create({ type: 'BreakerOpen', message: 'breaker open for payments', nextRetryDelay: '45 seconds' });
        }
        return { charge_id: 'ch_2' };
      },
    });
    await withPayment(fakes, input(), async (handle) => {
      const result = await handle.result();
      assert.equal(result.state, 'CONFIRMED');
      const charges = fakes.callsOf('chargePayment');
      assert.deepEqual(charges.map((c) => c.attempt), [1, 2]);
      const delay = charges[1]!.at - charges[0]!.at;
      assert.ok(delay >= 45_000, `45 s between the attempts (the backoff alone is 1 s), got ${delay} ms`);
    });
  });

  test('invalid input: PAYMENT_FAILED, invalid, with the field; no charge', LIMIT, async () => {
    const fakes = fakeActivities(env, {
      validatePayment: async () => {
        throw ApplicationFailure.nonRetryable('XXX is not an ISO 4217 currency', 'PaymentInvalid', { field: 'currency', code: 'unknown_currency' });
      },
    });
    await withPayment(fakes, input({ currency: 'XXX' }), async (handle) => {
      const result = await handle.result();
      assert.equal(result.state, 'PAYMENT_FAILED');
      assert.equal(result.reason, 'invalid');
      assert.equal(result.field, 'currency');
      assert.deepEqual(fakes.names(), ['validatePayment']);
    });
  });

  test('a refused booking runs the saga backwards: ledger reversed, then refunded; alert; run fails REFUNDED', LIMIT, async () => {
    const fakes = fakeActivities(env, {
      recordLedger: async () => {
        throw ApplicationFailure.nonRetryable('ledger refused the payment: check violation', 'LedgerRejected', { sqlstate: '23514' });
      },
    });
    await withPayment(fakes, input(), async (handle) => {
      await assert.rejects(handle.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        const cause = err.cause as ApplicationFailure;
        assert.equal(cause.type, 'PaymentFailed');
        const details = cause.details?.[0] as { state: string; reason: string; refund_id: string | null; compensations_failed: string[] };
        assert.equal(details.state, 'REFUNDED');
        assert.equal(details.reason, 'LedgerRejected');
        assert.equal(details.refund_id, 're_1');
        assert.deepEqual(details.compensations_failed, []);
        return true;
      });
      assert.deepEqual(fakes.names(), ['validatePayment', 'chargePayment', 'recordLedger', 'reverseLedger', 'refundPayment', 'raisePaymentAlert']);
      assert.equal(fakes.count('recordLedger'), 1);
      assert.equal(fakes.count('raisePaymentAlert'), 1);
      const alert = fakes.calls.find((c) => c.name === 'raisePaymentAlert')!.args[1] as { reason: string; state: string; refunded: boolean };
      assert.equal(alert.reason, 'LedgerRejected');
      assert.equal(alert.state, 'REFUNDED');
      assert.equal(alert.refunded, true);
      assert.equal((await memoProgress(handle))?.state, 'REFUNDED');
    });
  });

  test('a cancel while awaiting approval ends the run cancelled, with nothing charged or refunded', LIMIT, async () => {
    const fakes = fakeActivities(env);
    await withPayment(fakes, input({ amount: 250_000 }), async (handle) => {
      await until('the approval wait', async () => (await handle.query(progressQuery)).waiting_for?.kind === 'approval');
      await handle.cancel();
      await assert.rejects(handle.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.ok(err.cause instanceof CancelledFailure, `a cancellation, got ${String(err.cause)}`);
        return true;
      });
      assert.equal(fakes.count('chargePayment'), 0);
      assert.equal(fakes.count('refundPayment'), 0);
      assert.equal(fakes.count('raisePaymentAlert'), 0);
      const cancelled = fakes.calls.filter((c) => c.args[1] === 'payment.cancelled');
      assert.equal(cancelled.length, 1);
      assert.deepEqual(cancelled[0]!.args[2], { state: 'CANCELLED', refund_id: null });
      assert.equal((await memoProgress(handle))?.state, 'CANCELLED');
    });
  });

  test('a cancel after the charge refunds it: REFUNDED, run cancelled', LIMIT, async () => {
    let ledgerSettled = false;
    let reversedAfterBooking: boolean | undefined;
    let releaseLedger!: () => void;
    const ledgerHeld = new Promise<void>((resolve) => (releaseLedger = resolve));
    const fakes = fakeActivities(env, {
      // Holds the booking until the test lets it go, so the workflow's cancel lands while the
      // ledger step is in flight; the undo must wait for the booking to settle.
      recordLedger: async () => {
        await Promise.race([ledgerHeld, Context.current().cancelled]);
        ledgerSettled = true;
        return { entries: 2 };
      },
      reverseLedger: async () => {
        reversedAfterBooking = ledgerSettled;
        return { entries: 2 };
      },
    });
    try {
      await withPayment(fakes, input(), async (handle) => {
        await until('the ledger step', () => fakes.count('recordLedger') > 0);
        await handle.cancel();
        setTimeout(releaseLedger, 300);
        await assert.rejects(handle.result(), (err: unknown) => {
          assert.ok(err instanceof WorkflowFailedError);
          assert.ok(err.cause instanceof CancelledFailure, `a cancellation, got ${String(err.cause)}`);
          return true;
        });
        assert.deepEqual(fakes.names(), [
          'validatePayment', 'chargePayment', 'recordLedger', 'reverseLedger', 'refundPayment', 'publishPaymentEvent',
        ]);
        const cancelled = fakes.calls.find((c) => c.args[1] === 'payment.cancelled');
        assert.deepEqual(cancelled?.args[2], { state: 'REFUNDED', refund_id: 're_1' });
        assert.equal(fakes.count('raisePaymentAlert'), 0);
        assert.equal((await memoProgress(handle))?.state, 'REFUNDED');
        assert.equal(reversedAfterBooking, true, 'the reversal ran after the booking settled');
      });
    } finally {
      releaseLedger();
    }
  });

  // With TRY_CANCEL a cancel would resolve the step at once and the refund would look the charge up
  // while the provider call is still in flight: a charge landing after that lookup is never refunded.
  test('a cancel during the charge refunds only after the charge has settled', { ...LIMIT }, async () => {
    let chargeSettled = false;
    let refundAfterCharge: boolean | undefined;
    const fakes = fakeActivities(env, {
      chargePayment: async () => {
        const ctx = Context.current();
        const beat = setInterval(() => ctx.heartbeat(), 200);
        try {
          await Promise.race([ctx.cancelled, sleep(3_000)]);
          return { charge_id: 'ch_late' };
        } finally {
          clearInterval(beat);
          chargeSettled = true;
        }
      },
      refundPayment: async () => {
        refundAfterCharge = chargeSettled;
        return { refunded: true, refund_id: 're_1' };
      },
    });
    await withPayment(fakes, input(), async (handle) => {
      await until('the charge step', () => fakes.count('chargePayment') > 0);
      await handle.cancel();
      await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && err.cause instanceof CancelledFailure);
      assert.equal(refundAfterCharge, true, 'the refund ran while the charge was still in flight');
    });
  });

  test('a notification that fails for minutes (PostgreSQL or Kafka away) is retried until it goes out, not given up after 5 attempts', LIMIT, async () => {
    let failures = 0;
    const fakes = fakeActivities(env, {
      validatePayment: async () => ({ approval_required: false, approval_threshold: THRESHOLD }),
      notifyPayment: async () => {
        if (failures++ < 8) throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
        return { webhook: true };
      },
    });
    await withPayment(fakes, input(), async (handle) => {
      const result = await handle.result();
      assert.equal(result.state, 'CONFIRMED');
      assert.equal(fakes.count('notifyPayment'), 9, 'tried until it went out');
      const calls = fakes.callsOf('notifyPayment');
      assert.ok(calls.at(-1)!.at - calls[0]!.at >= 120_000, `over ${calls.at(-1)!.at - calls[0]!.at} ms of workflow time`);
    });
  });
});
