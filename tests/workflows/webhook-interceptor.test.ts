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

test('a webhook that cannot be signed or handed over for an hour (PostgreSQL away) is retried until it goes out', async () => {
  let failures = 0;
  const sent: WebhookEvent[] = [];
  const worker = await testWorker(env, 'hooks2', {
    composeGreeting: async (name: string) => `Hello, ${name}!`,
    deliverWebhook: async (_url: string, event: WebhookEvent) => {
      if (failures++ < 16) throw new Error('connect ECONNREFUSED 127.0.0.1:5432');
      sent.push(event);
      return { status: 200 };
    },
  });
  await worker.runUntil(async () => {
    const run = await env.client.workflow.start('hello', { taskQueue: 'hooks2', workflowId: `fgx_${randomUUID()}`, args: [{ name: 'Ada' }], memo });
    await run.result();
    assert.deepEqual(sent.map((e) => e.status), ['COMPLETED'], `after ${failures} attempts`);
  });
});

// A test server of its own: after a run whose workflow tasks failed, the test server no longer
// skips time, which the test above needs.
test('a workflow task that fails on a bug sends no FAILED webhook; a run that ends does send its own', async (t) => {
  const env = await timeSkippingEnv();
  t.after(() => env.teardown());
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
