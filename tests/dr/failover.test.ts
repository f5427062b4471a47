// Database failover on a stack of its own (tests/run.sh dr): the primary is killed while clients
// write through the Admin API; the worker's watchdog starts the failover runbook, which fences,
// promotes the streaming standby and repoints every process. Every acknowledged write must be on
// the new primary, the run reports its RTO, and `stack up` then rebuilds the old primary as the
// new primary's standby.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, describe, test } from 'node:test';
import { connect } from 'nats';
import pg from 'pg';
import { failoverActivities } from '../../activities/database-failover';
import { databaseClients, readTopology, topologyBucket } from '../../lib/db-topology';
import { REPO_ROOT } from '../../stack/paths';
import { createLogger } from '../../lib/logger';
import { createPool } from '../../lib/postgres';
import { issueAdminToken } from '../../lib/tenants';
import { createVault } from '../../lib/vault';
import { reconcileDatabase } from '../../stack/database';
import { pgSuperuserUrl } from '../../stack/servers';
import { readStack, requirePid, serverSpec, startServer } from '../../stack/stack';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, testStack } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();
const RUN_ID = 'rb-database-failover-cluster-main';
const cleanup: (() => Promise<unknown>)[] = [];
after(async () => { for (const c of cleanup) await c().catch(() => undefined); });

/** One NATS connection for the file, and the topology as it is now. */
let nats: ReturnType<typeof connect> | undefined;
async function topologyNow() {
  if (!nats) {
    nats = connect({ servers: stack.env.FLOWGATE_NATS_URL });
    cleanup.push(async () => (await nats!).close());
  }
  return (await readTopology(await topologyBucket(await nats), 'main'))!.topology;
}
const natsConnection = async () => { await topologyNow(); return nats!; };

type Run = { id: string; status: string; state: string; requested_by: string; steps: { name: string; state: string; output?: string }[]; figures: Record<string, number>; error: string | null };

async function rowsOn(url: string, sql: string, params: unknown[] = []) {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query(sql, params)).rows;
  } finally {
    await c.end();
  }
}

describe('database failover', () => {
  test('the primary dies under writes: failed over automatically, no acknowledged write lost, RTO reported, the platform writes again', async (ctx) => {
    const before = await topologyNow();
    const nc = await natsConnection();
    assert.equal(before.primary?.port, stack.layout.ports.postgres);
    assert.deepEqual(before.standbys.map((n) => n.port), [stack.layout.ports.postgresReplica]);
    // Every Flowgate process follows the topology.
    const clients = await databaseClients(nc);
    assert.deepEqual(new Set(clients.map((c) => c.process)), new Set(['gateway', 'admin', 'triggers', 'worker']));

    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'dr');
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    const operator = (await issueAdminToken(pool, null, `dr-operator-${t.tenant}`, 'operator')).token;
    await pool.end();
    const asOperator = gatewayClient(stack.adminUrl, operator).call;

    // Writers: consumers created one after another; each 201 is an acknowledged commit.
    const acknowledged: string[] = [];
    let failedWrites = 0;
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        const name = `c-${i}`;
        const res = await t.admin('POST', '/consumers', { username: name }).catch(() => undefined);
        if (res?.status === 201) {
          acknowledged.push(name);
        } else {
          // The primary is gone: the write was refused; pause a little instead of spinning.
          failedWrites++;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    })();
    await eventually('some writes before the crash', () => acknowledged.length >= 20, 20_000);

    // The crash: SIGKILL, no shutdown, no checkpoint.
    const pid = requirePid(stack.layout, 'postgres');
    const killedAt = Date.now();
    const ackedBeforeKill = acknowledged.length;
    process.kill(-pid, 'SIGKILL');

    let run: Run | undefined;
    await eventually('the watchdog to start the failover and the run to end', async () => {
      const res = await asOperator('GET', `/runs/${RUN_ID}`);
      if (res.status !== 200) return false;
      run = res.body as Run;
      return run.status !== 'RUNNING';
    }, 60_000, 250);
    const endedAfterMs = Date.now() - killedAt;
    // Writes keep going a little after the failover, on the new primary.
    const ackedAtFailover = acknowledged.length;
    await eventually('writes acknowledged after the failover', () => acknowledged.length >= ackedAtFailover + 10, 20_000);
    writing = false;
    await writer;

    assert.equal(run!.status, 'COMPLETED', `run ${run!.status}: ${run!.error} ${JSON.stringify(run!.steps)}`);
    ctx.diagnostic(`RTO ${run!.figures.rto_ms} ms; ${acknowledged.length} writes acknowledged (${ackedBeforeKill} before the kill), ${failedWrites} refused during the failover`);
    assert.equal(run!.requested_by, 'db-watchdog');
    assert.deepEqual(run!.steps.map((s) => [s.name, s.state]), [
      ['detect', 'completed'], ['approve', 'skipped'], ['fence', 'completed'], ['promote', 'completed'], ['repoint', 'completed'], ['verify', 'completed'], ['report', 'completed'],
    ]);
    const rto = run!.figures.rto_ms!;
    assert.ok(rto > 0 && rto < 30_000, `RTO ${rto} ms`);
    assert.ok(rto <= endedAfterMs, `RTO ${rto} ms is measured from the first failed probe, after the kill (${endedAfterMs} ms)`);
    assert.equal(run!.figures.processes_repointed, run!.figures.processes_seen);
    assert.ok(run!.figures.processes_seen! >= 4);
    // Synchronous replication: nothing the primary had flushed was missing on the standby.
    assert.equal(run!.figures.rpo_lost_wal_bytes, 0);

    const topology = await topologyNow();
    assert.equal(topology.primary?.port, stack.layout.ports.postgresReplica);
    assert.deepEqual(topology.fenced.map((n) => n.port), [stack.layout.ports.postgres]);
    assert.ok(topology.epoch >= before.epoch + 2);

    // Every acknowledged consumer is on the new primary, none twice.
    const onNew = (await rowsOn(pgSuperuserUrl(stack.layout, 'flowgate', 'postgres-replica'),
      'SELECT username FROM consumers WHERE workspace_id = $1', [t.tenant])).map((r) => r.username as string);
    const missing = acknowledged.filter((n) => !onNew.includes(n));
    assert.deepEqual(missing, [], `${missing.length} of ${acknowledged.length} acknowledged writes lost (${ackedBeforeKill} before the kill)`);
    assert.ok(failedWrites > 0, 'writes were refused while there was no primary');
    assert.equal(new Set(onNew).size, onNew.length);

    // The whole path works on the new primary: a trigger through the gateway runs to COMPLETED.
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!.replace(`:${stack.layout.ports.postgres}/`, `:${stack.layout.ports.postgresReplica}/`));
    const accepted = await fetch(`${stack.gatewayUrl}/api/workflows/hello`, {
      method: 'POST', headers: { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'after-failover' }),
    });
    assert.equal(accepted.status, 202);
    const { status_url } = (await accepted.json()) as { status_url: string };
    await eventually('hello to complete after the failover', async () => {
      const s = await fetch(`${stack.gatewayUrl}${status_url}`, { headers: { authorization: `Bearer ${apiKey}` } });
      return ((await s.json()) as { status: string }).status === 'COMPLETED';
    }, 30_000);
  });

  test('stack up rebuilds the fenced old primary as a standby of the new one; a dry run changes nothing; a manual run refuses a healthy primary', async () => {
    const layout = readStack(stack.layout.dir);
    assert.equal(layout.dbPrimary ?? 'postgres', 'postgres', 'the state file still names the old primary until stack up');
    await startServer(layout, serverSpec('postgres'));
    await reconcileDatabase(layout, () => undefined);
    assert.equal(readStack(stack.layout.dir).dbPrimary, 'postgres-replica');
    const [standby] = await rowsOn(pgSuperuserUrl(layout, 'postgres', 'postgres'), 'SELECT pg_is_in_recovery() AS r');
    assert.equal(standby!.r, true);
    const [streaming] = await rowsOn(pgSuperuserUrl(layout, 'postgres', 'postgres-replica'),
      "SELECT count(*)::int AS n FROM pg_stat_replication WHERE state = 'streaming' AND sync_state = 'sync'");
    assert.equal(streaming!.n, 1);

    const topology = await topologyNow();
    assert.equal(topology.primary?.port, stack.layout.ports.postgresReplica);
    assert.deepEqual(topology.standbys.map((n) => n.port), [stack.layout.ports.postgres]);
    assert.deepEqual(topology.fenced, []);

    const pool = createPool(pgSuperuserUrl(layout, 'flowgate', 'postgres-replica'), 1);
    const operator = (await issueAdminToken(pool, null, `dr-op2-${Date.now()}`, 'operator')).token;
    await pool.end();
    const asOperator = gatewayClient(stack.adminUrl, operator).call;
    const dry = await asOperator('POST', '/runbooks/database-failover/runs', { dry_run: true });
    assert.equal(dry.status, 201, JSON.stringify(dry.body));
    let run: Run | undefined;
    await eventually('the dry run to end', async () => ((run = (await asOperator('GET', `/runs/${dry.body.id}`)).body as Run).status !== 'RUNNING'), 30_000, 200);
    assert.equal(run!.status, 'COMPLETED');
    assert.match(run!.steps[0]!.output!, /answers; standby .* streaming/);
    assert.deepEqual(run!.steps.slice(2).map((s) => s.state), ['skipped', 'skipped', 'skipped', 'skipped', 'skipped']);
    assert.equal((await topologyNow()).epoch, topology.epoch, 'a dry run changes nothing');

    const manual = await asOperator('POST', '/runbooks/database-failover/runs', { params: { probes: 2, probe_interval_ms: 200 } });
    assert.equal(manual.status, 201);
    await eventually('the manual run to end', async () => ((run = (await asOperator('GET', `/runs/${manual.body.id}`)).body as Run).status !== 'RUNNING'), 30_000, 200);
    assert.equal(run!.status, 'FAILED');
    assert.match(run!.error!, /answers: nothing to fail over/);
    assert.equal((await topologyNow()).epoch, topology.epoch);

    // A run that waited for its approval probes again before the fence: a primary that came back
    // meanwhile (a restart of a few seconds) is not fenced.
    const acts = failoverActivities({ vault: createVault(stack.env.FLOWGATE_VAULT_ADDR!, stack.env.FLOWGATE_VAULT_TOKEN), nats: await natsConnection(), logger: createLogger('dr-test', 'error'), databaseUrl: stack.env.FLOWGATE_DATABASE_URL! });
    const plan = { cluster: 'main', epoch: topology.epoch, primary: topology.primary!, standby: topology.standbys[0]!, recheck: true };
    await assert.rejects(acts.fencePrimary(plan), /answers again: nothing to fail over/);
    assert.equal((await topologyNow()).epoch, topology.epoch, 'not fenced');
  });

  test('with approval: the primary dies, an operator starts the failover and another approves it, both while PostgreSQL is down', async () => {
    const layout = readStack(stack.layout.dir);
    assert.equal(layout.dbPrimary, 'postgres-replica');
    const pool = createPool(pgSuperuserUrl(layout, 'flowgate', 'postgres-replica'), 1);
    const suffix = Date.now().toString(36);
    const alice = gatewayClient(stack.adminUrl, (await issueAdminToken(pool, null, `alice-${suffix}`, 'operator')).token).call;
    const bobToken = (await issueAdminToken(pool, null, `bob-${suffix}`, 'operator')).token;
    const bob = gatewayClient(stack.adminUrl, bobToken).call;
    await pool.end();
    // Used once while PostgreSQL answers: the admin process mirrors platform tokens it has seen.
    assert.equal((await alice('GET', '/runbooks')).status, 200);
    assert.equal((await bob('GET', '/runbooks')).status, 200);

    const pid = requirePid(stack.layout, 'postgres-replica');
    process.kill(-pid, 'SIGKILL');
    const started = await alice('POST', '/runbooks/database-failover/runs', { params: { probes: 2, probe_interval_ms: 500 } });
    assert.equal(started.status, 201, started.text);
    assert.equal(started.body.id, RUN_ID);
    let run: Run | undefined;
    await eventually('the gate to open', async () => ((run = (await alice('GET', `/runs/${RUN_ID}`)).body as Run).state === 'AWAITING_APPROVAL'), 30_000, 200);
    assert.equal(run!.requested_by, `alice-${suffix}`);

    const missing = await bob('POST', `/runs/${RUN_ID}/steps/approve/approve`, {});
    assert.equal(missing.status, 400, 'the payload schema wants confirm_primary');
    assert.equal(missing.body.error.details[0].field, 'body.payload.confirm_primary');
    const wrong = await bob('POST', `/runs/${RUN_ID}/steps/approve/approve`, { payload: { confirm_primary: `127.0.0.1:${stack.layout.ports.postgres}` } });
    assert.equal(wrong.status, 409);
    assert.match(wrong.body.error.message, /confirm_primary must be/);
    const own = await alice('POST', `/runs/${RUN_ID}/steps/approve/approve`, { payload: { confirm_primary: `127.0.0.1:${stack.layout.ports.postgresReplica}` } });
    assert.equal(own.status, 409);
    // Bob approves with the CLI, as the README shows an operator doing it during the outage.
    // (Run asynchronously: the test's own event loop keeps serving meanwhile.)
    const cli = await promisify(execFile)(process.execPath, ['bin/flowgate.js', 'runbook', 'approve', RUN_ID, 'approve', '--comment', 'confirmed down',
      '--payload', JSON.stringify({ confirm_primary: `127.0.0.1:${stack.layout.ports.postgresReplica}` })], {
      cwd: REPO_ROOT, encoding: 'utf8', timeout: 30_000, env: { ...process.env, FLOWGATE_ADMIN_URL: stack.adminUrl, FLOWGATE_OPERATOR_TOKEN: bobToken },
    }).catch((err: { stdout?: string; stderr?: string; message: string }) => assert.fail(`the CLI failed: ${err.stdout ?? ''}${err.stderr ?? err.message}`));
    assert.match(cli.stdout, new RegExp(`approve .* approved by bob-${suffix}`), cli.stdout);

    await eventually('the run to end', async () => ((run = (await alice('GET', `/runs/${RUN_ID}`)).body as Run).status !== 'RUNNING'), 60_000, 250);
    assert.equal(run!.status, 'COMPLETED', `${run!.error} ${JSON.stringify(run!.steps)}`);
    assert.deepEqual(run!.steps.map((s) => s.state), ['completed', 'completed', 'completed', 'completed', 'completed', 'completed', 'completed']);
    const topology = await topologyNow();
    assert.equal(topology.primary?.port, stack.layout.ports.postgres);
    // Both failovers' verified writes are on the new primary (the first one's came with the rebuild).
    const [row] = await rowsOn(pgSuperuserUrl(layout, 'flowgate', 'postgres'), 'SELECT count(*)::int AS n FROM dr_write_checks WHERE run_id = $1', [RUN_ID]);
    assert.equal(row!.n, 2);
  });
});

