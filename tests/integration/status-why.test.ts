// The status says why a run is stuck, and answers without a live worker or the workflow type.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NativeConnection, Worker } from '@temporalio/worker';
import { ExecutionIds } from '../../lib/execution-ids';
import { connectTemporal } from '../../lib/temporal';
import { SA } from '../../lib/workflow-search-attributes';
import { bundleWorkflows, workflowSinks } from '../../worker/main';
import { gatewayClient } from '../helpers/api';
import { eventually, testStack } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();

test('a failing activity shows as waiting_for with its attempt and last failure, also once the worker is gone', async () => {
  const { tenant, apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'why');
  const api = gatewayClient(stack.gatewayUrl, apiKey);
  const id = new ExecutionIds(stack.env.FLOWGATE_EXECUTION_ID_SECRET!).mint(tenant);
  const taskQueue = `why-${tenant}`;
  const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
  const connection = await NativeConnection.connect({ address: stack.env.FLOWGATE_TEMPORAL_ADDRESS! });
  // The real hello workflow, on a worker whose activity fails every time (the third party is down).
  const worker = await Worker.create({
    connection, taskQueue, workflowBundle: await bundleWorkflows(), sinks: workflowSinks(),
    activities: { composeGreeting: async () => { throw new Error('greeting service answered 503'); } },
  });
  try {
    await worker.runUntil(async () => {
      await client.workflow.start('hello', {
        workflowId: id, taskQueue, args: [{ name: 'stuck' }],
        memo: { tenant, workflow_type: 'hello', correlation_id: 'why-test', accepted_at: new Date().toISOString() },
        typedSearchAttributes: [{ key: SA.tenant, value: tenant }],
      });
      await eventually('a second attempt', async () => {
        const s = (await api.status(id)).body;
        return s.waiting_for?.kind === 'activity' && s.waiting_for.attempt >= 2;
      }, 30_000, 200);
    });
    const s = (await api.status(id)).body;
    assert.equal(s.status, 'RUNNING');
    assert.equal(s.current_step, 'greet');
    assert.equal(s.waiting_for.name, 'composeGreeting');
    assert.match(s.waiting_for.last_failure, /greeting service answered 503/);
    // The worker has stopped: status still comes from describe and the progress memo.
    const again = await api.status(id);
    assert.equal(again.status, 200);
    assert.equal(again.body.workflow_type, 'hello');
    assert.equal(again.body.status, 'RUNNING');
  } finally {
    await client.workflow.getHandle(id).terminate('test done').catch(() => undefined);
    await connection.close();
    await client.connection.close();
  }
});
