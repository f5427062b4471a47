// Each Flowgate process: bad config refused, readiness that follows its dependencies, clean SIGTERM.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { connectTemporal } from '../../lib/temporal';
import { eventually, privateServer, readyStatus, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();
const PROCESSES = ['gateway', 'admin', 'triggers', 'worker'] as const;

describe('processes refuse bad configuration with a clear message', () => {
  for (const name of PROCESSES) {
    test(`${name} exits 78 naming the bad variable`, async () => {
      const p = await spawnProcess(name, stack.env, { FLOWGATE_NATS_URL: 'http://not-nats', FLOWGATE_GATEWAY_PORT: 'eighty' });
      const { code } = await p.exited;
      assert.equal(code, 78, p.output());
      assert.match(p.output(), /invalid configuration: .*FLOWGATE_NATS_URL: must be a URL with scheme nats: or tls:/);
      assert.match(p.output(), /FLOWGATE_GATEWAY_PORT/);
    });
  }
});

describe('readiness follows dependencies', () => {
  let nats: Awaited<ReturnType<typeof privateServer>>;
  const procs: RunningProcess[] = [];
  before(async () => {
    nats = await privateServer('nats');
  });
  after(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await nats.stop();
  });

  for (const name of ['gateway', 'triggers'] as const) {
    test(`${name}: ready, not ready while NATS is down, ready again after it returns`, async () => {
      const p = await spawnProcess(name, { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL! });
      procs.push(p);
      await eventually(`${name} ready`, async () => (await readyStatus(p.statusUrl)).code === 200, 60_000);
      await nats.stop();
      await eventually(`${name} not ready`, async () => {
        const r = await readyStatus(p.statusUrl);
        return r.code === 503 && (r.body?.failing ?? []).includes('nats');
      });
      const health = await fetch(`${p.statusUrl}/healthz`);
      assert.equal(health.status, 200, 'alive while a dependency is away');
      await nats.start();
      await eventually(`${name} ready again`, async () => (await readyStatus(p.statusUrl)).code === 200, 30_000);
      const metrics = await (await fetch(`${p.statusUrl}/metrics`)).text();
      assert.match(metrics, /process_cpu_user_seconds_total/);
    });
  }
});

describe('SIGTERM: in-flight work finishes, then a clean exit', () => {
  test('gateway answers a long-poll in flight at SIGTERM, then exits 0', async () => {
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!);
    const p = await spawnProcess('gateway', stack.env);
    await eventually('gateway ready', async () => (await readyStatus(p.statusUrl)).code === 200, 60_000);
    // A workflow that waits for approval keeps the long-poll open until its deadline.
    const start = await fetch(`${p.publicUrl}/api/workflows/approval-request`, {
      method: 'POST',
      headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ subject: 'sigterm', requester: 'alice', timeout_seconds: 600 }),
    });
    assert.equal(start.status, 202);
    const { execution_id } = (await start.json()) as { execution_id: string };
    const t0 = Date.now();
    const inFlight = fetch(`${p.publicUrl}/api/workflows/${execution_id}/result?wait=3`, { headers: { authorization: `Bearer ${apiKey}` } });
    await new Promise((r) => setTimeout(r, 500));
    p.child.kill('SIGTERM');
    const res = await inFlight;
    assert.equal(res.status, 202, 'the in-flight long-poll was answered, not cut');
    const body = (await res.json()) as { status: string };
    assert.ok(['ACCEPTED', 'RUNNING'].includes(body.status));
    assert.ok(Date.now() - t0 >= 2500, 'the request ran to its deadline');
    const { code } = await p.exited;
    assert.equal(code, 0, p.output());
    assert.match(p.output(), /"msg":"stopped"/);
    await fetch(`${p.publicUrl}/health`).then(
      () => assert.fail('port still open after exit'),
      () => undefined,
    );
    const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
    await eventually('approval workflow started', async () => (await client.workflow.getHandle(execution_id).describe()).status.name === 'RUNNING').catch(() => undefined);
    await client.workflow.getHandle(execution_id).terminate('test done').catch(() => undefined);
    await client.connection.close();
  });

  for (const name of ['admin', 'triggers', 'worker'] as const) {
    test(`${name} exits 0 on SIGTERM`, async () => {
      const p = await spawnProcess(name, { ...stack.env, FLOWGATE_TASK_QUEUE: `sigterm-${name}` });
      await eventually(`${name} ready`, async () => (await readyStatus(p.statusUrl)).code === 200, 90_000);
      p.child.kill('SIGTERM');
      const { code } = await p.exited;
      assert.equal(code, 0, p.output());
      assert.match(p.output(), /"msg":"stopped"/);
      if (name === 'worker') {
        // The SDK's own lines are JSON through pino too, not the SDK's default text format.
        assert.doesNotMatch(p.output(), /^\d{4}-\d\d-\d\dT\S+ \[(INFO|WARN|ERROR)\]/m);
        const sdkLines = p.output().split('\n').filter((l) => l.includes('"component":"temporal-sdk"')).map((l) => JSON.parse(l) as { msg: string });
        assert.ok(sdkLines.some((l) => l.msg === 'Worker state changed'), p.output());
      }
    });
  }
});
