// The secret rotation runbook in workflow time, with fake activities (this is the workflow's
// logic; tests/integration/runbooks.test.ts runs the real ones against OpenBao and PostgreSQL).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { RunbookInput, RunRecord } from '../../lib/workflow-runbooks';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

let env: TestWorkflowEnvironment;
before(async () => { env = await timeSkippingEnv(); });
after(async () => { await env?.teardown(); });

/** Fakes of the rotation's activities, each call recorded; `over` replaces single ones. */
function rotationFakes(calls: string[], over: Record<string, (...args: never[]) => Promise<unknown>> = {}) {
  return {
    inspectSecret: async () => ({ kind: 'api-key', labels: { current: '1' }, latest: 1, current_works: true, detail: '' }),
    createPendingSecret: async () => { calls.push('create'); return { version: '2', previous: '1' }; },
    setPendingOnTarget: async () => { calls.push('set'); return { detail: 'set' }; },
    testPendingSecret: async () => { calls.push('test'); return { detail: 'works' }; },
    finishRotation: async () => { calls.push('finish'); return { current: '2', previous: '1' }; },
    notifySecretRotated: async () => undefined,
    revokePreviousSecret: async () => ({ detail: 'revoked' }),
    rollbackPendingSecret: async (r: { version: string }) => { calls.push(`rollback:${r.version}`); return { kept: false, detail: 'rolled back' }; },
    raiseRotationAlert: async () => undefined,
    publishRunbookEvent: async () => undefined,
    ...over,
  };
}
const rotation = (over: Record<string, unknown> = {}): RunbookInput => ({ params: { secret: 'db/app', grace_seconds: 0, require_approval: false, approval_timeout_seconds: 60, ...over }, requested_by: 'alice', dry_run: false });

/** An activity held until released: `hold()` in the fake, `started` once it is in there. */
function holding() {
  let release!: () => void;
  let enter!: () => void;
  const held = new Promise<void>((r) => { release = r; });
  const started = new Promise<void>((r) => { enter = r; });
  return { release, started, hold: async () => { enter(); await held; } };
}

test('an abort during create-pending waits for it, then rolls back the version it wrote', async () => {
  const calls: string[] = [];
  const create = holding();
  const worker = await testWorker(env, 'rotate-abort', rotationFakes(calls, {
    createPendingSecret: async () => {
      await create.hold();
      calls.push('create-settled');
      return { version: '2', previous: '1' };
    },
  }));
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('rotateSecret', { taskQueue: 'rotate-abort', workflowId: `rb-${randomUUID()}`, args: [rotation()] });
    await create.started;
    await handle.cancel();
    setTimeout(create.release, 300);
    await assert.rejects(handle.result(), WorkflowFailedError);
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'ROLLED_BACK');
  });
  assert.deepEqual(calls, ['create-settled', 'rollback:2'], 'the rollback after the step settled, of the version it wrote');
});

test("revoking the previous login has time for its 30 s wait on busy sessions, and a heartbeat timeout", async () => {
  let info: { startToCloseTimeoutMs: number; heartbeatTimeoutMs?: number } | undefined;
  const worker = await testWorker(env, 'rotate1', rotationFakes([], {
    revokePreviousSecret: async () => {
      info = Context.current().info;
      return { detail: 'revoked' };
    },
  }));
  const input = rotation();
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('rotateSecret', { taskQueue: 'rotate1', workflowId: `rb-${randomUUID()}`, args: [input] });
    await handle.result();
  });
  assert.ok(info && info.startToCloseTimeoutMs >= 30_000 + 30_000, `startToCloseTimeout ${info?.startToCloseTimeoutMs} ms`);
  assert.ok(info.heartbeatTimeoutMs && info.heartbeatTimeoutMs <= 30_000, `heartbeatTimeout ${info.heartbeatTimeoutMs} ms`);
});

test('a rollback that fails for good ends the run FAILED with an alert, not with no state', async () => {
  const calls: string[] = [];
  const alerts: string[] = [];
  const worker = await testWorker(env, 'rotate-undo', rotationFakes(calls, {
    testPendingSecret: async () => { throw ApplicationFailure.nonRetryable('the new key is refused', 'RotationTestFailed'); },
    rollbackPendingSecret: async () => { throw ApplicationFailure.nonRetryable('Vault refused the destroy', 'RotationConflict'); },
    raiseRotationAlert: async (a: { reason: string }) => { alerts.push(a.reason); },
  }));
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('rotateSecret', { taskQueue: 'rotate-undo', workflowId: `rb-${randomUUID()}`, args: [rotation()] });
    await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && (err.cause as { type?: string }).type === 'RotationFailed' && /not rolled back/.test(String(err.cause?.message)));
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'FAILED');
  });
  assert.equal(alerts.length, 1);
  assert.match(alerts[0]!, /rolling back version 2 failed: Vault refused the destroy/);
});

test('an abort after the finish still tells consumers, and raises an alert naming the previous version left valid', async () => {
  const calls: string[] = [];
  const alerts: string[] = [];
  const notify = holding();
  const worker = await testWorker(env, 'rotate-abort-late', rotationFakes(calls, {
    notifySecretRotated: async () => { await notify.hold(); calls.push('notified'); },
    revokePreviousSecret: async () => { calls.push('revoked'); return { detail: 'revoked' }; },
    raiseRotationAlert: async (a: { reason: string }) => { alerts.push(a.reason); },
  }));
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('rotateSecret', { taskQueue: 'rotate-abort-late', workflowId: `rb-${randomUUID()}`, args: [rotation({ grace_seconds: 3600 })] });
    await notify.started;
    await handle.cancel();
    setTimeout(notify.release, 300);
    await assert.rejects(handle.result(), WorkflowFailedError);
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'ABORTED');
    assert.equal(record.steps.find((s) => s.name === 'finish')!.state, 'completed');
    assert.equal(record.steps.find((s) => s.name === 'notify')!.state, 'completed', 'consumers were told of the new current version');
    assert.equal(record.steps.find((s) => s.name === 'revoke-previous')!.state, 'skipped');
  });
  assert.deepEqual(calls, ['create', 'set', 'test', 'finish', 'notified'], 'notified, nothing rolled back, nothing revoked');
  assert.equal(alerts.length, 1, JSON.stringify(alerts));
  assert.match(alerts[0]!, /previous version 1 did not run to its end/);
});
