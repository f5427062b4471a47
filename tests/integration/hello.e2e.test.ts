// The first slice through everything: gateway → JetStream → consumer → Temporal → worker → status.
import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { eventually, testStack } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();

describe('hello through the gateway', () => {
  let apiKey: string;
  before(async () => {
    ({ apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!));
  });

  test('POST /api/workflows/hello answers 202 with an execution id; the status reaches COMPLETED with the greeting', async () => {
    const res = await fetch(`${stack.gatewayUrl}/api/workflows/hello`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'e2e' }),
    });
    assert.equal(res.status, 202);
    const body = (await res.json()) as { execution_id: string; status_url: string; status: string };
    assert.equal(body.status, 'ACCEPTED');
    assert.equal(res.headers.get('x-workflow-execution-id'), body.execution_id);
    assert.equal(res.headers.get('x-workflow-status-endpoint'), body.status_url);
    assert.equal(res.headers.get('location'), body.status_url);

    // Every answer on the way, checked afterwards (eventually() retries past a failed assertion).
    const seen: { code: number; status: unknown }[] = [];
    let status: Record<string, unknown> = {};
    await eventually('hello to complete', async () => {
      const s = await fetch(`${stack.gatewayUrl}${body.status_url}`, { headers: { authorization: `Bearer ${apiKey}` } });
      status = (await s.json()) as Record<string, unknown>;
      seen.push({ code: s.status, status: status.status });
      return status.status === 'COMPLETED';
    });
    for (const a of seen) assert.ok(a.code === 200 && ['ACCEPTED', 'RUNNING', 'COMPLETED'].includes(a.status as string), `unexpected answer on the way: ${JSON.stringify(seen)}`);
    assert.equal(status.workflow_type, 'hello');
    assert.deepEqual(status.result, { greeting: 'Hello, e2e!' });
    assert.equal(status.progress, 100);
    assert.ok(typeof status.last_update === 'string');
  });
});
