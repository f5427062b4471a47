// The config-rollout runbook on real gateway instances (a canary group and the rest), driven by
// real traffic: a bad version is restored automatically, a good one is promoted everywhere.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, describe, test } from 'node:test';
import { connect } from 'nats';
import { findGateways } from '../../lib/heartbeats';
import { createPool } from '../../lib/postgres';
import { issueAdminToken, issueApiKey } from '../../lib/tenants';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, readyStatus, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';

const stack = testStack();
const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 2);
const procs: RunningProcess[] = [];
const upstream = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}'));
after(async () => {
  for (const p of procs) p.child.kill('SIGKILL');
  await new Promise((r) => upstream.close(r));
  await pool.end();
});

async function gateway(group: string) {
  const p = await spawnProcess('gateway', stack.env, { FLOWGATE_GATEWAY_GROUP: group, FLOWGATE_HEARTBEAT_MS: '1000' });
  procs.push(p);
  await eventually(`${group} gateway ready`, async () => (await readyStatus(p.statusUrl)).code === 200, 90_000);
  return p;
}

type Run = { status: string; state: string; steps: { name: string; state: string; output?: string }[]; figures: Record<string, number>; error: string | null };

describe('config rollout', () => {
  test('a version whose canary errors is restored automatically; a good one is promoted to every instance', async () => {
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
    const good = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'roll');
    const { key } = await issueApiKey(pool, t.tenant, 'shopper');
    const operator = gatewayClient(stack.adminUrl, (await issueAdminToken(pool, null, `op-${randomBytes(3).toString('hex')}`, 'operator')).token).call;
    assert.equal((await t.admin('POST', '/services', { name: 'shop', url: good })).status, 201);
    const route = await t.admin('POST', '/routes', { name: 'shop', service: 'shop', paths: ['/shop'] });
    assert.equal(route.status, 201);
    const held = Number(route.headers.get('x-flowgate-config-version'));
    assert.equal((await t.admin('PUT', '/config/pin', { version: held })).status, 200);

    const [canary, stable] = [await gateway('canary'), await gateway('stable')];
    const instances = [canary.publicUrl!, stable.publicUrl!, stack.gatewayUrl];
    const shop = (base: string) => fetch(`${base}/shop`, { headers: { authorization: `Bearer ${key}` } }).then((r) => r.status, () => 0);
    await eventually('every gateway serves the shop', async () => (await Promise.all(instances.map(shop))).every((s) => s === 200), 20_000, 200);

    // A change that breaks the upstream: stored as a new version, served nowhere yet.
    const broken = await t.admin('PATCH', '/services/shop', { url: 'http://127.0.0.1:9' });
    const bad = Number(broken.headers.get('x-flowgate-config-version'));
    assert.ok(bad > held);
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await Promise.all(instances.map(shop)), [200, 200, 200], 'held on the old version');

    let traffic = true;
    const load = (async () => { while (traffic) { await Promise.all(instances.map(shop)); await new Promise((r) => setTimeout(r, 20)); } })();
    const until = async (id: string) => {
      let run: Run | undefined;
      await eventually('the rollout ends', async () => (run = (await operator('GET', `/runs/${id}`)).body as Run).status !== 'RUNNING', 90_000, 300);
      return run!;
    };
    const params = { workspace: t.tenant, bake_seconds: 4, min_requests: 5, max_error_rate: 0.05, max_p99_ms: 2000 };
    try {
      const first = await operator('POST', '/runbooks/config-rollout/runs', { params });
      assert.equal(first.status, 201, first.text);
      const restored = await until(first.body.id);
      assert.equal(restored.status, 'FAILED');
      assert.equal(restored.state, 'ROLLED_BACK');
      assert.match(restored.error!, /canary 5xx rate/);
      assert.equal(restored.steps.find((s) => s.name === 'canary')!.state, 'rolled_back');
      assert.ok(restored.figures.canary_error_rate! > 0.05);
      assert.ok(restored.figures.stable_error_rate! < 0.01, 'the rest kept serving the held version');
      assert.equal(restored.steps.find((s) => s.name === 'promote')!.state, 'pending', 'never promoted');
      assert.deepEqual(await Promise.all(instances.map(shop)), [200, 200, 200], 'the canary is back on the held version');

      // Fixed: the upstream back, plus a response header. Promoted everywhere.
      await t.admin('PATCH', '/services/shop', { url: good });
      assert.equal((await t.admin('PATCH', '/routes/shop', { transformations: { response: { add_headers: { 'x-shop-version': 'two' } } } })).status, 200);
      const next = Number((await t.admin('GET', '/config')).body.version);
      const second = await operator('POST', '/runbooks/config-rollout/runs', { params });
      assert.equal(second.status, 201, second.text);
      const promoted = await until(second.body.id);
      assert.match(promoted.steps.find((s) => s.name === 'validate')!.output!, new RegExp(`→ ${next};`));
      assert.equal(promoted.status, 'COMPLETED', promoted.error ?? '');
      assert.match(promoted.steps.find((s) => s.name === 'diff')!.output!, /routes: \+0 -0 ~1/);
      assert.equal(promoted.figures.canary_error_rate, 0);
    } finally {
      traffic = false;
      await load;
    }
    const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
    try {
      const gws = await findGateways(nc);
      assert.ok(gws.length >= 3);
      const served = new Set(gws.map((g) => g.config?.[t.tenant]));
      const pins = (await t.admin('GET', '/config/pins')).body.data;
      assert.deepEqual(pins.map((p: { gateway_group: string }) => p.gateway_group), ['*'], 'no canary pin left');
      assert.deepEqual([...served], [pins[0].version], 'every instance serves the promoted version');
    } finally {
      await nc.close();
    }
    for (const base of instances) {
      const res = await fetch(`${base}/shop`, { headers: { authorization: `Bearer ${key}` } });
      assert.equal(res.headers.get('x-shop-version'), 'two');
    }
  });
});
