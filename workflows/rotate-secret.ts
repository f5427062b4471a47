import { type ActivityOptions, ApplicationFailure, CancellationScope, isCancellation, patched, proxyActivities, sleep } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { RunbookInput, RunRecord } from '../lib/workflow-runbooks';
import { ABORT_WAITS_FOR_STEP, causeMessage, Runbook, runbookActivities, UNDO_FAILURE_REPORTED } from './runbook';

type Activities = ReturnType<typeof createActivities>;
const NON_RETRYABLE = ['RotationInProgress', 'RotationConflict', 'RotationTestFailed', 'UnknownSecret'];
const ACTIVITY_OPTIONS: ActivityOptions = {
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 5, nonRetryableErrorTypes: NON_RETRYABLE },
};
const { acts, settled: settledActs, undo: undoActs } = runbookActivities<Activities>(ACTIVITY_OPTIONS);
/**
 * Revoking the previous login waits up to 30 s for its busy sessions before it ends them: its
 * limit leaves room for that last resort, and its heartbeats (every 250 ms) show it is alive.
 */
const revokeActs = proxyActivities<Activities>({ ...ACTIVITY_OPTIONS, startToCloseTimeout: '2 minutes', heartbeatTimeout: '20 seconds' });

export type RotateSecretParams = { secret: string; grace_seconds: number; require_approval: boolean; approval_timeout_seconds: number };
/** patched() id of rotations that, aborted after the finish, still tell consumers and raise an alert for the previous version left live. */
export const ABORT_AFTER_FINISH_REPORTED = 'rotation-abort-after-finish-reported';
export const ROTATION_STEPS = ['inspect', 'approve', 'create-pending', 'set-on-target', 'test', 'finish', 'notify', 'revoke-previous'];

/**
 * Secret rotation after AWS Secrets Manager's protocol, on Vault KV v2: create a pending version
 * (check-and-set), set it on the target, test it there, finish (pending → current, current →
 * previous), tell every consumer, and after the grace period revoke the previous one on the
 * target. A failed test, or an abort before the finish, rolls back: current stays current.
 */
export async function rotateSecret(input: RunbookInput<RotateSecretParams>): Promise<RunRecord> {
  const p = input.params;
  const rb = new Runbook('rotate-secret', ROTATION_STEPS, input);
  const ref = { secret: p.secret };
  let pending: string | undefined;
  /** The finish's answer once it ran: the new current version, and the previous one valid on its target until the revoke. */
  let finished: { current: string; previous?: string } | undefined;
  // Runs started before an abort waited for its step replay as they ran.
  const step = patched(ABORT_WAITS_FOR_STEP) ? settledActs : acts;
  try {
    const seen = await rb.step('inspect', () => acts.inspectSecret(ref), (r) => `${r.kind}; labels ${JSON.stringify(r.labels)}; ${r.detail}`);
    if (input.dry_run) {
      rb.skip('approve', p.require_approval ? `dry run: would wait for an approval by operator or admin` : 'no approval asked');
      for (const [step, what] of [
        ['create-pending', `would write version ${seen.latest + 1} labelled pending (check-and-set on ${seen.latest})`],
        ['set-on-target', 'would set it on the target'], ['test', 'would test it on the target'],
        ['finish', 'would label it current and the current one previous'], ['notify', 'would publish secrets.rotated'],
        ['revoke-previous', `would revoke the previous version after ${p.grace_seconds} s`],
      ]) rb.skip(step!, `dry run: ${what}`);
      return rb.finish('COMPLETED');
    }
    if (p.require_approval) {
      await rb.approval('approve', {
        roles: ['operator', 'admin'], timeoutMs: p.approval_timeout_seconds * 1000,
      });
    } else {
      rb.skip('approve', 'no approval asked');
    }
    const created = await rb.step('create-pending', () => step.createPendingSecret(ref), (r) => `version ${r.version} labelled pending`);
    pending = created.version;
    const version = { ...ref, version: created.version };
    await rb.step('set-on-target', () => step.setPendingOnTarget(version), (r) => r.detail);
    await rb.step('test', () => step.testPendingSecret(version), (r) => r.detail);
    const done = await rb.step('finish', () => step.finishRotation(version), (r) => `current ${r.current}, previous ${r.previous ?? 'none'}`);
    finished = done;
    // The new version is current: consumers are told even if an abort comes meanwhile.
    const notify = () => rb.step('notify', () => acts.notifySecretRotated({ ...version, previous: done.previous }), () => 'secrets.rotated on NATS, secret.rotated on Kafka');
    if (patched(ABORT_AFTER_FINISH_REPORTED)) await CancellationScope.nonCancellable(notify);
    else await notify();
    if (done.previous) {
      const previous = { ...ref, version: done.previous };
      await rb.step('revoke-previous', async () => {
        await sleep(p.grace_seconds * 1000);
        return revokeActs.revokePreviousSecret(previous);
      }, (r) => r.detail);
    } else {
      rb.skip('revoke-previous', 'no previous version');
    }
    return rb.finish('COMPLETED');
  } catch (err) {
    // Before the finish the current secret was never touched: undo the pending one and say so.
    // The rollback keeps a version the finish made current although the run did not see it (an
    // abort during the finish): then the rotation is done, and the run says how it ended instead.
    const reported = patched(UNDO_FAILURE_REPORTED);
    let undone: Awaited<ReturnType<Activities['rollbackPendingSecret']>> | undefined;
    if (pending && !finished) {
      try {
        undone = await CancellationScope.nonCancellable(() => (reported ? undoActs : acts).rollbackPendingSecret({ ...ref, version: pending! }));
      } catch (undoErr) {
        // The rollback failed for good: a pending version may be live. The run says so and an
        // operator is told, instead of the run failing with no state.
        if (!reported) throw undoErr;
        const reason = `${causeMessage(err)}; then rolling back version ${pending} failed: ${causeMessage(undoErr)}`;
        rb.finish('FAILED', undoErr);
        await CancellationScope.nonCancellable(() => acts.raiseRotationAlert({ ...ref, reason })).catch(() => undefined);
        throw ApplicationFailure.nonRetryable(`rotation of ${p.secret} failed and was not rolled back: ${reason}`, 'RotationFailed', { state: 'FAILED' });
      }
      if (!undone.kept) {
        for (const s of ['create-pending', 'set-on-target']) rb.rolledBack(s, undone.detail);
        await CancellationScope.nonCancellable(() => acts.raiseRotationAlert({ ...ref, reason: (err as Error).message }));
      }
    }
    if (finished && isCancellation(err) && patched(ABORT_AFTER_FINISH_REPORTED)) {
      // The rotation is done; the abort stopped the grace period, so the previous version stays
      // valid on its target. An operator is told which one, to revoke it once consumers moved.
      const previous = finished.previous;
      if (previous !== undefined) {
        const left = `the revoke of previous version ${previous} did not run to its end: it may stay valid on its target`;
        if (rb.record.steps.find((s) => s.name === 'revoke-previous')?.state !== 'completed') rb.skip('revoke-previous', `aborted: ${left}`);
        rb.finish('ABORTED', err);
        await CancellationScope.nonCancellable(() => acts.raiseRotationAlert({ ...ref, reason: `aborted after the finish: ${left}` })).catch(() => undefined);
      } else {
        rb.finish('ABORTED', err);
      }
    } else if (undone && !undone.kept) {
      rb.finish('ROLLED_BACK', err);
    } else {
      rb.finish(isCancellation(err) ? 'ABORTED' : 'FAILED', err);
      if (!isCancellation(err)) await CancellationScope.nonCancellable(() => acts.raiseRotationAlert({ ...ref, reason: (err as Error).message }));
    }
    if (isCancellation(err)) throw err;
    throw ApplicationFailure.nonRetryable(`rotation of ${p.secret} ${rb.record.state === 'ROLLED_BACK' ? 'rolled back' : 'failed'}: ${(err as Error).message}`, 'RotationFailed', { state: rb.record.state });
  }
}
