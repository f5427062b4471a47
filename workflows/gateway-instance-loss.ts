import { ApplicationFailure, isCancellation, proxyActivities } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { RunbookInput, RunRecord } from '../lib/workflow-runbooks';
import { Runbook } from './runbook';

type Activities = ReturnType<typeof createActivities>;
const acts = proxyActivities<Activities>({
  startToCloseTimeout: '2 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '500 milliseconds', maximumAttempts: 3, nonRetryableErrorTypes: ['NoSuchInstance', 'NoSurvivors', 'InstanceStillServing', 'NoNats'] },
});

export type InstanceLossParams = { instance?: string; group?: string; requests: number; gone_timeout_seconds: number };
export const INSTANCE_LOSS_STEPS = ['inventory', 'probe-before', 'stop-instance', 'confirm-gone', 'probe-after', 'report'];

type Probe = { instance: string; ok: number; failed: number; p99_ms: number };
const line = (probes: Probe[]) => probes.map((p) => `${p.instance}: ${p.ok}/${p.ok + p.failed} served, p99 ${p.p99_ms} ms`).join('; ');

/**
 * Data-plane instance loss (seed 000): stop one gateway instance and prove the others keep
 * serving — every request to every survivor answered, before and after the loss.
 */
export async function gatewayInstanceLoss(input: RunbookInput<InstanceLossParams>): Promise<RunRecord> {
  const p = input.params;
  const rb = new Runbook('gateway-instance-loss', INSTANCE_LOSS_STEPS, input);
  try {
    const inv = await rb.step('inventory', () => acts.gatewayInventory({ instance: p.instance, group: p.group }),
      (r) => `stop ${r.target.instance}; ${r.survivors.length} must keep serving: ${r.survivors.map((s) => s.instance).join(', ')}`);
    const before = await rb.step('probe-before', () => acts.probeGateways({ gateways: [inv.target, ...inv.survivors], requests: p.requests }), line);
    if (input.dry_run) {
      for (const [step, what] of [['stop-instance', `would stop ${inv.target.instance}`], ['confirm-gone', 'would wait until it is gone'],
        ['probe-after', 'would probe the survivors again'], ['report', 'would report']]) rb.skip(step!, `dry run: ${what}`);
      return rb.finish('COMPLETED');
    }
    await rb.step('stop-instance', () => acts.stopGateway({ target: inv.target }), (r) => (r.requested ? `stop requested at ${r.at}` : 'already gone'));
    const gone = await rb.step('confirm-gone', () => acts.awaitGatewayGone({ target: inv.target, timeout_ms: p.gone_timeout_seconds * 1000 }), (r) => `gone after ${r.gone_ms} ms`);
    const after = await rb.step('probe-after', () => acts.probeGateways({ gateways: inv.survivors, requests: p.requests }), line);
    const failed = after.reduce((n, x) => n + x.failed, 0);
    rb.figure('survivors', inv.survivors.length);
    rb.figure('requests_served_after', after.reduce((n, x) => n + x.ok, 0));
    rb.figure('requests_failed_after', failed);
    rb.figure('gone_ms', gone.gone_ms);
    rb.figure('p99_before_ms', Math.max(...before.map((x) => x.p99_ms)));
    rb.figure('p99_after_ms', Math.max(...after.map((x) => x.p99_ms)));
    await rb.step('report', async () => {
      if (failed) throw ApplicationFailure.nonRetryable(`${failed} requests to the surviving instances failed`, 'SurvivorsFailed');
      return failed;
    }, () => `${inv.survivors.length} instances kept serving every request after losing ${inv.target.instance}`);
    return rb.finish('COMPLETED');
  } catch (err) {
    rb.finish(isCancellation(err) ? 'ABORTED' : 'FAILED', err);
    if (isCancellation(err)) throw err;
    throw ApplicationFailure.nonRetryable(`instance-loss drill failed: ${(err as Error).message}`, 'InstanceLossFailed', { state: rb.record.state });
  }
}
