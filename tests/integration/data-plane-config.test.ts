// The data plane's side of the control plane: a change reaches a running gateway within a
// second, the gateway keeps serving its last version while the admin process and PostgreSQL
// are down, and a DB-less gateway serves from a declarative file alone.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import { serverSpec, startServer, stopServer } from '../../stack/stack';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, readyStatus, scratchDir, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';

const stack = testStack();
const gatewayStatusUrl = `http://127.0.0.1:${stack.layout.ports.gatewayStatus}`;

/** A sandbox upstream that echoes what it received. */
let upstream: Server;
let upstreamUrl: string;
before(async () => {
  upstream = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      res.setHeader('content-type', 'application/json');
      res.setHeader('x-upstream-secret', 'internal');
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body }));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => upstream.close(() => r())));

async function tenantWithKey(prefix: string) {
  const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, prefix);
  const c = await t.admin('POST', '/consumers', { username: 'client' });
  const key = (await t.admin('POST', `/consumers/${c.body.id}/keys`)).body;
  return { ...t, key: key.key as string, keyId: key.id as string, gw: gatewayClient(stack.gatewayUrl, key.key).call };
}

/** Polls every 10 ms until `fn` holds; returns how long it took. */
async function timeUntil(fn: () => Promise<boolean>, limitMs = 5000): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < limitMs) {
    if (await fn()) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 10));
  }
  return Infinity;
}

describe('config changes reach the gateway', () => {
  test('a new route, its update, its deletion and a revoked key are served within a second', async () => {
    const t = await tenantWithKey('dp');
    await t.admin('POST', '/services', { name: 'echo', url: `${upstreamUrl}/base` });
    const created = await t.admin('POST', '/routes', {
      name: 'orders', service: 'echo', paths: ['/shop/orders'], strip_path: true,
      transformations: { request: { add_headers: { 'X-Added': 'yes' }, remove_headers: ['X-Drop'] }, response: { remove_headers: ['X-Upstream-Secret'] } },
    });
    assert.equal(created.status, 201, created.text);
    const seen = await timeUntil(async () => (await t.gw('GET', '/shop/orders/42?x=1')).status === 200);
    assert.ok(seen < 1000, `route served after ${seen} ms`);

    const r = await t.gw('GET', '/shop/orders/42?x=1', undefined, { 'x-drop': 'me', 'x-request-id': 'corr-dp-1' });
    assert.equal(r.body.url, '/base/42?x=1', 'strip_path drops the route prefix; the service path is kept');
    assert.equal(r.body.headers['x-added'], 'yes');
    assert.equal(r.body.headers['x-drop'], undefined);
    assert.equal(r.body.headers['x-tenant-id'], t.tenant);
    assert.equal(r.body.headers['x-request-id'], 'corr-dp-1');
    assert.equal(r.body.headers.authorization, undefined, "the client's credential never reaches the upstream");
    assert.equal(r.headers.get('x-upstream-secret'), null);
    const version = (await t.admin('GET', '/config')).body.version;
    assert.equal(Number(r.headers.get('x-flowgate-config-version')), version);
    const info = await (await fetch(`${gatewayStatusUrl}/info`)).json() as { config: { workspaces: Record<string, number> } };
    assert.equal(info.config.workspaces[t.tenant], version, 'the gateway reports the version it serves');

    // Other tenants do not see the route.
    const other = await tenantWithKey('dp');
    assert.equal((await other.gw('GET', '/shop/orders/42')).status, 404);

    await t.admin('PATCH', '/routes/orders', { strip_path: false });
    const updated = await timeUntil(async () => (await t.gw('GET', '/shop/orders/42')).body?.url === '/base/shop/orders/42');
    assert.ok(updated < 1000, `update served after ${updated} ms`);
    await t.admin('DELETE', '/routes/orders');
    const gone = await timeUntil(async () => (await t.gw('GET', '/shop/orders/42')).status === 404);
    assert.ok(gone < 1000, `deletion served after ${gone} ms`);

    await t.admin('DELETE', `/consumers/client/keys/${t.keyId}`);
    const revoked = await timeUntil(async () => (await t.gw('GET', '/shop/orders/42')).status === 401);
    assert.ok(revoked < 1000, `revoked key refused after ${revoked} ms`);
  });
});

describe('keys are not versioned with the routes', () => {
  test('a key revoked while the workspace is pinned stops working at once, and a rollback does not bring it back', async () => {
    const t = await tenantWithKey('pinkey');
    await t.admin('POST', '/services', { name: 'echo', url: `${upstreamUrl}/base` });
    await t.admin('POST', '/routes', { name: 'orders', service: 'echo', paths: ['/shop/orders'] });
    assert.ok(await timeUntil(async () => (await t.gw('GET', '/shop/orders/1')).status === 200) < 1000);
    const held = (await t.admin('GET', '/config')).body.version as number;
    assert.equal((await t.admin('PUT', '/config/pin', { version: held })).status, 200);
    assert.ok((await t.admin('DELETE', `/consumers/client/keys/${t.keyId}`)).status < 300);
    const refused = await timeUntil(async () => (await t.gw('GET', '/shop/orders/1')).status === 401);
    assert.ok(refused < 1000, `revoked key refused after ${refused} ms while version ${held} is pinned`);
    // Pinned to the version made before the revocation (a rollback): still refused.
    assert.equal((await t.admin('PUT', '/config/pin', { version: held })).status, 200);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await t.gw('GET', '/shop/orders/1')).status, 401);
    await t.admin('DELETE', '/config/pin');
  });
});

describe('control plane down', () => {
  test('the gateway serves its last version while the admin process and PostgreSQL are down', async () => {
    const t = await tenantWithKey('down');
    await t.admin('POST', '/services', { name: 'echo', url: upstreamUrl });
    await t.admin('POST', '/routes', { name: 'still', service: 'echo', paths: ['/still'] });
    await eventually('route served', async () => (await t.gw('GET', '/still/here')).status === 200, 5000, 20);
    const version = (await t.admin('GET', '/config')).body.version;
    try {
      await stopServer(stack.layout, 'admin');
      await stopServer(stack.layout, 'postgres');
      assert.equal((await fetch(`${stack.adminUrl}/health`).catch(() => null)), null, 'the admin process is down');
      // A pull happens on its own (FLOWGATE_CONFIG_REFRESH_MS in the test stack) and fails.
      await eventually('a failed pull reported', async () => {
        const info = await (await fetch(`${gatewayStatusUrl}/info`)).json() as { config: { last_error?: string } };
        return Boolean(info.config.last_error);
      }, 15_000, 200);
      for (let i = 0; i < 20; i++) {
        const r = await t.gw('GET', `/still/${i}`);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.url, `/still/${i}`);
        assert.equal(Number(r.headers.get('x-flowgate-config-version')), version);
      }
      assert.equal((await readyStatus(gatewayStatusUrl)).code, 200, 'still ready: it has a config to serve');
    } finally {
      await startServer(stack.layout, serverSpec('postgres'));
      await startServer(stack.layout, serverSpec('admin'));
    }
    await t.admin('PATCH', '/routes/still', { paths: ['/moved'] });
    await eventually('the gateway catches up', async () => (await t.gw('GET', '/moved')).status === 200, 5000, 20);
  });
});

describe('DB-less gateway', () => {
  let gw: RunningProcess | undefined;
  after(() => gw?.child.kill('SIGKILL'));

  test('serves the routes and keys of a declarative file, without PostgreSQL', async () => {
    const dir = await scratchDir('dbless');
    const file = path.join(dir, 'flowgate.yaml');
    const key = 'fgk_0badc0de_a-key-written-by-hand-for-dbless';
    await writeFile(file, [
      stringify({ workspace: 'edge', services: [{ name: 'echo', url: upstreamUrl }], routes: [{ name: 'all', service: 'echo', paths: ['/edge'] }], consumers: [{ username: 'hand', keys: [{ key }] }] }),
      stringify({ workspace: 'other', services: [{ name: 'echo', url: upstreamUrl }], routes: [{ name: 'x', service: 'echo', paths: ['/other'] }] }),
    ].join('---\n'));
    gw = await spawnProcess('gateway', stack.env, {
      FLOWGATE_DECLARATIVE_CONFIG: file,
      // Nothing listens here: the gateway must not need PostgreSQL at all.
      FLOWGATE_DATABASE_URL: 'postgres://nobody:nothing@127.0.0.1:1/none',
    });
    await eventually('DB-less gateway ready', async () => (await readyStatus(gw!.statusUrl)).code === 200, 60_000);
    const api = gatewayClient(gw.publicUrl!, key).call;
    const r = await api('POST', '/edge/things', { a: 1 });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.url, '/edge/things');
    assert.deepEqual(JSON.parse(r.body.body), { a: 1 });
    assert.equal(r.body.headers['x-tenant-id'], 'edge');
    assert.equal((await api('GET', '/other')).status, 404, "another workspace's route is not this key's");
    assert.equal((await gatewayClient(gw.publicUrl!, 'fgk_00000000_unknown-key-unknown-key').call('GET', '/edge')).status, 401);
    const info = await (await fetch(`${gw.statusUrl}/info`)).json() as { config: { source: string; workspaces: Record<string, number> } };
    assert.equal(info.config.source, 'file');
    assert.deepEqual(Object.keys(info.config.workspaces).sort(), ['edge', 'other']);
  });

  test('refuses to start on an invalid file, naming the field', async () => {
    const dir = await scratchDir('dbless');
    const file = path.join(dir, 'bad.yaml');
    await writeFile(file, stringify({ workspace: 'edge', routes: [{ name: 'r', service: 'echo', paths: ['no-slash'] }] }));
    const bad = await spawnProcess('gateway', stack.env, { FLOWGATE_DECLARATIVE_CONFIG: file, FLOWGATE_DATABASE_URL: 'postgres://nobody:nothing@127.0.0.1:1/none' });
    const exit = await bad.exited;
    assert.notEqual(exit.code, 0);
    assert.match(bad.output(), /routes\.0\.paths\.0/);
  });
});
