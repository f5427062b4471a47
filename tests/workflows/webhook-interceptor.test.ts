// The end-of-run webhook in workflow time (workflows/interceptors.ts): sent for how a run ended,
// and never for a bug that only fails a workflow task (the run stays RUNNING, to be fixed and go on).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import type { WebhookEvent } from '../../lib/workflow-webhooks';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

let env: TestWorkflowEnvironment;
before(async () => { env = await timeSkippingEnv(); });
after(async () => { await env?.teardown(); });

const memo = { tenant: 'acme', workflow_type: 'hello', correlation_id: 'c-1', callback_url: 'https://hooks.example.com/flowgate' };

test('a workflow task that fails on a bug sends no FAILED webhook; a run that ends does send its own', async () => {
  const sent: WebhookEvent[] = [];
  const worker = await testWorker(env, 'hooks1', {
    composeGreeting: async (name: string) => `Hello, ${name}!`,
    deliverWebhook: async (_url: string, event: WebhookEvent) => { sent.push(event); return { status: 200 }; },
  });
  await worker.runUntil(async () => {
    // No input: the workflow's code reads a property of undefined (a TypeError, a bug, not a Temporal failure).
    const broken = await env.client.workflow.start('hello', { taskQueue: 'hooks1', workflowId: `fgx_${randomUUID()}`, args: [], memo });
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal((await broken.describe()).status.name, 'RUNNING', 'a workflow task failure leaves the run open');
    assert.deepEqual(sent.map((e) => e.status), [], 'and tells the receiver nothing');
    await broken.terminate('test over');

    const ok = await env.client.workflow.start('hello', { taskQueue: 'hooks1', workflowId: `fgx_${randomUUID()}`, args: [{ name: 'Ada' }], memo });
    await ok.result();
    assert.deepEqual(sent.map((e) => [e.status, e.execution_id]), [['COMPLETED', ok.workflowId]]);
  });
});
