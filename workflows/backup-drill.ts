import { type ActivityOptions, ApplicationFailure, CancellationScope, isCancellation, patched, workflowInfo } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { RunbookInput, RunRecord } from '../lib/workflow-runbooks';
import { ABORT_WAITS_FOR_STEP, CLEANUP_WHILE_PAUSED, Runbook, runbookActivities } from './runbook';

type Activities = ReturnType<typeof createActivities>;
const ACTIVITY_OPTIONS: ActivityOptions = {
  startToCloseTimeout: '30 minutes',
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumAttempts: 3, nonRetryableErrorTypes: ['RestoreMismatch', 'NoPgPrograms', 'NoBackupDir'] },
};
/** The steps as an abort sees them (`settled`): teardown runs once the step under way (a scratch instance starting) has settled. */
const { acts, settled: settledActs } = runbookActivities<Activities>(ACTIVITY_OPTIONS);

export type BackupDrillParams = { keep_backup: boolean };
export const BACKUP_DRILL_STEPS = ['backup', 'scratch', 'restore', 'verify', 'teardown'];

/**
 * The backup and restore drill (seed 000): dump the platform's database in one snapshot with
 * each table's row count and checksum, restore it into a scratch PostgreSQL instance, compare,
 * and report how long each part took. The scratch instance is removed however the run ends.
 */
export async function backupDrill(input: RunbookInput<BackupDrillParams>): Promise<RunRecord> {
  const p = input.params;
  const rb = new Runbook('backup-drill', BACKUP_DRILL_STEPS, input);
  const runId = workflowInfo().workflowId;
  const t0 = Date.now();
  let file: string | undefined;
  let scratchStarted = false;
  // Runs started before an abort waited for its step replay as they ran.
  const step = patched(ABORT_WAITS_FOR_STEP) ? settledActs : acts;
  try {
    if (input.dry_run) {
      await rb.step('backup', () => acts.planBackup(), (r) => `dry run: would dump ${r.tables} tables (${r.rows} rows) from ${r.primary} into ${r.target}`);
      for (const [step, what] of [['scratch', 'would start a scratch PostgreSQL instance'], ['restore', 'would restore the dump into it'],
        ['verify', 'would compare every table\'s row count and checksum'], ['teardown', 'would remove the scratch instance']]) rb.skip(step!, `dry run: ${what}`);
      return rb.finish('COMPLETED');
    }
    const backup = await rb.step('backup', () => step.backupDatabase({ run_id: runId }),
      (r) => `${r.tables.length} tables, ${r.tables.reduce((n, t) => n + t.rows, 0)} rows, ${r.bytes} bytes in ${r.backup_ms} ms`);
    file = backup.file;
    rb.figure('backup_ms', backup.backup_ms);
    rb.figure('backup_bytes', backup.bytes);
    scratchStarted = true;
    const scratch = await rb.step('scratch', () => step.startScratchInstance({ run_id: runId }), (r) => `scratch instance on port ${r.port} in ${r.start_ms} ms`);
    const restored = await rb.step('restore', () => step.restoreBackup({ file: backup.file, scratch }), (r) => `restored in ${r.restore_ms} ms`);
    rb.figure('restore_ms', restored.restore_ms);
    const verified = await rb.step('verify', () => step.verifyRestore({ scratch, expected: backup.tables }),
      (r) => `${r.tables} tables, ${r.rows} rows: counts and checksums match`);
    rb.figure('verify_ms', verified.verify_ms);
    rb.figure('tables', verified.tables);
    rb.figure('rows', verified.rows);
    await rb.step('teardown', () => acts.removeScratchInstance({ run_id: runId, file, keep_backup: p.keep_backup }), (r) => `removed ${r.removed.length} paths`);
    rb.figure('total_ms', Date.now() - t0);
    return rb.finish('COMPLETED');
  } catch (err) {
    if (scratchStarted) {
      // Paused or not: a paused drill that is aborted must not keep its scratch instance until a resume.
      const whilePaused = patched(CLEANUP_WHILE_PAUSED);
      await CancellationScope.nonCancellable(() => rb.step('teardown', () => acts.removeScratchInstance({ run_id: runId, file, keep_backup: p.keep_backup }),
        (r) => `removed ${r.removed.length} paths after the failure`, { whilePaused })).catch(() => undefined);
    }
    rb.finish(isCancellation(err) ? 'ABORTED' : 'FAILED', err);
    if (isCancellation(err)) throw err;
    throw ApplicationFailure.nonRetryable(`backup drill failed: ${(err as Error).message}`, 'BackupDrillFailed', { state: rb.record.state });
  }
}
