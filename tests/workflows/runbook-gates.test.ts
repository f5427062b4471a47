// The runbook approval gate in workflow time (time skipping): the warning event before the
// expiry, the expiry as a rejection, a decision after it refused; the failover's payload check.
// Activities are fakes here: this is the workflow's logic, the real ones run in tests/dr.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { WorkflowFailedError, WorkflowUpdateFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { RunbookInput, RunRecord, StepDecision } from '../../lib/workflow-runbooks';
import { eventually } from '../helpers/stack';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

const node = (port: number) => ({ name: `pg-${port}`, host: '127.0.0.1', port });
const PLAN = { cluster: 'main', epoch: 1, primary: node(5432), standby: node(5433) };

type Event = { type: string; data: Record<string, unknown> };

function fakeFailoverActivities(events: Event[]) {
  const now = () => Date.now();
  return {
    detectPrimaryDown: async () => ({ ...PLAN, down_since: new Date(now()).toISOString(), failed_probes: 3 }),
    fencePrimary: async (plan?: Record<string, unknown>) => { events.push({ type: 'fence', data: plan ?? {} }); return { epoch: 2, old_primary: 'unreachable: fenced in the topology' }; },
    promoteStandby: async () => ({ received_lsn: '0/3000000', replayed_lsn: '0/3000000', lost_wal_bytes: 0, already_promoted: false, promote_ms: 5 }),
    repointPlatform: async () => ({ epoch: 3, processes: 4, repointed: 4 }),
    verifyWrites: async () => ({ verified_at: new Date(now()).toISOString(), primary: '127.0.0.1:5433' }),
    publishRunbookEvent: async (e: { type: string; data: Record<string, unknown> }) => { events.push({ type: e.type, data: e.data }); },
  };
}

const input = (params: Record<string, unknown>): RunbookInput => ({
  params: { cluster: 'main', automatic: false, probes: 3, probe_interval_ms: 1000, approval_timeout_seconds: 3600, ...params }, requested_by: 'alice', dry_run: false,
});
const decision = (d: Partial<StepDecision>): StepDecision => ({ step: 'approve', approver: 'bob', role: 'operator', ...d });

describe('runbook approval gates (time skipping)', () => {
  let env: TestWorkflowEnvironment;
  before(async () => { env = await timeSkippingEnv(); });
  after(async () => { await env?.teardown(); });

  test('warns a tenth of the timeout before it expires, and expires as a rejection', async () => {
    const events: Event[] = [];
    const worker = await testWorker(env, 'gates1', fakeFailoverActivities(events));
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('databaseFailover', { taskQueue: 'gates1', workflowId: `rb-${randomUUID()}`, args: [input({})] });
      await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && /expired/.test(String(err.cause?.message)));
      const d = await handle.describe();
      const record = d.memo?.flowgate_runbook as RunRecord;
      const approve = record.steps.find((s) => s.name === 'approve')!;
      assert.equal(approve.state, 'failed');
      assert.equal(approve.output, 'approval expired');
      assert.deepEqual(record.steps.filter((s) => s.state === 'completed').map((s) => s.name), ['detect'], 'nothing after the gate ran');
      const warning = events.find((e) => e.type === 'runbook.approval_expiring');
      assert.ok(warning, `events: ${JSON.stringify(events.map((e) => e.type))}`);
      assert.equal(warning.data.step, 'approve');
      // 3600 s gate, warned 360 s before: the event's expiry is an hour after the gate opened.
      const opened = Date.parse(approve.started_at!);
      assert.equal(Date.parse(String(warning.data.expires_at)) - opened, 3600_000);
      // A decision after the expiry: the "gates-late" test below (this run has closed, and Temporal
      // refuses any update to a closed run, so a decision here would prove nothing).
    });
  });

  test("an approval that reaches the run after the gate's deadline is refused as expired, though the run has not seen its timer yet", async () => {
    const events: Event[] = [];
    const queue = 'gates-late';
    const handle = await env.client.workflow.start('databaseFailover', { taskQueue: queue, workflowId: `rb-${randomUUID()}`, args: [input({ approval_timeout_seconds: 2 })] });
    await (await testWorker(env, queue, fakeFailoverActivities(events), { cache: false })).runUntil(
      eventually('the gate is open', async () => (await handle.query<RunRecord>('flowgate.runbook')).state === 'AWAITING_APPROVAL', 5000, 50));
    // No worker runs while the deadline passes (the server's clock runs in real time meanwhile),
    // then the approval is sent: the next worker gets it in one workflow task with the timer,
    // the gate still open in the run's state.
    await new Promise((r) => setTimeout(r, 2500));
    const late = handle.executeUpdate('approveStep', { args: [decision({ payload: { confirm_primary: '127.0.0.1:5432' } })] });
    late.catch(() => undefined); // asserted below, once a worker runs
    await new Promise((r) => setTimeout(r, 300));
    await (await testWorker(env, queue, fakeFailoverActivities(events))).runUntil(async () => {
      await assert.rejects(late, (err: unknown) => {
        assert.ok(err instanceof WorkflowUpdateFailedError, String(err));
        assert.match(String(err.cause?.message), /the approval of approve expired at/);
        return true;
      });
      await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && /expired/.test(String(err.cause?.message)));
    });
  });

  test('the failover approval needs the primary confirmed in its payload, from someone other than the requester', async () => {
    const events: Event[] = [];
    const worker = await testWorker(env, 'gates2', fakeFailoverActivities(events));
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('databaseFailover', { taskQueue: 'gates2', workflowId: `rb-${randomUUID()}`, args: [input({})] });
      const refused = async (d: StepDecision, why: RegExp) => {
        await assert.rejects(handle.executeUpdate('approveStep', { args: [d] }), (err: unknown) => {
          assert.ok(err instanceof WorkflowUpdateFailedError);
          assert.match(String(err.cause?.message), why);
          return true;
        });
      };
      // Wait until the gate is open (the query answers with the record).
      for (let i = 0; i < 100; i++) {
        const r = await handle.query<RunRecord>('flowgate.runbook');
        if (r.state === 'AWAITING_APPROVAL') break;
        await new Promise((res) => setTimeout(res, 50));
      }
      await refused(decision({ payload: { confirm_primary: '127.0.0.1:5433' } }), /confirm_primary must be 127\.0\.0\.1:5432/);
      await refused(decision({ approver: 'alice', payload: { confirm_primary: '127.0.0.1:5432' } }), /requester/);
      await refused(decision({ role: 'viewer', payload: { confirm_primary: '127.0.0.1:5432' } }), /role viewer/);
      const step = await handle.executeUpdate('approveStep', { args: [decision({ payload: { confirm_primary: '127.0.0.1:5432' } })] });
      assert.equal((step as { approval?: { approved_by?: string } }).approval?.approved_by, 'bob');
      const record = (await handle.result()) as RunRecord;
      assert.equal(record.state, 'COMPLETED');
      assert.deepEqual(record.steps.map((s) => s.state), ['completed', 'completed', 'completed', 'completed', 'completed', 'completed', 'completed']);
      assert.equal(record.figures.processes_repointed, 4);
      assert.equal(record.figures.rpo_lost_wal_bytes, 0);
      assert.ok(events.some((e) => e.type === 'database.failed_over'));
      assert.equal(events.find((e) => e.type === 'fence')?.data.recheck, true, 'after an approval the primary is probed again before the fence');
    });
  });

  test('an abort after the fence does not leave the platform without a primary: the failover is finished and the abort noted', async () => {
    const events: Event[] = [];
    let release!: () => void;
    const promoting = new Promise<void>((r) => { release = r; });
    const called: string[] = [];
    const fakes = fakeFailoverActivities(events);
    const worker = await testWorker(env, 'gates-abort', {
      ...fakes,
      promoteStandby: async () => { called.push('promote'); await promoting; return fakes.promoteStandby(); },
      repointPlatform: async () => { called.push('repoint'); return fakes.repointPlatform(); },
      verifyWrites: async () => { called.push('verify'); return fakes.verifyWrites(); },
    });
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('databaseFailover', { taskQueue: 'gates-abort', workflowId: `rb-${randomUUID()}`, args: [input({ automatic: true })] });
      await eventually('the standby being promoted', async () => called.includes('promote'), 10_000, 50);
      await handle.cancel();
      await new Promise((r) => setTimeout(r, 300)); // the cancellation reaches the run first
      release();
      const record = (await handle.result()) as RunRecord;
      assert.deepEqual(called, ['promote', 'repoint', 'verify'], 'the new primary was named and proven');
      assert.equal(record.state, 'COMPLETED');
      assert.match(record.note ?? '', /abort was asked after the fence/);
      assert.ok(events.some((e) => e.type === 'database.failed_over'));
    });
  });

  test('past the fence, a step that keeps failing (OpenBao away for minutes) is retried until it succeeds, not given up after 10 attempts', async () => {
    const events: Event[] = [];
    let failures = 0;
    const fenced: unknown[] = [];
    const fakes = fakeFailoverActivities(events);
    const worker = await testWorker(env, 'gates-retry', {
      ...fakes,
      fencePrimary: async (plan: Record<string, unknown>) => { fenced.push(plan); return fakes.fencePrimary(plan); },
      promoteStandby: async () => {
        if (failures++ < 12) throw new Error('connect ECONNREFUSED 127.0.0.1:8200');
        return fakes.promoteStandby();
      },
    });
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('databaseFailover', { taskQueue: 'gates-retry', workflowId: `rb-${randomUUID()}`, args: [input({ automatic: true })] });
      const record = (await handle.result()) as RunRecord;
      assert.equal(record.state, 'COMPLETED');
      assert.equal(failures, 13);
      assert.equal((fenced[0] as { recheck?: boolean }).recheck, false, 'an automatic run fences at once after its detection');
    });
  });

  test('a paused failover aborted before its fence ends ABORTED, and fences nothing', async () => {
    const events: Event[] = [];
    let release!: () => void;
    const detecting = new Promise<void>((r) => { release = r; });
    let detectStarted = false;
    const fakes = fakeFailoverActivities(events);
    const worker = await testWorker(env, 'gates-paused', { ...fakes, detectPrimaryDown: async () => { detectStarted = true; await detecting; return fakes.detectPrimaryDown(); } });
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('databaseFailover', { taskQueue: 'gates-paused', workflowId: `rb-${randomUUID()}`, args: [input({ automatic: true })] });
      await eventually('detecting', async () => detectStarted, 10_000, 50);
      await handle.signal('pause');
      release();
      await eventually('paused after the detection', async () => (await handle.query<RunRecord>('flowgate.runbook')).steps[0]!.state === 'completed', 10_000, 50);
      await handle.cancel();
      await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && /cancel/i.test(String(err.cause?.name ?? err.cause?.message)));
      const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
      assert.equal(record.state, 'ABORTED');
      assert.equal(events.filter((e) => e.type === 'fence').length, 0, 'nothing fenced');
    });
  });

  test('past the fence, a step that fails for good (30 minutes of retries) fails the run and tells an operator', async () => {
    const events: Event[] = [];
    const fakes = fakeFailoverActivities(events);
    const worker = await testWorker(env, 'gates-forever', { ...fakes, promoteStandby: async () => { throw new Error('the standby refuses connections'); } });
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('databaseFailover', { taskQueue: 'gates-forever', workflowId: `rb-${randomUUID()}`, args: [input({ automatic: true })] });
      await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && /failover of main failed/.test(String(err.cause?.message)));
      assert.ok(events.some((e) => e.type === 'database.failover_failed'), 'an operator is told');
    });
  });
});
