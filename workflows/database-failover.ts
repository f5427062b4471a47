import { type ActivityOptions, ApplicationFailure, CancellationScope, isCancellation, patched, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { RunbookInput, RunRecord } from '../lib/workflow-runbooks';
import { Runbook } from './runbook';

type Activities = ReturnType<typeof createActivities>;
const NON_RETRYABLE = ['PrimaryHealthy', 'TopologyChanged', 'FailoverInProgress', 'NoStandby', 'NoTopology'];
const ACTIVITY_OPTIONS: ActivityOptions = {
  startToCloseTimeout: '90 seconds',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '500 milliseconds', backoffCoefficient: 2, maximumInterval: '5 seconds', maximumAttempts: 10, nonRetryableErrorTypes: NON_RETRYABLE },
};
const acts = proxyActivities<Activities>(ACTIVITY_OPTIONS);
/**
 * Past the fence there is no going back: its steps are retried for up to 30 minutes (OpenBao or
 * the standby away for a while), not 10 attempts; one that still fails then fails the run, which
 * raises database.failover_failed for an operator.
 */
const { maximumAttempts: _bounded, ...unbounded } = ACTIVITY_OPTIONS.retry!;
const forwardActs = proxyActivities<Activities>({ ...ACTIVITY_OPTIONS, scheduleToCloseTimeout: '30 minutes', retry: unbounded });

export type FailoverParams = {
  cluster: string; automatic: boolean; probes: number; probe_interval_ms: number; approval_timeout_seconds: number;
  /** Set by the watchdog that saw the primary go: its first failed probe, its last WAL position and the topology it saw. */
  down_since?: string; last_primary_lsn?: string; expected_epoch?: number;
};
export const FAILOVER_STEPS = ['detect', 'approve', 'fence', 'promote', 'repoint', 'verify', 'report'];
/** patched() id of failovers that finish once the fence has begun, an abort notwithstanding; runs started before replay as they ran. */
export const FAILOVER_FINISHES_PAST_FENCE = 'failover-finishes-past-fence';

/**
 * Database failover (seed 000, "Failover & disaster recovery"): confirm the primary is down,
 * wait for an operator unless automatic, fence the old primary, promote the standby, repoint
 * every process's pool (the topology in NATS), prove a write, and report the measured RTO (from
 * the first failed probe to the verified write) and the WAL the standby had not received (RPO).
 */
export async function databaseFailover(input: RunbookInput<FailoverParams>): Promise<RunRecord> {
  const p = input.params;
  const rb = new Runbook('database-failover', FAILOVER_STEPS, input);
  try {
    if (input.dry_run) {
      const seen = await rb.step('detect', () => acts.inspectDatabase({ cluster: p.cluster }),
        (r) => `epoch ${r.epoch}; primary ${r.primary ?? 'none'} ${r.primary_up ? 'answers' : 'does not answer'}; standby ${r.standby ?? 'none'} ${r.standby_streaming ? 'streaming' : 'not streaming'}, ${r.lag_bytes ?? '?'} bytes to replay`);
      rb.skip('approve', p.automatic ? 'automatic: no approval' : 'dry run: would wait for an approval by operator or admin');
      for (const [step, what] of [
        ['fence', `would name no primary (epoch ${seen.epoch + 1}) and make ${seen.primary} read-only if it answers`],
        ['promote', `would promote ${seen.standby}`], ['repoint', `would name ${seen.standby} primary and wait for every process`],
        ['verify', 'would write and read back a row with the processes\' login'], ['report', 'would report RTO and RPO'],
      ]) rb.skip(step!, `dry run: ${what}`);
      return rb.finish('COMPLETED');
    }
    // Up to 30 probes 10 s apart: the detection's limit follows what it was asked to do.
    const detectActs = proxyActivities<Activities>({ ...ACTIVITY_OPTIONS, startToCloseTimeout: `${Math.ceil((p.probes * (p.probe_interval_ms + 5000)) / 1000) + 30} seconds` });
    const plan = await rb.step('detect', () => detectActs.detectPrimaryDown({ cluster: p.cluster, probes: p.probes, interval_ms: p.probe_interval_ms, expected_epoch: p.expected_epoch }),
      (r) => `${r.primary.host}:${r.primary.port} did not answer ${r.failed_probes} probes; standby ${r.standby.host}:${r.standby.port}`);
    const downSince = p.down_since ?? plan.down_since;
    const primaryAddress = `${plan.primary.host}:${plan.primary.port}`;
    if (p.automatic) {
      rb.skip('approve', 'automatic failover');
    } else {
      await rb.approval('approve', {
        roles: ['operator', 'admin'], timeoutMs: p.approval_timeout_seconds * 1000,
        // The approver confirms which primary is given up on.
        checkPayload: (payload) => {
          if (payload?.confirm_primary !== primaryAddress) throw new Error(`payload.confirm_primary must be ${primaryAddress}, the primary to fence`);
        },
      });
    }
    // From the fence on, the platform has no primary until the standby is promoted and named: an
    // abort cannot give the old primary back, so it would leave every process without a database
    // and the watchdog without a topology to act on. These steps run to their end (pause still
    // holds them); an abort asked meanwhile is noted in the record, and the run completes.
    const pastFence = patched(FAILOVER_FINISHES_PAST_FENCE);
    const a = pastFence ? forwardActs : acts;
    const forward = async () => {
      // After an approval the primary is probed again: it may have come back meanwhile.
      const fenced = await rb.step('fence', () => acts.fencePrimary(pastFence ? { ...plan, recheck: !p.automatic } : plan), (r) => `epoch ${r.epoch}: no primary; old primary ${r.old_primary}`);
      const promoted = await rb.step('promote', () => a.promoteStandby({ ...plan, last_primary_lsn: p.last_primary_lsn }),
        (r) => `${plan.standby.host}:${plan.standby.port} promoted in ${r.promote_ms} ms; it had received WAL up to ${r.received_lsn ?? '?'}`);
      const repointed = await rb.step('repoint', () => a.repointPlatform({ ...plan, wait_ms: 15_000 }),
        (r) => `epoch ${r.epoch}: ${r.repointed} of ${r.processes} processes follow the new primary`);
      const verified = await rb.step('verify', () => a.verifyWrites({ cluster: p.cluster, run_id: workflowInfo().workflowId }),
        (r) => `a write committed and read back on ${r.primary}`);
      const rto = Date.parse(verified.verified_at) - Date.parse(downSince);
      rb.figure('rto_ms', rto);
      if (promoted.lost_wal_bytes !== null) rb.figure('rpo_lost_wal_bytes', promoted.lost_wal_bytes);
      rb.figure('processes_repointed', repointed.repointed);
      rb.figure('processes_seen', repointed.processes);
      await rb.step('report', () => a.publishRunbookEvent({
        run_id: workflowInfo().workflowId, type: 'database.failed_over',
        data: { cluster: p.cluster, old_primary: primaryAddress, new_primary: verified.primary, epoch: fenced.epoch, rto_ms: rto, lost_wal_bytes: promoted.lost_wal_bytes },
      }), () => `RTO ${(rto / 1000).toFixed(1)} s; RPO ${promoted.lost_wal_bytes === null ? 'unknown (no WAL position of the old primary)' : `${promoted.lost_wal_bytes} bytes of WAL not received`}`);
    };
    if (!pastFence) {
      await forward();
      return rb.finish('COMPLETED');
    }
    // A paused run is resumed before the fence, where an abort still ends it; from here on it does not.
    await rb.whenRunning();
    await CancellationScope.nonCancellable(forward);
    if (CancellationScope.current().consideredCancelled) {
      rb.record.note = 'an abort was asked after the fence: the failover was finished instead, as the old primary cannot be given back';
    }
    return rb.finish('COMPLETED');
  } catch (err) {
    rb.finish(isCancellation(err) ? 'ABORTED' : 'FAILED', err);
    if (isCancellation(err)) throw err;
    await CancellationScope.nonCancellable(() => acts.publishRunbookEvent({ run_id: workflowInfo().workflowId, type: 'database.failover_failed', data: { cluster: p.cluster, reason: (err as Error).message } })).catch(() => undefined);
    throw ApplicationFailure.nonRetryable(`failover of ${p.cluster} failed: ${(err as Error).message}`, 'FailoverFailed', { state: rb.record.state });
  }
}
