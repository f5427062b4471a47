// The config rollout's undo in workflow time: a promotion that started and did not finish puts
// every group back on the held version, not the canary alone. Activities are fakes here (this is
// the workflow's logic); tests/integration/rollout.test.ts runs the real ones on real gateways.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { RunbookInput, RunRecord } from '../../lib/workflow-runbooks';
import { eventually } from '../helpers/stack';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

let env: TestWorkflowEnvironment;
before(async () => { env = await timeSkippingEnv(); });
after(async () => { await env?.teardown(); });

const HELD = 3;
const NEW = 4;

/** A fleet whose instances never all serve the new version: the promotion's wait fails after both pins. */
function fakeRolloutActivities(pins: { group: string; version: number | null }[]) {
  let fleet = HELD;
  return {
    validateRollout: async () => ({ from: HELD, to: NEW, routes: 1 }),
    diffRollout: async () => ({ summary: 'routes: +0 -0 ~1' }),
    pinVersion: async ({ group, version }: { group: string; version: number | null }) => {
      pins.push({ group, version });
      if (group === '*' && version !== null) fleet = version;
    },
    awaitServed: async ({ group, version }: { group: string; version: number }) => {
      if (group === '*' && version === NEW) throw ApplicationFailure.nonRetryable('1 instance still serves 3', 'RolloutNotServed');
      if (group === '*' && fleet !== version) throw ApplicationFailure.nonRetryable(`the fleet is pinned to ${fleet}`, 'RolloutNotServed');
      return { instances: ['gw-1'] };
    },
    bakeCanary: async () => ({ canary: { requests: 100, error_rate: 0, p99_ms: 12 }, stable: { requests: 100, error_rate: 0, p99_ms: 11 } }),
    publishRunbookEvent: async () => undefined,
  };
}

test('a promotion that fails after the fleet-wide pin puts every group back on the held version', async () => {
  const pins: { group: string; version: number | null }[] = [];
  const worker = await testWorker(env, 'rollout1', fakeRolloutActivities(pins));
  const input: RunbookInput = {
    params: { workspace: 'acme', canary_group: 'canary', bake_seconds: 1, max_error_rate: 0.05, max_p99_ms: 2000, min_requests: 5, require_approval: false, approval_timeout_seconds: 60 },
    requested_by: 'alice', dry_run: false,
  };
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('configRollout', { taskQueue: 'rollout1', workflowId: `rb-${randomUUID()}`, args: [input] });
    await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && /restored/.test(String(err.cause?.message)));
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'ROLLED_BACK');
    assert.equal(record.steps.find((s) => s.name === 'promote')!.state, 'rolled_back');
    assert.deepEqual(pins, [
      { group: 'canary', version: NEW }, // canary
      { group: '*', version: NEW }, { group: 'canary', version: null }, // promote, whose wait then fails
      { group: '*', version: HELD }, { group: 'canary', version: null }, // restored
    ]);
  });
});

test('a bake of 10 minutes gets an activity time limit longer than 10 minutes', async () => {
  let limitMs = 0;
  const acts = { ...fakeRolloutActivities([]), awaitServed: async () => ({ instances: ['gw-1'] }) };
  const worker = await testWorker(env, 'rollout2', {
    ...acts,
    bakeCanary: async () => {
      limitMs = Context.current().info.startToCloseTimeoutMs;
      return acts.bakeCanary();
    },
  });
  const input: RunbookInput = {
    params: { workspace: 'acme', canary_group: 'canary', bake_seconds: 600, max_error_rate: 0.05, max_p99_ms: 2000, min_requests: 5, require_approval: false, approval_timeout_seconds: 60 },
    requested_by: 'alice', dry_run: false,
  };
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('configRollout', { taskQueue: 'rollout2', workflowId: `rb-${randomUUID()}`, args: [input] });
    await handle.result();
  });
  assert.ok(limitMs > 600_000, `bakeCanary's startToCloseTimeout ${limitMs} ms for a 600 s bake`);
});

test('an undo that fails for good ends the run FAILED with an alert, not with no state', async () => {
  const events: string[] = [];
  const worker = await testWorker(env, 'rollout3', {
    ...fakeRolloutActivities([]),
    // The canary group has nobody serving: neither the new version nor the restored one is ever seen.
    awaitServed: async () => { throw ApplicationFailure.nonRetryable('0 instances in group canary', 'RolloutNotServed'); },
    publishRunbookEvent: async (e: { type: string }) => { events.push(e.type); },
  });
  const input: RunbookInput = {
    params: { workspace: 'acme', canary_group: 'canary', bake_seconds: 1, max_error_rate: 0.05, max_p99_ms: 2000, min_requests: 5, require_approval: false, approval_timeout_seconds: 60 },
    requested_by: 'alice', dry_run: false,
  };
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('configRollout', { taskQueue: 'rollout3', workflowId: `rb-${randomUUID()}`, args: [input] });
    await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && (err.cause as { type?: string }).type === 'RolloutFailed' && /not restored/.test(String(err.cause?.message)));
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'FAILED');
  });
  assert.ok(events.includes('config.rollout_undo_failed'), events.join(', '));
});

test('a canary whose p99 is past the highest histogram bucket is a breach, not "no p99"', async () => {
  const pins: { group: string; version: number | null }[] = [];
  const worker = await testWorker(env, 'rollout4', {
    ...fakeRolloutActivities(pins),
    awaitServed: async () => ({ instances: ['gw-1'] }),
    bakeCanary: async () => ({ canary: { requests: 100, error_rate: 0, p99_ms: 2500, p99_over_top_bucket: true }, stable: { requests: 100, error_rate: 0, p99_ms: 11 } }),
  });
  const input: RunbookInput = {
    params: { workspace: 'acme', canary_group: 'canary', bake_seconds: 1, max_error_rate: 0.05, max_p99_ms: 3000, min_requests: 5, require_approval: false, approval_timeout_seconds: 60 },
    requested_by: 'alice', dry_run: false,
  };
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('configRollout', { taskQueue: 'rollout4', workflowId: `rb-${randomUUID()}`, args: [input] });
    await assert.rejects(handle.result(), (err: unknown) => err instanceof WorkflowFailedError && /highest bucket/.test(String(err.cause?.message)));
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'ROLLED_BACK');
  });
  assert.deepEqual(pins.at(-1), { group: 'canary', version: null }, 'the canary is released');
});

test('an abort at the approval gate closes it: the step shows the abort, and a decision sent while the canary is restored is refused as aborted', async () => {
  const pins: { group: string; version: number | null }[] = [];
  let release!: () => void;
  const undoHeld = new Promise<void>((r) => { release = r; });
  const worker = await testWorker(env, 'rollout5', {
    ...fakeRolloutActivities(pins),
    // The canary's restore takes a while (an operator's fleet is slow to converge).
    awaitServed: async ({ version }: { version: number }) => {
      if (version === HELD) await undoHeld;
      return { instances: ['gw-1'] };
    },
  });
  const input: RunbookInput = {
    params: { workspace: 'acme', canary_group: 'canary', bake_seconds: 1, max_error_rate: 0.05, max_p99_ms: 2000, min_requests: 5, require_approval: true, approval_timeout_seconds: 3600 },
    requested_by: 'alice', dry_run: false,
  };
  await worker.runUntil(async () => {
    const handle = await env.client.workflow.start('configRollout', { taskQueue: 'rollout5', workflowId: `rb-${randomUUID()}`, args: [input] });
    await eventually('the gate is open', async () => (await handle.query<RunRecord>('flowgate.runbook')).state === 'AWAITING_APPROVAL', 10_000, 50);
    await handle.cancel();
    await eventually('the canary is being restored', async () => pins.some((p) => p.group === 'canary' && p.version === null), 10_000, 50);
    const approval = handle.executeUpdate('approveStep', { args: [{ step: 'approve', approver: 'bob', role: 'operator' }] });
    const outcome = await Promise.race([
      approval.then(() => 'taken', (err: unknown) => `refused: ${String((err as { cause?: Error }).cause?.message ?? err)}`),
      new Promise<string>((r) => setTimeout(() => r('no answer after 5 s'), 5000)),
    ]);
    release();
    await assert.rejects(handle.result());
    const record = (await handle.describe()).memo?.flowgate_runbook as RunRecord;
    assert.equal(record.state, 'ROLLED_BACK');
    const approve = record.steps.find((s) => s.name === 'approve')!;
    assert.equal(approve.state, 'failed', 'the finished run shows no step awaiting approval');
    assert.equal(approve.output, 'aborted while awaiting approval');
    // Refused by the validator, so the approver is told why and nothing is recorded as taken.
    assert.match(outcome, /^refused: the run is being aborted/);
  });
});
