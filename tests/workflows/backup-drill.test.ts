// The backup drill's clean-up in workflow time: an abort of a paused drill removes the scratch
// instance at once instead of waiting for a resume. Activities are fakes here (the workflow's
// logic); tests/integration/dr-drills.test.ts runs the real ones on a real PostgreSQL.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { Context } from '@temporalio/activity';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { RunbookInput, RunRecord } from '../../lib/workflow-runbooks';
import { eventually } from '../helpers/stack';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

let env: TestWorkflowEnvironment;
before(async () => { env = await timeSkippingEnv(); });
after(async () => { await env?.teardown(); });

test('a paused drill that is aborted removes its scratch instance at once, without a resume', async () => {
  const called: string[] = [];
  const scratch = { port: 55432, dir: '/nonexistent/scratch' };
  const worker = await testWorker(env, 'drill1', {
    backupDatabase: async () => { called.push('backup'); return { file: '/nonexistent/dump', bytes: 1, backup_ms: 1, tables: [] }; },
    // A scratch instance slow to start, which heartbeats and so learns of the abort.
    startScratchInstance: async () => {
      called.push('scratch');
      for (;;) {
        Context.current().heartbeat();
        await Context.current().sleep(100);
      }
    },
    restoreBackup: async () => ({ restore_ms: 1 }),
    verifyRestore: async () => ({ tables: 0, rows: 0, verify_ms: 1 }),
    removeScratchInstance: async () => { called.push('teardown'); return { removed: [scratch.dir] }; },
  }, { heartbeatThrottle: '200 ms' });
  const input: RunbookInput = { params: { keep_backup: false }, requested_by: 'alice', dry_run: false };
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('backupDrill', { taskQueue: 'drill1', workflowId: `rb-${randomUUID()}`, args: [input] });
    await eventually('the scratch instance starting', async () => called.includes('scratch'), 10_000, 50);
    await handle.signal('pause');
    await eventually('the run paused', async () => (await handle.query<RunRecord>('flowgate.runbook')).state === 'PAUSED', 10_000, 50);
    await handle.cancel();
    // (A run left waiting would be timed out by the test server's skipped time, not cancelled.)
    const outcome = await Promise.race([
      handle.result().then(() => 'completed', (err: unknown) => `ended: ${(err as { cause?: Error }).cause?.name}`),
      new Promise<string>((r) => setTimeout(() => r('still running after 10 s'), 10_000)),
    ]);
    assert.equal(outcome, 'ended: CancelledFailure');
    assert.deepEqual(called, ['backup', 'scratch', 'teardown']);
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'ABORTED');
    assert.equal(record.steps.find((s) => s.name === 'teardown')!.state, 'completed');
  });
});
