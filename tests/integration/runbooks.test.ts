// Runbooks through the Admin API on the real stack: who may run and approve them, dry runs,
// and secret rotation of the sandbox provider's API key and of the processes' PostgreSQL login.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, describe, test } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { connect } from 'nats';
import pg from 'pg';
import { secretActivities } from '../../activities/secrets';
import { loadConfig } from '../../lib/config';
import { createKafka, TOPICS } from '../../lib/kafka';
import { KafkaBatcher } from '../../lib/kafka-batcher';
import { createLogger } from '../../lib/logger';
import { asPlatform, createPool } from '../../lib/postgres';
import { PLATFORM_TENANT } from '../../lib/runbooks';
import { DB_APP_SECRET, readMeta, readVersion, SECRETS, writeLabels } from '../../lib/secrets';
import { connectTemporal } from '../../lib/temporal';
import { ensureWorkspace, issueAdminToken } from '../../lib/tenants';
import { thirdPartySecretPath } from '../../lib/third-party/credentials';
import { PAYMENTS_SERVICE } from '../../lib/third-party/services';
import { createVault } from '../../lib/vault';
import { SA } from '../../lib/workflow-search-attributes';
import { pgSuperuserUrl } from '../../stack/servers';
import { gatewayClient } from '../helpers/api';
import { sandboxControl } from '../helpers/sandbox';
import { eventually, metric, testStack } from '../helpers/stack';
import { newTenant } from '../helpers/tenant';

const stack = testStack();
const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 2);
const vault = createVault(stack.env.FLOWGATE_VAULT_ADDR!, stack.env.FLOWGATE_VAULT_TOKEN);
const sandbox = sandboxControl(`http://127.0.0.1:${stack.layout.ports.paymentSandbox}`);
const API_KEY = thirdPartySecretPath(PAYMENTS_SERVICE);
after(() => pool.end());

/** What a test opened, closed after the file even when an assertion failed. */
const cleanup: (() => Promise<unknown>)[] = [];
after(async () => { for (const c of cleanup) await c().catch(() => undefined); });

async function tokens() {
  const suffix = randomBytes(4).toString('hex');
  const ws = `rb-${suffix}`;
  await ensureWorkspace(pool, ws, 'runbook tests');
  const t = {
    alice: (await issueAdminToken(pool, null, `alice-${suffix}`, 'operator')).token,
    bob: (await issueAdminToken(pool, null, `bob-${suffix}`, 'operator')).token,
    developer: (await issueAdminToken(pool, null, `dev-${suffix}`, 'developer')).token,
    viewer: (await issueAdminToken(pool, null, `view-${suffix}`, 'viewer')).token,
    workspaceOperator: (await issueAdminToken(pool, ws, `wsop-${suffix}`, 'operator')).token,
  };
  const as = (token: string) => gatewayClient(stack.adminUrl, token).call;
  return { ...t, as, names: { alice: `alice-${suffix}`, bob: `bob-${suffix}` }, cleanup };
}

type Run = { id: string; status: string; state: string; steps: { name: string; state: string; output?: string; approval?: { approved_by?: string } }[]; error: string | null };
const runOf = async (call: ReturnType<typeof gatewayClient>['call'], id: string) => (await call('GET', `/runs/${id}`)).body as Run;
const stepOf = (run: Run, name: string) => run.steps.find((s) => s.name === name)!;
async function until(call: ReturnType<typeof gatewayClient>['call'], id: string, what: string, ok: (r: Run) => boolean, timeoutMs = 60_000): Promise<Run> {
  let last: Run | undefined;
  await eventually(what, async () => ok((last = await runOf(call, id))), timeoutMs, 200);
  return last!;
}
const closed = (r: Run) => !['RUNNING'].includes(r.status);

/** Every record on Kafka's config-changes topic from its beginning, as text, as it arrives; `stop` disconnects. */
async function configChanges(): Promise<{ seen: string[]; stop: () => Promise<void> }> {
  const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'runbook-test');
  const consumer = kafka.consumer({ groupId: `rb-test-${randomBytes(4).toString('hex')}` });
  const seen: string[] = [];
  await consumer.connect();
  await consumer.subscribe({ topic: TOPICS.configChanges, fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value!.toString()); } });
  return { seen, stop: () => consumer.disconnect() };
}

/** The worker's `secret_rotations_total` for one secret and outcome (0 before the first). */
const rotationCount = (secret: string, outcome: string) => metric(`http://127.0.0.1:${stack.layout.ports.workerStatus}`, 'secret_rotations_total', { secret, outcome });

describe('who may run runbooks', () => {
  test('platform-wide operators and admins; developers, viewers and workspace tokens get 403', async () => {
    const t = await tokens();
    const list = await t.as(t.alice)('GET', '/runbooks');
    assert.equal(list.status, 200, list.text);
    const rotate = list.body.data.find((r: { name: string }) => r.name === 'rotate-secret');
    assert.ok(rotate.params.properties.secret.enum.includes(API_KEY));
    assert.deepEqual(rotate.approver_roles, ['operator', 'admin']);
    for (const token of [t.developer, t.viewer, t.workspaceOperator]) {
      assert.equal((await t.as(token)('GET', '/runbooks')).status, 403);
      assert.equal((await t.as(token)('POST', '/runbooks/rotate-secret/runs', { params: { secret: API_KEY } })).status, 403);
    }
    const bad = await t.as(t.alice)('POST', '/runbooks/rotate-secret/runs', { params: { secret: 'db/elsewhere/root' } });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.details[0].field, 'body.params.secret');
    assert.equal((await t.as(t.alice)('POST', '/runbooks/nope/runs', { params: {} })).status, 404);
    // An automatic failover goes without the second person's approval: not an operator's to start.
    const automatic = await t.as(t.alice)('POST', '/runbooks/database-failover/runs', { params: { automatic: true } });
    assert.equal(automatic.status, 403, automatic.text);
    assert.equal(automatic.body.error.details[0].field, 'body.params.automatic');
  });

  test('a dry run plans every step, runs only the read-only check and changes nothing', async () => {
    const t = await tokens();
    const before = await readMeta(vault, DB_APP_SECRET);
    const r = await t.as(t.alice)('POST', '/runbooks/rotate-secret/runs', { params: { secret: DB_APP_SECRET, grace_seconds: 1 }, dry_run: true });
    assert.equal(r.status, 201, r.text);
    const run = await until(t.as(t.alice), r.body.id, 'the dry run ends', closed);
    assert.equal(run.status, 'COMPLETED');
    assert.equal(stepOf(run, 'inspect').state, 'completed');
    assert.match(stepOf(run, 'inspect').output!, /logs in and reads/);
    for (const s of run.steps.filter((x) => x.name !== 'inspect')) {
      assert.equal(s.state, 'skipped', s.name);
    }
    assert.match(stepOf(run, 'create-pending').output!, /dry run: would write version/);
    assert.deepEqual(await readMeta(vault, DB_APP_SECRET), before, 'Vault untouched');
  });
});

describe('rotation schedules', () => {
  test("a scheduled run (its id ends with the time Temporal appends) is opened and followed like any other", async () => {
    const t = await tokens();
    const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
    const scheduleId = `rb-rotate-secret-sched-test-${randomBytes(3).toString('hex')}`;
    try {
      // As provisioning creates the rotation schedules, but a dry run, which changes nothing.
      const handle = await client.schedule.create({
        scheduleId,
        spec: { intervals: [{ every: '3650 days' }] },
        action: {
          type: 'startWorkflow', workflowType: 'rotateSecret', workflowId: scheduleId, taskQueue: stack.env.FLOWGATE_TASK_QUEUE ?? 'flowgate',
          args: [{ params: { secret: API_KEY }, requested_by: 'schedule', dry_run: true }],
          memo: { tenant: PLATFORM_TENANT, workflow_type: 'rotate-secret', correlation_id: scheduleId, accepted_at: new Date().toISOString() },
          typedSearchAttributes: [{ key: SA.tenant, value: PLATFORM_TENANT }],
        },
        state: { paused: true },
      });
      cleanup.push(() => handle.delete());
      await handle.trigger();
      let id = '';
      await eventually('the scheduled run started', async () => Boolean(id = (await handle.describe()).info.recentActions[0]?.action.workflow.workflowId ?? ''), 30_000, 200);
      assert.match(id, new RegExp(`^${scheduleId}-\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$`));
      const run = await until(t.as(t.alice), id, 'the scheduled dry run ends', closed);
      assert.equal(run.status, 'COMPLETED', JSON.stringify(run));
      assert.equal(run.id, id);
      const pause = await t.as(t.alice)('POST', `/runs/${id}/pause`, {});
      assert.equal(pause.status, 409, pause.text);
      assert.equal(pause.body.error.code, 'run_closed', 'refused for being closed, not as a malformed id');
    } finally {
      await client.connection.close();
    }
  });

  test('every rotatable secret has a Temporal Schedule every 30 to 90 days that starts the runbook', async () => {
    const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
    try {
      for (const secret of SECRETS) {
        const d = await client.schedule.getHandle(`rb-rotate-secret-secret-${secret.path.replace(/[^A-Za-z0-9-]/g, '_')}`).describe();
        const every = Number(d.spec.intervals?.[0]?.every) / 86_400_000;
        assert.equal(every, secret.rotateEveryDays);
        assert.ok(every >= 30 && every <= 90);
        assert.equal(d.action.type, 'startWorkflow');
        assert.equal(d.action.workflowType, 'rotateSecret');
        assert.equal((d.action.args?.[0] as { params: { secret: string } }).params.secret, secret.path);
      }
    } finally {
      await client.connection.close();
    }
  });
});

/** The rotation's activities on their own, on the stack's Vault and sandbox provider (as Temporal would run them). */
function rotationActivities(vaultClient = vault) {
  const logger = createLogger('rotation-retry-test', 'error');
  const events = new KafkaBatcher(createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'rotation-retry-test'), logger);
  cleanup.push(() => events.close());
  return secretActivities({ vault: vaultClient, events, logger, databaseUrl: stack.env.FLOWGATE_DATABASE_URL!, services: loadConfig('worker', stack.env).FLOWGATE_THIRD_PARTIES });
}

/** The real OpenBao, whose answer to the next write of `path`'s data is lost after it wrote it. */
function answerLostOnce(path: string): typeof vault {
  let lose = true;
  return new Proxy(vault, {
    get(target, prop, receiver) {
      if (prop !== 'write') return Reflect.get(target, prop, receiver);
      return async (at: string, data: unknown) => {
        const res = await target.write(at, data);
        if (lose && at === `secret/data/${path}`) {
          lose = false;
          throw new Error('socket hang up');
        }
        return res;
      };
    },
  });
}

describe('rotating the payment provider key', () => {
  test('approved by another operator; consumers told; the old key works through the grace period, then is revoked', async () => {
    const t = await tokens();
    const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
    t.cleanup.push(() => nc.close());
    const rotated: { path: string; version: number }[] = [];
    const sub = nc.subscribe('secrets.rotated');
    void (async () => { for await (const m of sub) rotated.push(m.json()); })();
    const before = await readMeta(vault, API_KEY);
    const oldKey = (await readVersion<{ value: string }>(vault, API_KEY, before.labels.current!)).value;

    // A rotation's run id names its secret, so the audit rows of this run are the ones from now on.
    const startedAt = (await asPlatform(pool, (db) => db.query('SELECT now() AS t'))).rows[0].t as Date;
    const r = await t.as(t.alice)('POST', '/runbooks/rotate-secret/runs', { params: { secret: API_KEY, grace_seconds: 4, require_approval: true } });
    assert.equal(r.status, 201, r.text);
    const id = r.body.id as string;
    await until(t.as(t.alice), id, 'awaiting approval', (x) => stepOf(x, 'approve').state === 'awaiting_approval');
    const again = await t.as(t.bob)('POST', '/runbooks/rotate-secret/runs', { params: { secret: API_KEY } });
    assert.equal(again.status, 409, 'one rotation per secret at a time');
    assert.equal(again.body.error.code, 'run_in_progress');

    const own = await t.as(t.alice)('POST', `/runs/${id}/steps/approve/approve`, {});
    assert.equal(own.status, 409);
    assert.match(own.body.error.message, /requester/);
    assert.equal((await t.as(t.viewer)('POST', `/runs/${id}/steps/approve/approve`, {})).status, 403);
    const wrongStep = await t.as(t.bob)('POST', `/runs/${id}/steps/finish/approve`, {});
    assert.equal(wrongStep.status, 409);
    // The payload is checked against the runbook's approval schema before the run sees it.
    const badPayload = await t.as(t.bob)('POST', `/runs/${id}/steps/approve/approve`, { payload: { change_ticket: 'CHG-1', force: true } });
    assert.equal(badPayload.status, 400);
    assert.equal(badPayload.body.error.code, 'validation_failed');
    assert.equal(badPayload.body.error.details[0].field, 'body.payload');
    const ok = await t.as(t.bob)('POST', `/runs/${id}/steps/approve/approve`, { comment: 'go', payload: { change_ticket: 'CHG-1' } });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.body.approval.approved_by, t.names.bob);

    const grace = await until(t.as(t.alice), id, 'in the grace period', (x) => stepOf(x, 'revoke-previous').state === 'running');
    assert.equal(stepOf(grace, 'finish').state, 'completed');
    const during = await readMeta(vault, API_KEY);
    assert.equal(during.labels.previous, before.labels.current);
    assert.notEqual(during.labels.current, before.labels.current);
    assert.equal(during.labels.pending, undefined);
    assert.equal((await sandbox.account(oldKey)).status, 200, 'the previous key still works during the grace period');
    const newKey = (await readVersion<{ value: string }>(vault, API_KEY, during.labels.current!)).value;
    assert.equal((await sandbox.account(newKey)).status, 200);

    const done = await until(t.as(t.alice), id, 'the run ends', closed);
    assert.equal(done.status, 'COMPLETED', done.error ?? '');
    assert.equal(done.state, 'COMPLETED');
    assert.equal((await sandbox.account(oldKey)).status, 401, 'revoked after the grace period');
    await eventually('secrets.rotated on NATS', () => rotated.some((m) => m.path === API_KEY && String(m.version) === during.labels.current), 5000);
    sub.unsubscribe();
    await nc.drain();

    // Payments go on with the new key.
    const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'rot');
    const api = gatewayClient(stack.gatewayUrl, apiKey);
    const pay = await api.start('process-payment', { amount: 100, currency: 'EUR', payer: { id: 'p' }, payment_method: 'pm_card_visa' });
    assert.equal((await api.result(pay.body.execution_id, 30)).body.result.state, 'CONFIRMED');

    const audit = await asPlatform(pool, async (db) => (await db.query('SELECT action, actor, after FROM audit_logs WHERE entity_id = $1 AND at >= $2 ORDER BY id', [id, startedAt])).rows);
    assert.deepEqual(audit.map((a) => a.action), ['start', 'approve_refused', 'approve_refused', 'approve']);
    assert.equal(audit.at(-1)!.actor, `token:${t.names.bob}`);
    assert.ok(!JSON.stringify(audit).includes(newKey) && !JSON.stringify(audit).includes(oldKey), 'no key in the audit log');

    const { seen, stop } = await configChanges();
    try {
      await eventually('secret.rotated on Kafka', () => seen.some((v) => v.includes('"secret.rotated"') && v.includes(API_KEY)), 30_000, 200);
    } finally {
      await stop();
    }
    assert.ok(!seen.some((v) => v.includes(newKey) || v.includes(oldKey)), 'no key on Kafka');
  });

  test('an approval nobody gives expires and rejects the run; a late approval is refused; an abort leaves Vault as it was', async () => {
    const t = await tokens();
    const before = await readMeta(vault, API_KEY);
    const r = await t.as(t.alice)('POST', '/runbooks/rotate-secret/runs', { params: { secret: API_KEY, require_approval: true, approval_timeout_seconds: 2 } });
    const run = await until(t.as(t.alice), r.body.id, 'the run ends', closed, 30_000);
    assert.equal(run.status, 'FAILED');
    assert.equal(stepOf(run, 'approve').state, 'failed');
    assert.equal(stepOf(run, 'approve').output, 'approval expired');
    assert.equal((await t.as(t.bob)('POST', `/runs/${r.body.id}/steps/approve/approve`, {})).status, 409);

    const second = await t.as(t.alice)('POST', '/runbooks/rotate-secret/runs', { params: { secret: API_KEY, require_approval: true } });
    assert.equal(second.status, 201, 'the secret is free again once the first run ended');
    await until(t.as(t.alice), second.body.id, 'awaiting approval', (x) => stepOf(x, 'approve').state === 'awaiting_approval');
    assert.equal((await t.as(t.bob)('POST', `/runs/${second.body.id}/abort`)).status, 202);
    const aborted = await until(t.as(t.alice), second.body.id, 'aborted', closed);
    assert.equal(aborted.status, 'CANCELED');
    assert.equal(aborted.state, 'ABORTED');
    assert.deepEqual(await readMeta(vault, API_KEY), before);
  });

  test('a finish retried after it took effect answers the same, and a rollback then keeps the version it made current', async () => {
    // The rotation's activities on their own, as Temporal would run them when a finish attempt
    // wrote the labels but its answer was lost (a worker crash, a timeout, an abort).
    const acts = rotationActivities();
    const ref = { secret: API_KEY };
    const created = await acts.createPendingSecret(ref);
    const version = { ...ref, version: created.version };
    await acts.setPendingOnTarget(version);
    await acts.testPendingSecret(version);
    const first = await acts.finishRotation(version);
    assert.deepEqual(first, { current: created.version, previous: created.previous });
    assert.deepEqual(await acts.finishRotation(version), first, 'the retry answers as the attempt did');

    const undone = await acts.rollbackPendingSecret(version);
    assert.equal(undone.kept, true);
    const meta = await readMeta(vault, API_KEY);
    assert.equal(meta.labels.current, created.version, 'still current');
    const newKey = (await readVersion<{ value: string }>(vault, API_KEY, created.version)).value;
    assert.ok(newKey, 'not destroyed');
    const inspected = await acts.inspectSecret(ref);
    assert.equal(inspected.current_works, true, `the provider still takes it: ${inspected.detail}`);
    await acts.revokePreviousSecret({ ...ref, version: created.previous });
  });

  test('a pending version an earlier attempt wrote but did not label is taken over, not minted again', async () => {
    const acts = rotationActivities();
    const ref = { secret: API_KEY };
    const attempt = new MockActivityEnvironment({ workflowExecution: { workflowId: `rb-rotate-secret-test-${randomBytes(3).toString('hex')}`, runId: 'r1' } });
    const first = await attempt.run(acts.createPendingSecret, ref) as { version: string; previous: string };
    // The attempt's labels write "failed": the version is there, labelled by nothing.
    const meta = await readMeta(vault, API_KEY);
    await writeLabels(vault, API_KEY, { ...meta.labels, pending: undefined });
    const retried = await attempt.run(acts.createPendingSecret, ref);
    assert.deepEqual(retried, first, 'the same version, labelled pending now');
    const after = await readMeta(vault, API_KEY);
    assert.equal(after.latest, meta.latest, 'no second version written (and no second key minted)');
    assert.equal(after.labels.pending, first.version);
    // And an attempt whose labels were written but whose answer was lost: the same answer again, not RotationInProgress.
    assert.deepEqual(await attempt.run(acts.createPendingSecret, ref), first);
    const other = new MockActivityEnvironment({ workflowExecution: { workflowId: 'rb-rotate-secret-someone-else', runId: 'r2' } });
    await assert.rejects(other.run(acts.createPendingSecret, ref), /in progress/, 'another run is still refused');
    // Another run's attempt would not take it over: undo it the way the run would.
    const undone = await acts.rollbackPendingSecret({ ...ref, version: first.version });
    assert.equal(undone.kept, undefined);
    assert.equal((await readMeta(vault, API_KEY)).labels.pending, undefined);
  });
});

describe('rotating, when Vault wrote the pending version but its answer was lost', () => {
  test('the version is kept as pending, with its key, not taken for another writer', async () => {
    const ref = { secret: API_KEY };
    const before = await readMeta(vault, API_KEY);
    const attempt = new MockActivityEnvironment({ workflowExecution: { workflowId: `rb-rotate-secret-test-${randomBytes(3).toString('hex')}`, runId: 'r1' } });
    const created = await attempt.run(rotationActivities(answerLostOnce(API_KEY)).createPendingSecret, ref) as { version: string; previous: string };
    const after = await readMeta(vault, API_KEY);
    assert.equal(after.latest, before.latest + 1, 'one version written');
    assert.equal(created.version, String(after.latest));
    assert.equal(after.labels.pending, created.version, 'labelled pending');
    const key = await readVersion<{ value: string }>(vault, API_KEY, created.version);
    assert.equal((await sandbox.account(key.value)).status, 200, 'its key was not deleted at the provider');
    const undone = await rotationActivities().rollbackPendingSecret({ ...ref, version: created.version });
    assert.equal(undone.kept, undefined);
    assert.equal((await readMeta(vault, API_KEY)).labels.pending, undefined);
  });
});

describe("rotating the processes' PostgreSQL login", () => {
  test('the pools move to the other login with no failed request; the old login is really revoked after the grace period', async () => {
    const t = await tokens();
    const before = await readMeta(vault, DB_APP_SECRET);
    const oldLogin = await readVersion<{ username: string; password: string }>(vault, DB_APP_SECRET, before.labels.current!);
    let failures = 0;
    let calls = 0;
    let stop = false;
    // Traffic through the admin process, whose every answer needs PostgreSQL, for the whole rotation.
    const traffic = (async () => {
      while (!stop) {
        const res = await t.as(t.alice)('GET', '/workspaces').catch(() => ({ status: 0 }));
        calls += 1;
        if (res.status !== 200) failures += 1;
        await new Promise((r) => setTimeout(r, 25));
      }
    })();
    const r = await t.as(t.alice)('POST', '/runbooks/rotate-secret/runs', { params: { secret: DB_APP_SECRET, grace_seconds: 3 } });
    const run = await until(t.as(t.alice), r.body.id, 'the rotation ends', closed);
    await new Promise((res) => setTimeout(res, 500));
    stop = true;
    await traffic;
    assert.equal(run.status, 'COMPLETED', run.error ?? '');
    assert.ok(calls > 20, `${calls} requests during the rotation`);
    assert.equal(failures, 0, 'no request failed');

    const now = await readMeta(vault, DB_APP_SECRET);
    const newLogin = await readVersion<{ username: string; password: string }>(vault, DB_APP_SECRET, now.labels.current!);
    assert.notEqual(newLogin.username, oldLogin.username, 'the other login of the pair');
    const su = new pg.Client({ connectionString: pgSuperuserUrl(stack.layout, 'flowgate') });
    await su.connect();
    try {
      const roles = (await su.query("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'flowgate_app_%' ORDER BY 1")).rows;
      assert.deepEqual(Object.fromEntries(roles.map((x) => [x.rolname, x.rolcanlogin])), { [oldLogin.username]: false, [newLogin.username]: true });
      const sessions = (await su.query("SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = 'flowgate' AND usename LIKE 'flowgate_app_%'")).rows.map((x) => x.usename);
      assert.deepEqual(sessions, [newLogin.username], 'every pool is on the new login');
    } finally {
      await su.end();
    }
    const old = new pg.Client({ host: '127.0.0.1', port: stack.layout.ports.postgres, database: 'flowgate', user: oldLogin.username, password: oldLogin.password });
    await assert.rejects(old.connect(), /not permitted to log in|password authentication failed/);
  });

  test("a late revoke of the previous login leaves it alone while another rotation makes it current again", async () => {
    // An operator's run in its grace period and a scheduled run of the same secret (their ids
    // differ): the scheduled one takes the previous login of the pair as its pending one.
    const acts = rotationActivities();
    const ref = { secret: DB_APP_SECRET };
    const before = await readMeta(vault, DB_APP_SECRET);
    assert.ok(before.labels.previous, 'a rotation ran before (the test above)');
    const previous = await readVersion<{ username: string }>(vault, DB_APP_SECRET, before.labels.previous);
    const created = await acts.createPendingSecret(ref);
    const pending = await readVersion<{ username: string; password: string }>(vault, DB_APP_SECRET, created.version);
    assert.equal(pending.username, previous.username, 'the pair alternates');
    try {
      await acts.setPendingOnTarget({ ...ref, version: created.version });
      const revoked = await acts.revokePreviousSecret({ ...ref, version: before.labels.previous });
      assert.match(revoked.detail, /pending login of another rotation/);
      const c = new pg.Client({ host: '127.0.0.1', port: stack.layout.ports.postgres, database: 'flowgate', user: pending.username, password: pending.password });
      await c.connect();
      await c.end();
    } finally {
      await acts.rollbackPendingSecret({ ...ref, version: created.version });
    }
    assert.equal((await readMeta(vault, DB_APP_SECRET)).labels.current, before.labels.current);
  });

  test('a target that refuses the new login rolls back: the current login stays current and an alert is raised', async () => {
    const t = await tokens();
    const before = await readMeta(vault, DB_APP_SECRET);
    const current = await readVersion<{ username: string }>(vault, DB_APP_SECRET, before.labels.current!);
    const next = current.username === 'flowgate_app_a' ? 'flowgate_app_b' : 'flowgate_app_a';
    const su = new pg.Client({ connectionString: pgSuperuserUrl(stack.layout, 'flowgate') });
    await su.connect();
    await su.query(`ALTER ROLE ${next} CONNECTION LIMIT 0`);
    // The alert (raiseRotationAlert): the worker's failed-rotation counter, and `secret.rotation_failed` on Kafka.
    const failedBefore = await rotationCount(DB_APP_SECRET, 'failed');
    const startedAt = new Date().toISOString();
    const changes = await configChanges();
    type Alert = { type: string; at: string; path: string; reason?: string };
    const alerts = () => changes.seen.map((v) => JSON.parse(v) as Alert).filter((v) => v.type === 'secret.rotation_failed' && v.path === DB_APP_SECRET && v.at >= startedAt);
    try {
      const r = await t.as(t.alice)('POST', '/runbooks/rotate-secret/runs', { params: { secret: DB_APP_SECRET, grace_seconds: 1 } });
      const run = await until(t.as(t.alice), r.body.id, 'the rotation ends', closed);
      assert.equal(run.status, 'FAILED');
      assert.equal(run.state, 'ROLLED_BACK');
      assert.equal(stepOf(run, 'test').state, 'failed');
      assert.match(stepOf(run, 'test').output!, /too many connections/);
      assert.equal(stepOf(run, 'create-pending').state, 'rolled_back');
      assert.equal(stepOf(run, 'finish').state, 'pending');
      const after = await readMeta(vault, DB_APP_SECRET);
      assert.equal(after.labels.current, before.labels.current, 'current stays current');
      assert.equal(after.labels.pending, undefined);
      const role = (await su.query('SELECT rolcanlogin FROM pg_roles WHERE rolname = $1', [next])).rows[0];
      assert.equal(role.rolcanlogin, false, 'the pending login is disabled again');
      const metrics = await (await fetch(`http://127.0.0.1:${stack.layout.ports.workerStatus}/metrics`)).text();
      assert.match(metrics, /secret_rotations_total\{[^}]*outcome="rolled_back"[^}]*\} [1-9]/);
      // The alert itself, once (not the rollback's own counter): the event on Kafka and the failed-rotation counter.
      await eventually('secret.rotation_failed on Kafka', () => alerts().length > 0, 30_000, 200).catch(() => undefined);
      assert.equal(alerts().length, 1, `one secret.rotation_failed event for this run: ${JSON.stringify(alerts())}`);
      assert.match(alerts()[0]!.reason ?? '', /\S/, 'the alert says why');
      assert.equal(await rotationCount(DB_APP_SECRET, 'failed'), failedBefore + 1, 'secret_rotations_total{outcome="failed"} counts the alert');
    } finally {
      await changes.stop();
      await su.query(`ALTER ROLE ${next} CONNECTION LIMIT -1`);
      await su.end();
    }
  });
});
