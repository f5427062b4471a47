// Which ended runs the worker's closure watcher sends a webhook for, and what it says.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { closureEvent } from '../../worker/closure-webhooks';

const run = (status: string, memo: Record<string, unknown> | undefined) => ({
  workflowId: 'fgx_1', type: 'approvalRequest', status: { name: status } as never, closeTime: new Date('2026-12-05T10:00:00Z'), memo,
});
const memo = { tenant: 'acme', workflow_type: 'approval-request', correlation_id: 'c-1', callback_url: 'https://hooks.example.com/x' };

test('a timed-out or terminated run with a callback gets its webhook event; others none', () => {
  assert.deepEqual(closureEvent(run('TIMED_OUT', memo)), {
    url: 'https://hooks.example.com/x',
    event: {
      id: 'fgx_1:TIMED_OUT', type: 'workflow.timed_out', status: 'TIMED_OUT', execution_id: 'fgx_1', workflow_type: 'approval-request',
      tenant: 'acme', occurred_at: '2026-12-05T10:00:00.000Z', correlation_id: 'c-1',
    },
  });
  assert.equal(closureEvent(run('TERMINATED', memo))?.event.type, 'workflow.terminated');
  // Runs whose code sends its own webhook (workflows/interceptors.ts), and runs without a callback or a tenant.
  for (const status of ['COMPLETED', 'FAILED', 'CANCELLED', 'RUNNING']) assert.equal(closureEvent(run(status, memo)), undefined, status);
  assert.equal(closureEvent(run('TERMINATED', { ...memo, callback_url: undefined })), undefined);
  assert.equal(closureEvent(run('TERMINATED', { callback_url: memo.callback_url })), undefined);
  assert.equal(closureEvent(run('TERMINATED', undefined)), undefined);
});
