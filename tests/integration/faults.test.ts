// Faults on the core journey: NATS down, Temporal down, a consumer killed between start and ack,
// poison triggers. Each test runs its own NATS (and Temporal) so it can stop them freely.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { after, describe, test } from 'node:test';
import { connect, headers as natsHeaders } from 'nats';
import pg from 'pg';
import { DB_DR_SECRET, readMeta, writeLabels } from '../../lib/secrets';
import { readCurrentSecretData } from '../../lib/third-party/credentials';
import { createVault } from '../../lib/vault';
import { pgSuperuserUrl } from '../../stack/servers';
import { logPath } from '../../stack/stack';
import { connectTemporal } from '../../lib/temporal';
import { ExecutionIds } from '../../lib/execution-ids';
import { createPool, inWorkspace } from '../../lib/postgres';
import { subjects } from '../../lib/nats';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, privateServer, readyStatus, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();
const procs: RunningProcess[] = [];
const stops: (() => Promise<void>)[] = [];
after(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  for (const s of stops) await s().catch(() => undefined);
});

async function spawnReady(name: 'gateway' | 'admin' | 'triggers' | 'worker', env: Record<string, string>, overrides: Record<string, string> = {}) {
  const p = await spawnProcess(name, env, overrides);
  procs.push(p);
  await eventually(`${name} ready`, async () => (await readyStatus(p.statusUrl)).code === 200, 90_000);
  return p;
}

const metricValue = (text: string, name: string, labels: Record<string, string>) => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
  return line ? Number(line.split(' ').at(-1)) : 0;
};

describe('NATS down', () => {
  test('the gateway answers 503 with Retry-After and a stable code, never a 2xx', async () => {
    const nats = await privateServer('nats');
    stops.push(nats.stop);
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!);
    const gw = await spawnReady('gateway', { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL! });
    const api = gatewayClient(gw.publicUrl!, apiKey);
    assert.equal((await api.start('hello', { name: 'up' })).status, 202);
    await nats.stop();
    for (let i = 0; i < 3; i++) {
      const r = await api.start('hello', { name: `down-${i}` }, { 'idempotency-key': `k-${i}` });
      assert.equal(r.status, 503, r.text);
      assert.ok(['trigger_unavailable'].includes(r.body.error.code), r.text);
      assert.equal(r.headers.get('retry-after'), '2');
      assert.equal(r.headers.get('x-workflow-execution-id'), null);
    }
    await nats.start();
    await eventually('accepting again', async () => (await api.start('hello', { name: 'back' })).status === 202, 30_000, 500);
  });
});

describe('bursts are pushed back', () => {
  test("past a tenant's bound, and past everyone's, new triggers are 429 with Retry-After; once drained, 202 again", async () => {
    const nats = await privateServer('nats');
    stops.push(nats.stop);
    const env = { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL! };
    const [a, b] = [await newTenant(stack.env.FLOWGATE_DATABASE_URL!), await newTenant(stack.env.FLOWGATE_DATABASE_URL!)];
    // No consumer runs on this NATS yet: nothing drains.
    const gw = await spawnReady('gateway', env, { FLOWGATE_TRIGGER_BACKLOG_TENANT_MAX: '5', FLOWGATE_TRIGGER_BACKLOG_MAX: '8', FLOWGATE_TRIGGER_BACKLOG_POLL_MS: '200' });
    const [apiA, apiB] = [gatewayClient(gw.publicUrl!, a.apiKey), gatewayClient(gw.publicUrl!, b.apiKey)];
    for (let i = 0; i < 5; i++) assert.equal((await apiA.start('hello', { name: `a${i}` })).status, 202);
    const full = await apiA.start('hello', { name: 'a-over' });
    assert.equal(full.status, 429, full.text);
    assert.equal(full.body.error.code, 'trigger_backlog_full');
    const wait = Number(full.headers.get('retry-after'));
    assert.ok(wait >= 1 && wait <= 60, `Retry-After ${wait}`);
    assert.equal(full.headers.get('x-workflow-execution-id'), null, 'nothing accepted');
    // Another tenant still has room under its own bound, until everyone's (8) is reached.
    for (let i = 0; i < 3; i++) assert.equal((await apiB.start('hello', { name: `b${i}` })).status, 202);
    const allFull = await apiB.start('hello', { name: 'b-over' });
    assert.equal(allFull.status, 429);
    assert.doesNotMatch(allFull.body.error.message, /\d/, `no figure of other workspaces' load: ${allFull.body.error.message}`);
    const m = await (await fetch(`${gw.statusUrl}/metrics`)).text();
    assert.ok(metricValue(m, 'workflow_trigger_pushbacks_total', { tenant: a.tenant, scope: 'tenant' }) >= 1);
    assert.ok(metricValue(m, 'workflow_trigger_pushbacks_total', { tenant: b.tenant, scope: 'all' }) >= 1);
    // A consumer starts them (the stack's worker runs them): the backlog drains, and A is accepted again.
    await spawnReady('triggers', env);
    await eventually('accepted again once drained', async () => (await apiA.start('hello', { name: 'a-later' })).status === 202, 60_000, 250);
    const text = await (await fetch(`${gw.statusUrl}/metrics`)).text();
    assert.ok(text.includes('workflow_trigger_backlog{'), 'the backlog gauge is exported');
    assert.ok(metricValue(text, 'workflow_trigger_backlog', {}) < 5);
  });
});

describe('Temporal down', () => {
  test('triggers wait in JetStream, status says ACCEPTED, and they start when Temporal returns', async () => {
    const [nats, temporal] = await Promise.all([privateServer('nats'), privateServer('temporal')]);
    stops.push(nats.stop, temporal.stop);
    const env = { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL!, FLOWGATE_TEMPORAL_ADDRESS: temporal.env.FLOWGATE_TEMPORAL_ADDRESS! };
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!);
    // Calls to Temporal for a waiting client give up after 1 s here (3 s by default).
    const bounded = { FLOWGATE_TEMPORAL_CALL_TIMEOUT_MS: '1000' };
    const [gw, triggers, admin] = await Promise.all([
      spawnReady('gateway', env, bounded),
      // A delivery budget of 1: one ordinary error dead-letters, so any redelivery that was not
      // dead-lettered shows the outage did not count (only ordinary errors do).
      spawnReady('triggers', env, { FLOWGATE_CONSUMER_MAX_DELIVER: '1' }),
      spawnReady('admin', env, bounded),
      spawnReady('worker', env),
    ]);
    const operator = (await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'tdown')).platform;
    const api = gatewayClient(gw.publicUrl!, apiKey);

    await temporal.stop();
    const accepted: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await api.start('hello', { name: `later-${i}` });
      assert.equal(r.status, 202, r.text);
      accepted.push(r.body.execution_id);
    }
    // Each trigger redelivered while Temporal is away, past the budget of 1 (nothing dead-lettered is checked below).
    await eventually('triggers redelivered while Temporal is away', async () =>
      metricValue(await (await fetch(`${triggers.statusUrl}/metrics`)).text(), 'workflow_consumer_redeliveries_total', { stream: 'FLOWGATE_TRIGGERS' }) >= 3, 20_000, 250);
    // Without Temporal, status answers from what the gateway knows, once its call to Temporal has
    // timed out (the SDK alone would retry for about 20 s); list and cancel are 503 with Retry-After.
    for (const id of accepted) {
      const t = Date.now();
      const s = await api.status(id);
      assert.equal(s.status, 200);
      assert.equal(s.body.status, 'ACCEPTED');
      assert.equal(s.body.waiting_for?.name, 'temporal-unavailable');
      assert.ok(Date.now() - t < 5000, `status answered in ${Date.now() - t} ms with a 1 s limit on Temporal calls`);
    }
    const list = await api.list('?limit=10');
    assert.equal(list.status, 503, list.text);
    assert.equal(list.body.error.code, 'temporal_unavailable');
    assert.equal(list.headers.get('retry-after'), '2');
    // Cancel and signal act on the run: 503 too, not "not started yet" (it may have been running for days).
    const cancel = await gatewayClient(gw.publicUrl!, apiKey).call('POST', `/api/workflows/${accepted[0]}/cancel`);
    assert.equal(cancel.status, 503, cancel.text);
    assert.equal(cancel.body.error.code, 'temporal_unavailable');
    assert.equal(cancel.headers.get('retry-after'), '2');
    const signal = await gatewayClient(gw.publicUrl!, apiKey).call('POST', `/api/workflows/${accepted[0]}/signals/approve`, { approver: 'bob' });
    assert.equal(signal.status, 503, signal.text);
    // The admin API's runbook runs, the same: 503 at once, not a 500 after the SDK's retries.
    const runbooks = (await (await fetch(`${admin.publicUrl}/runbooks`, { headers: { authorization: `Bearer ${operator}` } })).json()) as { data: { name: string }[] };
    const t = Date.now();
    const runs = await fetch(`${admin.publicUrl}/runbooks/${runbooks.data[0]!.name}/runs`, { headers: { authorization: `Bearer ${operator}` } });
    assert.equal(runs.status, 503, await runs.clone().text());
    assert.equal(((await runs.json()) as { error: { code: string } }).error.code, 'temporal_unavailable');
    assert.equal(runs.headers.get('retry-after'), '2');
    assert.ok(Date.now() - t < 5000, `runbook runs answered in ${Date.now() - t} ms with a 1 s limit on Temporal calls`);
    const during = await (await fetch(`${triggers.statusUrl}/metrics`)).text();
    assert.ok(metricValue(during, 'workflow_consumer_redeliveries_total', { stream: 'FLOWGATE_TRIGGERS' }) >= 3, 'retried during the outage, past the budget');
    assert.equal(metricValue(during, 'workflow_consumer_dead_letters_total', {}), 0, 'nothing dead-lettered');
    const t0 = Date.now();
    await temporal.start();
    for (const id of accepted) {
      await eventually(`${id} completed after Temporal returned`, async () => (await api.status(id)).body.status === 'COMPLETED', 90_000, 500);
    }
    console.log(`# triggers completed ${((Date.now() - t0) / 1000).toFixed(1)}s after Temporal was started again`);
  });
});

describe('PostgreSQL away from a gateway', () => {
  test('the status of a trigger still waiting in JetStream is ACCEPTED, not a 500', async () => {
    // A NATS of its own with no consumer (the trigger waits), and PostgreSQL reached through a
    // TCP relay the test cuts: the gateway serves its last config from memory meanwhile.
    const nats = await privateServer('nats');
    stops.push(nats.stop);
    const sockets = new Set<net.Socket>();
    const pgUrl = new URL(stack.env.FLOWGATE_DATABASE_URL!);
    const relay = net.createServer((client) => {
      const upstream = net.connect(Number(pgUrl.port || 5432), pgUrl.hostname);
      for (const s of [client, upstream]) { sockets.add(s); s.on('error', () => undefined); s.on('close', () => sockets.delete(s)); }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((r) => relay.listen(0, '127.0.0.1', () => r()));
    stops.push(() => new Promise((r) => { relay.close(() => r()); for (const s of sockets) s.destroy(); }));
    const relayed = new URL(pgUrl);
    relayed.host = `127.0.0.1:${(relay.address() as net.AddressInfo).port}`;
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!);
    const gw = await spawnReady('gateway', { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL!, FLOWGATE_DATABASE_URL: relayed.toString() });
    const api = gatewayClient(gw.publicUrl!, apiKey);
    const r = await api.start('hello', { name: 'queued' });
    assert.equal(r.status, 202, r.text);
    assert.equal((await api.status(r.body.execution_id)).body.status, 'ACCEPTED', 'while PostgreSQL answers');
    // PostgreSQL goes away: connections cut, new ones refused.
    relay.close();
    for (const s of sockets) s.destroy();
    const s = await api.status(r.body.execution_id);
    assert.equal(s.status, 200, s.text);
    assert.equal(s.body.status, 'ACCEPTED');
  });
});

describe('a consumer killed between Temporal start and ack', () => {
  test('redelivery to another consumer starts nothing twice: exactly one workflow', async () => {
    const nats = await privateServer('nats');
    stops.push(nats.stop);
    const env = { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL!, FLOWGATE_CONSUMER_ACK_WAIT_MS: '1500' };
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!);
    const gw = await spawnReady('gateway', env);
    const doomed = await spawnReady('triggers', env, { FLOWGATE_FAILPOINT: 'exit-after-start' });
    const api = gatewayClient(gw.publicUrl!, apiKey);
    const r = await api.start('hello', { name: 'crash' });
    assert.equal(r.status, 202);
    const id = r.body.execution_id as string;
    const died = await doomed.exited;
    assert.equal(died.signal, 'SIGKILL', 'the consumer died at the failpoint');
    assert.match(doomed.output(), /failpoint exit-after-start/);

    const survivor = await spawnReady('triggers', env);
    await eventually('the redelivered trigger to be acked as already started', async () => {
      const m = await (await fetch(`${survivor.statusUrl}/metrics`)).text();
      return metricValue(m, 'workflow_trigger_starts_total', { outcome: 'already_started' }) >= 1;
    }, 30_000, 250);
    const m = await (await fetch(`${survivor.statusUrl}/metrics`)).text();
    assert.equal(metricValue(m, 'workflow_trigger_starts_total', { outcome: 'started' }), 0, 'no second start');
    assert.ok(metricValue(m, 'workflow_consumer_redeliveries_total', { stream: 'FLOWGATE_TRIGGERS' }) >= 1);

    const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
    try {
      const runs = [];
      for await (const e of client.workflow.list({ query: `WorkflowId = '${id}'` })) runs.push(e);
      assert.equal(runs.length, 1, 'exactly one run for the execution id');
    } finally {
      await client.connection.close();
    }
    const nc = await connect({ servers: nats.env.FLOWGATE_NATS_URL });
    const info = await (await nc.jetstreamManager()).consumers.info('FLOWGATE_TRIGGERS', 'flowgate-trigger-starters');
    assert.equal(info.num_ack_pending + info.num_pending, 0, 'nothing left unacknowledged');
    await nc.close();
  });
});

describe('several consumer processes', () => {
  test('share one durable consumer: each starts some, together all, none twice', async () => {
    const nats = await privateServer('nats');
    stops.push(nats.stop);
    const env = { ...stack.env, FLOWGATE_NATS_URL: nats.env.FLOWGATE_NATS_URL!, FLOWGATE_CONSUMER_CONCURRENCY: '4' };
    const { apiKey, tenant } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!);
    const gw = await spawnReady('gateway', env);
    const consumers = [await spawnReady('triggers', env), await spawnReady('triggers', env)];
    const api = gatewayClient(gw.publicUrl!, apiKey);
    const ids = await Promise.all(Array.from({ length: 60 }, async (_, i) => (await api.start('hello', { name: `share-${i}` })).body.execution_id as string));
    assert.equal(new Set(ids).size, 60);
    const started = async () => Promise.all(consumers.map(async (c) => metricValue(await (await fetch(`${c.statusUrl}/metrics`)).text(), 'workflow_trigger_starts_total', { tenant, outcome: 'started' })));
    await eventually('all 60 started', async () => (await started()).reduce((a, b) => a + b, 0) === 60, 60_000, 250);
    const counts = await started();
    assert.ok(counts.every((n) => n > 0), `both consumers took work: ${counts.join(' + ')}`);
  });
});

describe('poison triggers', () => {
  test('a trigger that can never start is dead-lettered, counted, audited and reported FAILED', async () => {
    const { tenant, apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!);
    const id = new ExecutionIds(stack.env.FLOWGATE_EXECUTION_ID_SECRET!).mint(tenant);
    const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
    const h = natsHeaders();
    h.set('X-Request-ID', 'poison-test');
    await nc.jetstream().publish(subjects.trigger(tenant), JSON.stringify({
      execution_id: id, tenant, workflow_type: 'retired-type', input: {}, correlation_id: 'poison-test', accepted_at: new Date().toISOString(), source: 'api',
    }), { msgID: id, headers: h });
    const api = gatewayClient(stack.gatewayUrl, apiKey);
    await eventually('status FAILED', async () => (await api.status(id)).body.status === 'FAILED');
    const s = await api.status(id);
    assert.equal(s.body.error.type, 'TriggerDeadLettered');
    assert.match(s.body.error.message, /unknown workflow type retired-type/);
    assert.equal(s.body.workflow_type, 'retired-type');
    // No run to act on: closed, not an unknown signal.
    for (const r of [await api.signal(id, 'approve', { approver: 'x' }), await api.cancel(id)]) {
      assert.equal(r.status, 409, r.text);
      assert.equal(r.body.error.code, 'execution_closed');
    }
    const dl = await (await nc.jetstreamManager()).streams.getMessage('FLOWGATE_DEAD_LETTERS', { last_by_subj: subjects.deadLetter('triggers', tenant) });
    assert.match(dl.header.get('Flowgate-Dead-Letter-Reason') ?? '', /retired-type/);
    await nc.close();
    const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
    const audit = await inWorkspace(pool, tenant, (db) => db.query("SELECT action FROM audit_logs WHERE entity_id = $1", [id]));
    await pool.end();
    assert.deepEqual(audit.rows.map((r) => r.action), ['triggers.dead_lettered']);
    const m = await (await fetch(`http://127.0.0.1:${stack.layout.ports.triggersStatus}/metrics`)).text();
    assert.ok(metricValue(m, 'workflow_consumer_dead_letters_total', { tenant }) >= 1);
  });
});

describe('Vault unable to give the database probe its login', () => {
  test('is not the primary down: the watchdog starts no failover', async () => {
    const vault = createVault(stack.env.FLOWGATE_VAULT_ADDR!, stack.env.FLOWGATE_VAULT_TOKEN);
    const temporal = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, stack.env.FLOWGATE_TEMPORAL_NAMESPACE ?? 'default');
    const superuser = new pg.Client({ connectionString: pgSuperuserUrl(stack.layout) });
    await superuser.connect();
    const meta = await readMeta(vault, DB_DR_SECRET);
    const { data: login } = await readCurrentSecretData<{ username: string }>(vault, DB_DR_SECRET);
    const since = Date.now();
    try {
      // The DR login's `current` names a version that is not there: every read of it fails, as with Vault sealed.
      await writeLabels(vault, DB_DR_SECRET, { ...meta.labels, current: '9999' });
      // The watchdog's open probe session ends, so its next probes must read the login again.
      await superuser.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1', [login.username]);
      await new Promise((r) => setTimeout(r, 6000)); // six probes at FLOWGATE_DB_PROBE_MS (1 s); three failures would start a run
      const run = await temporal.workflow.getHandle('rb-database-failover-cluster-main').describe().catch(() => undefined);
      assert.ok(!run || run.startTime.getTime() < since, `a failover run started at ${run?.startTime.toISOString()}`);
      const log = readFileSync(logPath(stack.layout, 'worker'), 'utf8');
      assert.match(log, /the probe login cannot be read from Vault: this probe is skipped, not counted/);
    } finally {
      await writeLabels(vault, DB_DR_SECRET, meta.labels);
      await superuser.end();
      await temporal.connection.close();
    }
  });
});
