// The DR drills that leave the stack whole: the backup and restore drill (a real pg_dump restored
// into a scratch PostgreSQL instance, every table compared) and the data-plane instance loss (a
// real gateway process stopped, the others probed). The failover is in tests/dr.
import assert from 'node:assert/strict';
import { existsSync, rmSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { after, describe, test } from 'node:test';
import { removeScratchPostgres, startScratchPostgres } from '../../lib/pg-server';
import { createPool } from '../../lib/postgres';
import { issueAdminToken } from '../../lib/tenants';
import { gatewayClient } from '../helpers/api';
import { eventually, readyStatus, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';

const stack = testStack();
const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 2);
const procs: RunningProcess[] = [];
after(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  await pool.end();
});

describe('the scratch PostgreSQL of the backup drill', () => {
  test("starts without stopping the worker's event loop for the seconds initdb takes", async () => {
    const root = path.join(stack.layout.dir, `scratch-probe-${randomBytes(3).toString('hex')}`);
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const t0 = Date.now();
    try {
      const s = await startScratchPostgres(stack.env.FLOWGATE_PG_BIN!, root);
      assert.ok(s.port > 0);
    } finally {
      delay.disable();
      await removeScratchPostgres(root);
    }
    const took = Date.now() - t0;
    const maxMs = delay.max / 1e6;
    assert.ok(maxMs < 500, `the event loop stood still for ${Math.round(maxMs)} ms of ${took} ms`);
  });
});

type Run = { id: string; status: string; state: string; steps: { name: string; state: string; output?: string }[]; figures: Record<string, number>; error: string | null };

async function operator() {
  const token = (await issueAdminToken(pool, null, `drill-${randomBytes(4).toString('hex')}`, 'operator')).token;
  return gatewayClient(stack.adminUrl, token).call;
}
async function runToEnd(call: Awaited<ReturnType<typeof operator>>, runbook: string, body: object, timeoutMs = 90_000): Promise<Run> {
  const started = await call('POST', `/runbooks/${runbook}/runs`, body);
  assert.equal(started.status, 201, JSON.stringify(started.body));
  let run: Run | undefined;
  await eventually(`${runbook} to end`, async () => ((run = (await call('GET', `/runs/${started.body.id}`)).body as Run).status !== 'RUNNING'), timeoutMs, 250);
  return run!;
}

describe('backup and restore drill', () => {
  test('dumps one snapshot, restores it into a scratch instance, every table matches; the scratch instance is removed', async () => {
    const call = await operator();
    const run = await runToEnd(call, 'backup-drill', {});
    assert.equal(run.status, 'COMPLETED', `${run.error} ${JSON.stringify(run.steps)}`);
    assert.deepEqual(run.steps.map((s) => s.state), ['completed', 'completed', 'completed', 'completed', 'completed']);
    assert.match(run.steps[3]!.output!, /counts and checksums match/);
    assert.ok(run.figures.tables! >= 20, `${run.figures.tables} tables`);
    assert.ok(run.figures.rows! > 0);
    for (const f of ['backup_ms', 'restore_ms', 'verify_ms', 'total_ms', 'backup_bytes']) assert.ok(run.figures[f]! > 0, f);
    const dir = stack.env.FLOWGATE_BACKUP_DIR!;
    assert.equal(existsSync(path.join(dir, `scratch-${run.id}`)), false, 'scratch instance removed');
    assert.equal(existsSync(path.join(dir, `${run.id}.dump`)), false, 'dump removed (keep_backup false)');
  });

  test('a dump kept for later is readable by its owner only (it holds every webhook secret)', async () => {
    const call = await operator();
    const run = await runToEnd(call, 'backup-drill', { params: { keep_backup: true } });
    assert.equal(run.status, 'COMPLETED', `${run.error} ${JSON.stringify(run.steps)}`);
    const file = path.join(stack.env.FLOWGATE_BACKUP_DIR!, `${run.id}.dump`);
    try {
      assert.equal(statSync(file).mode & 0o777, 0o600);
    } finally {
      rmSync(file, { force: true });
    }
  });

  test('a dry run plans the dump and creates nothing', async () => {
    const call = await operator();
    const run = await runToEnd(call, 'backup-drill', { dry_run: true });
    assert.equal(run.status, 'COMPLETED');
    assert.match(run.steps[0]!.output!, /^dry run: would dump \d+ tables/);
    assert.deepEqual(run.steps.slice(1).map((s) => s.state), ['skipped', 'skipped', 'skipped', 'skipped']);
    const dir = stack.env.FLOWGATE_BACKUP_DIR!;
    assert.equal(existsSync(path.join(dir, `${run.id}.dump`)), false);
  });
});

describe('data-plane instance loss', () => {
  test('one of three gateways is stopped; the other two serve every request', async () => {
    const group = `loss-${randomBytes(3).toString('hex')}`;
    for (let i = 0; i < 3; i++) {
      const p = await spawnProcess('gateway', stack.env, { FLOWGATE_GATEWAY_GROUP: group });
      procs.push(p);
    }
    for (const p of procs.slice(-3)) await eventually('gateway ready', async () => (await readyStatus(p.statusUrl)).code === 200, 60_000, 200);
    const call = await operator();
    const run = await runToEnd(call, 'gateway-instance-loss', { params: { group, requests: 30 } });
    assert.equal(run.status, 'COMPLETED', `${run.error} ${JSON.stringify(run.steps)}`);
    assert.equal(run.figures.survivors, 2);
    assert.equal(run.figures.requests_served_after, 60);
    assert.equal(run.figures.requests_failed_after, 0);
    // Exactly one of the three processes exited, gracefully (exit code 0 after draining).
    const mine = procs.slice(-3);
    await eventually('the stopped instance to exit', () => mine.some((p) => p.child.exitCode !== null), 10_000);
    const exited = mine.filter((p) => p.child.exitCode !== null);
    assert.equal(exited.length, 1);
    assert.equal(exited[0]!.child.exitCode, 0, exited[0]!.output().slice(-2000));
    for (const p of mine.filter((x) => x.child.exitCode === null)) assert.equal((await fetch(`${p.publicUrl}/health`)).status, 200);
  });

  test('a group of one is refused: it would leave nobody serving', async () => {
    const group = `lone-${randomBytes(3).toString('hex')}`;
    const p = await spawnProcess('gateway', stack.env, { FLOWGATE_GATEWAY_GROUP: group });
    procs.push(p);
    await eventually('gateway ready', async () => (await readyStatus(p.statusUrl)).code === 200, 60_000, 200);
    const run = await runToEnd(await operator(), 'gateway-instance-loss', { params: { group } });
    assert.equal(run.status, 'FAILED');
    assert.match(run.error!, /would leave no instance in group/);
    assert.equal(p.child.exitCode, null, 'the lone instance still runs');
    // Named with a group it is not in (the stack's gateway is in `stable`): refused, not stopped
    // while the other group is probed as if it had lost an instance.
    const instance = `gateway@${hostname()}:${p.child.pid}`;
    const named = await runToEnd(await operator(), 'gateway-instance-loss', { params: { instance, group: 'stable' } });
    assert.equal(named.status, 'FAILED', JSON.stringify(named.steps));
    assert.match(named.error!, /no gateway instance gateway@\S+ in group stable/);
    // Named alone: still the last of its own group (the stack's gateway, in another, is no survivor).
    const alone = await runToEnd(await operator(), 'gateway-instance-loss', { params: { instance } });
    assert.equal(alone.status, 'FAILED', JSON.stringify(alone.steps));
    assert.match(alone.error!, new RegExp(`would leave no instance in group ${group}`));
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(p.child.exitCode, null, 'the named instance still runs');
  });
});
