import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { WorkflowFailedError } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { approveSignal, rejectSignal } from '../../workflows/approval';
import { progressQuery } from '../../workflows/progress';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

describe('approvalRequest (time skipping)', () => {
  let env: TestWorkflowEnvironment;
  before(async () => {
    env = await timeSkippingEnv();
  });
  after(async () => {
    await env?.teardown();
  });

  test('expires after its timeout with a typed, non-retryable failure', async () => {
    const worker = await testWorker(env, 'approval');
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('approvalRequest', {
        taskQueue: 'approval', workflowId: randomUUID(), args: [{ subject: 'x', requester: 'alice', timeout_seconds: 3600 }],
      });
      await assert.rejects(handle.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.equal((err.cause as { type?: string }).type, 'ApprovalExpired');
        return true;
      });
      // The run's own start and close times: the test server's clock jumps ahead once a run closes.
      const d = await handle.describe();
      const ran = d.closeTime!.getTime() - d.startTime.getTime();
      assert.ok(ran >= 3600_000 && ran < 2 * 3600_000, `an hour of workflow time passed (${ran} ms)`);
    });
  });

  test('a decision that reaches the run only after its deadline is refused: the approval expired', async () => {
    const queue = 'approval-late';
    const handle = await env.client.workflow.start('approvalRequest', {
      taskQueue: queue, workflowId: randomUUID(), args: [{ subject: 'x', requester: 'alice', timeout_seconds: 2 }],
    });
    await (await testWorker(env, queue, undefined, { cache: false })).runUntil(async () => {
      for (let i = 0; i < 100 && (await handle.query(progressQuery)).waiting_for?.kind !== 'approval'; i++) await new Promise((r) => setTimeout(r, 50));
    });
    // No worker runs: the deadline passes on the server (its clock runs in real time while no
    // result is awaited), then bob's approval arrives. The next worker gets both in one workflow task.
    await new Promise((r) => setTimeout(r, 2500));
    await handle.signal(approveSignal, { approver: 'bob' });
    await (await testWorker(env, queue)).runUntil(assert.rejects(handle.result(), (err: unknown) => {
      assert.ok(err instanceof WorkflowFailedError);
      assert.equal((err.cause as { type?: string }).type, 'ApprovalExpired');
      return true;
    }));
  });

  test('the requester cannot approve their own request; another approver can', async () => {
    const worker = await testWorker(env, 'approval2');
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('approvalRequest', {
        taskQueue: 'approval2', workflowId: randomUUID(), args: [{ subject: 'deploy', requester: 'alice', timeout_seconds: 86_400 }],
      });
      await handle.signal(approveSignal, { approver: 'alice' });
      const waiting = await handle.query(progressQuery);
      assert.equal(waiting.current_step, 'await-decision');
      assert.deepEqual(waiting.waiting_for?.kind, 'approval');
      await handle.signal(approveSignal, { approver: 'bob' });
      const result = await handle.result();
      assert.equal(result.approver, 'bob');
      assert.equal(result.decision, 'approved');
    });
  });

  test("the requester's consumer cannot decide under another name; another consumer can; the check is a patch", async () => {
    const worker = await testWorker(env, 'approval4');
    await worker.runUntil(async () => {
      const alice = { consumer_id: 'consumer-1', username: 'alice-app' };
      const handle = await env.client.workflow.start('approvalRequest', {
        taskQueue: 'approval4', workflowId: randomUUID(), args: [{ subject: 'deploy', requester: 'alice', timeout_seconds: 86_400 }],
        memo: { tenant: 't', workflow_type: 'approval-request', correlation_id: 'c', accepted_at: new Date().toISOString(), requested_by: alice },
      });
      // The gateway passes the authenticated caller as the signal's second argument.
      await handle.signal(approveSignal, { approver: 'bob' }, alice);
      await handle.signal(rejectSignal, { approver: 'carol' }, alice);
      assert.equal((await handle.query(progressQuery)).waiting_for?.kind, 'approval', "the requester's consumer is ignored, whatever name it writes");
      await handle.signal(approveSignal, { approver: 'bob' }, { consumer_id: 'consumer-2', username: 'bob-app' });
      assert.equal((await handle.result()).approver, 'bob');
      const markers = (await handle.fetchHistory()).events!.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch');
      assert.equal(markers.length, 1, 'recorded at the start: runs begun without it keep the name check alone');
    });
  });

  test('a rejection fails the run with the approver in its details', async () => {
    const worker = await testWorker(env, 'approval3');
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('approvalRequest', {
        taskQueue: 'approval3', workflowId: randomUUID(), args: [{ subject: 'deploy', requester: 'alice' }],
      });
      await handle.signal(rejectSignal, { approver: 'carol', comment: 'not today' });
      await assert.rejects(handle.result(), (err: unknown) => {
        assert.ok(err instanceof WorkflowFailedError);
        assert.equal((err.cause as { type?: string }).type, 'ApprovalRejected');
        assert.match(String((err.cause as Error).message), /carol/);
        return true;
      });
    });
  });
});
