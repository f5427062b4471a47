import { type ActivityOptions, ApplicationFailure, CancellationScope, isCancellation, patched, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { RunbookInput, RunRecord } from '../lib/workflow-runbooks';
import { ABORT_WAITS_FOR_STEP, causeMessage, Runbook, runbookActivities, SETTLED, UNDO_FAILURE_REPORTED } from './runbook';

type Activities = ReturnType<typeof createActivities>;
const ACTIVITY_OPTIONS: ActivityOptions = {
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '1 second', maximumAttempts: 3, nonRetryableErrorTypes: ['RolloutInvalid'] },
};
/** Forward steps an abort waits for (`settled`); undos retried for minutes (`undo`). */
const { acts, settled: settledActs, undo: undoActs } = runbookActivities<Activities>(ACTIVITY_OPTIONS);

export type RolloutParams = {
  workspace: string; to_version?: number; canary_group: string; bake_seconds: number;
  max_error_rate: number; max_p99_ms: number; min_requests: number; require_approval: boolean; approval_timeout_seconds: number;
};
export const ROLLOUT_STEPS = ['validate', 'diff', 'canary', 'bake', 'approve', 'promote'];

/**
 * A gateway config rollout from the version every group is held on (N) to a newer one: check
 * it, show the diff, serve it on the canary group only, bake while reading the gateways' own
 * metrics (5xx share, p99) against the thresholds, then promote to every group — or, when the
 * canary breaches, put it back on N automatically.
 */
export async function configRollout(input: RunbookInput<RolloutParams>): Promise<RunRecord> {
  const p = input.params;
  const rb = new Runbook('config-rollout', ROLLOUT_STEPS, input);
  const ws = { workspace: p.workspace };
  let canaryPinned = false;
  /** Set before the fleet-wide pin is asked for: it may take effect although the run does not see it (a lost answer, an abort). */
  let fleetPinned = false;
  let from = 0;
  // Runs started before an abort waited for its step replay as they ran.
  const waits = patched(ABORT_WAITS_FOR_STEP);
  const step = waits ? settledActs : acts;
  try {
    const v = await rb.step('validate', () => acts.validateRollout({ ...ws, to_version: p.to_version }), (r) => `version ${r.from} → ${r.to}; ${r.routes} route(s) checked`);
    from = v.from;
    await rb.step('diff', () => acts.diffRollout({ ...ws, from: v.from, to: v.to }), (r) => r.summary);
    if (input.dry_run) {
      rb.skip('canary', `dry run: would serve ${v.to} on group ${p.canary_group}`);
      rb.skip('bake', `dry run: would compare the canary with the rest for ${p.bake_seconds} s`);
      rb.skip('approve', p.require_approval ? 'dry run: would wait for an approval' : 'no approval asked');
      rb.skip('promote', `dry run: would serve ${v.to} everywhere`);
      return rb.finish('COMPLETED');
    }
    await rb.step('canary', async () => {
      canaryPinned = true;
      await step.pinVersion({ ...ws, group: p.canary_group, version: v.to });
      return step.awaitServed({ ...ws, group: p.canary_group, version: v.to });
    }, (r) => `${r.instances.length} canary instance(s) serve ${v.to}`);
    // The bake lasts bake_seconds (up to an hour) and then scrapes: its own time limit follows it.
    const bakeActs = proxyActivities<Activities>({
      ...ACTIVITY_OPTIONS, startToCloseTimeout: `${p.bake_seconds + 60} seconds`, ...(waits ? SETTLED : {}),
    });
    const baked = await rb.step('bake', () => bakeActs.bakeCanary({ canary_group: p.canary_group, seconds: p.bake_seconds, workspace: p.workspace }),
      (r) => `canary ${r.canary.requests} req, ${(r.canary.error_rate * 100).toFixed(2)} % 5xx, p99 ${r.canary.p99_ms ?? '-'} ms; rest ${r.stable.requests} req, ${(r.stable.error_rate * 100).toFixed(2)} % 5xx, p99 ${r.stable.p99_ms ?? '-'} ms`);
    rb.figure('canary_error_rate', baked.canary.error_rate);
    rb.figure('stable_error_rate', baked.stable.error_rate);
    if (baked.canary.p99_ms !== null) rb.figure('canary_p99_ms', baked.canary.p99_ms);
    if (baked.stable.p99_ms !== null) rb.figure('stable_p99_ms', baked.stable.p99_ms);
    const breach = baked.canary.requests < p.min_requests
      ? `the canary saw ${baked.canary.requests} request(s), fewer than ${p.min_requests}`
      : baked.canary.error_rate > p.max_error_rate ? `canary 5xx rate ${(baked.canary.error_rate * 100).toFixed(2)} % over ${(p.max_error_rate * 100).toFixed(2)} %`
        : baked.canary.p99_over_top_bucket ? `canary p99 over ${baked.canary.p99_ms ?? '?'} ms, the histogram's highest bucket: not shown to be under ${p.max_p99_ms} ms`
          : baked.canary.p99_ms !== null && baked.canary.p99_ms > p.max_p99_ms ? `canary p99 ${baked.canary.p99_ms} ms over ${p.max_p99_ms} ms` : undefined;
    if (breach) throw ApplicationFailure.nonRetryable(breach, 'CanaryBreached');
    if (p.require_approval) await rb.approval('approve', { roles: ['operator', 'admin'], timeoutMs: p.approval_timeout_seconds * 1000 });
    else rb.skip('approve', 'no approval asked');
    await rb.step('promote', async () => {
      fleetPinned = true;
      await step.pinVersion({ ...ws, group: '*', version: v.to });
      await step.pinVersion({ ...ws, group: p.canary_group, version: null });
      canaryPinned = false;
      return step.awaitServed({ ...ws, group: '*', version: v.to });
    }, (r) => `${r.instances.length} instance(s) serve ${v.to}`);
    return rb.finish('COMPLETED');
  } catch (err) {
    const reported = patched(UNDO_FAILURE_REPORTED);
    const undo = reported ? undoActs : acts;
    /** Runs an undo; if it fails for good, the run says so and an operator is told, instead of the run failing with no state. */
    const undoing = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await CancellationScope.nonCancellable(fn);
      } catch (undoErr) {
        if (!reported) throw undoErr;
        const reason = `${causeMessage(err)}; then restoring version ${from} ${what} failed: ${causeMessage(undoErr)}`;
        rb.finish('FAILED', undoErr);
        await CancellationScope.nonCancellable(() => acts.publishRunbookEvent({ run_id: workflowInfo().workflowId, type: 'config.rollout_undo_failed', data: { workspace: p.workspace, canary_group: p.canary_group, from, reason } })).catch(() => undefined);
        throw ApplicationFailure.nonRetryable(`rollout failed and was not restored: ${reason}`, 'RolloutFailed', { state: 'FAILED' });
      }
    };
    if (fleetPinned && patched('rollout-restores-fleet-pin')) {
      // The promotion started and did not finish: every group goes back to N, not the canary alone.
      await undoing('on every group', async () => {
        await undo.pinVersion({ ...ws, group: '*', version: from });
        await undo.pinVersion({ ...ws, group: p.canary_group, version: null });
        await undo.awaitServed({ ...ws, group: '*', version: from });
      });
      rb.rolledBack('promote', `restored version ${from} on every group`);
      rb.finish('ROLLED_BACK', err);
    } else if (canaryPinned) {
      // Restore N on the canary: the held version everyone else still serves.
      await undoing(`on ${p.canary_group}`, async () => {
        await undo.pinVersion({ ...ws, group: p.canary_group, version: null });
        await undo.awaitServed({ ...ws, group: p.canary_group, version: from });
      });
      rb.rolledBack('canary', `restored version ${from} on ${p.canary_group}`);
      rb.finish('ROLLED_BACK', err);
    } else {
      rb.finish(isCancellation(err) ? 'ABORTED' : 'FAILED', err);
    }
    if (isCancellation(err)) throw err;
    throw ApplicationFailure.nonRetryable(`rollout ${rb.record.state === 'ROLLED_BACK' ? 'restored' : 'failed'}: ${(err as Error).message}`, 'RolloutFailed', { state: rb.record.state });
  }
}
