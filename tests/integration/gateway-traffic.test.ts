// The gateway's traffic stages against the running stack: rate limits held exactly across two
// gateway instances sharing Redis, the stages in their order, upstream targets killed and
// revived under traffic, KrakenD-style aggregation and static answers, request and response
// transformations, and the response pipeline's headers and compression.
import assert from 'node:assert/strict';
import zlib from 'node:zlib';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { spawn } from 'node:child_process';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { gunzipSync, gzipSync, brotliDecompressSync } from 'node:zlib';
import { request } from 'undici';
import { createVault, vaultPaths } from '../../lib/vault';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';

const stack = testStack();

/** A sandbox upstream: echoes, or answers what `reply` says; counts its requests. */
type Sandbox = { url: string; port: number; server: Server; count: number; close: () => Promise<void>; listen: () => Promise<void> };
async function sandbox(reply?: (req: IncomingMessage, body: string) => { status?: number; headers?: Record<string, string>; body: string | Buffer }, port = 0): Promise<Sandbox> {
  const s: Sandbox = { url: '', port, server: undefined as unknown as Server, count: 0, close: async () => undefined, listen: async () => undefined };
  const make = () => createServer((req, res) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      if (req.url !== '/health') s.count += 1;
      const out = reply?.(req, body) ?? { body: JSON.stringify({ url: req.url, method: req.method, headers: req.headers, body }) };
      res.writeHead(out.status ?? 200, { 'content-type': 'application/json', server: 'sandbox/1.0', 'x-powered-by': 'sandbox', ...out.headers });
      res.end(out.body);
    });
  });
  s.listen = async () => {
    s.server = make();
    await new Promise<void>((r) => s.server.listen(s.port, '127.0.0.1', r));
    s.port = (s.server.address() as AddressInfo).port;
    s.url = `http://127.0.0.1:${s.port}`;
  };
  s.close = () => new Promise<void>((r) => { s.server.closeAllConnections(); s.server.close(() => r()); });
  await s.listen();
  return s;
}

async function tenant(prefix: string) {
  const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, prefix);
  const c = await t.admin('POST', '/consumers', { username: 'client', roles: ['developer'] });
  const key = (await t.admin('POST', `/consumers/${c.body.id}/keys`)).body.key as string;
  return { ...t, key, gw: gatewayClient(stack.gatewayUrl, key).call };
}

/** A GET to the gateway with the path and headers exactly as given (fetch would resolve dots and refuse Connection). */
function rawGet<T>(path: string, headers: Record<string, string>): Promise<{ status: number; body: T }> {
  return new Promise((resolve, reject) => {
    const r = httpRequest({ host: '127.0.0.1', port: new URL(stack.gatewayUrl).port, path, headers }, (res) => {
      let b = '';
      res.on('data', (d) => { b += d; });
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(b) as T }));
    });
    r.on('error', reject);
    r.end();
  });
}

const served = (gw: ReturnType<typeof gatewayClient>['call'], path: string, status = 200) =>
  eventually(`${path} served`, async () => (await gw('GET', path)).status === status, 5000, 20);

describe('rate limits', () => {
  let second: RunningProcess | undefined;
  let echo: Sandbox;
  before(async () => { echo = await sandbox(); });
  after(async () => {
    second?.child.kill('SIGTERM');
    await second?.exited;
    await echo.close();
  });

  test('one limit is held exactly across two gateway instances sharing Redis, for each algorithm', async () => {
    second = await spawnProcess('gateway', stack.env);
    await eventually('second gateway ready', async () => (await fetch(`${second!.statusUrl}/readyz`).catch(() => null))?.status === 200, 30_000, 200);
    for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
      const t = await tenant('rl');
      await t.admin('POST', '/services', { name: 'echo', url: echo.url });
      await t.admin('POST', '/routes', { name: 'echo', service: 'echo', paths: ['/echo'] });
      await served(t.gw, '/echo');
      await t.admin('POST', '/policies', { name: 'quota', scope: 'workspace', limit: 40, window_seconds: 120, algorithm });
      const g2: typeof t.gw = gatewayClient(second.publicUrl!, t.key).call;
      await eventually('policy in force on both', async () => {
        const [r1, r2] = await Promise.all([t.gw('GET', '/echo'), g2('GET', '/echo')]);
        return r1.headers.get('ratelimit-limit') === '40' && r2.headers.get('ratelimit-limit') === '40';
      }, 5000, 20);
      // Some of the 40 are used by the check above; count what is left from the headers, then overrun it from both.
      const probe = await t.gw('GET', '/echo');
      const left = Number(probe.headers.get('ratelimit-remaining'));
      const results = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? g2 : t.gw)('GET', '/echo')));
      const ok = results.filter((r) => r.status === 200).length;
      assert.equal(ok, left, `${algorithm}: ${ok} allowed, ${left} were left`);
      const refused = results.find((r) => r.status === 429)!;
      assert.equal(refused.body.error.code, 'rate_limited');
      assert.ok(Number(refused.headers.get('retry-after')) >= 1);
      assert.equal(refused.headers.get('ratelimit-remaining'), '0');
      assert.match(refused.headers.get('ratelimit-policy') ?? '', /40;w=120/);
    }
  });

  test('stages run in order: no credential is 401 and forbidden is 403 without using the quota; a route policy counts per consumer', async () => {
    const t = await tenant('order');
    await t.admin('POST', '/services', { name: 'echo', url: echo.url });
    await t.admin('POST', '/routes', { name: 'echo', service: 'echo', paths: ['/echo'] });
    await t.admin('POST', '/routes', { name: 'closed', service: 'echo', paths: ['/closed'] });
    await t.admin('POST', '/plugins', { name: 'authorization', route: 'closed', config: { rules: [{ effect: 'allow', roles: ['admin'] }] } });
    await t.admin('POST', '/policies', { name: 'per-client', scope: 'route', route: 'echo', limit: 3, window_seconds: 60, algorithm: 'fixed-window' });
    await t.admin('POST', '/policies', { name: 'closed', scope: 'route', route: 'closed', limit: 1, window_seconds: 60, algorithm: 'fixed-window' });
    await eventually('policy in force', async () => (await t.gw('GET', '/echo')).headers.get('ratelimit-limit') === '3', 5000, 20);
    // 401 before anything else.
    const anon = await fetch(`${stack.gatewayUrl}/echo`);
    assert.equal(anon.status, 401);
    assert.equal(anon.headers.get('ratelimit-limit'), null);
    // 403 by authorization, twice, before the route's limit of 1 would have refused the second.
    for (let i = 0; i < 2; i++) assert.equal((await t.gw('GET', '/closed')).status, 403);
    // The route policy counts per consumer: another consumer has its own 3.
    const c2 = await t.admin('POST', '/consumers', { username: 'other' });
    const k2 = (await t.admin('POST', `/consumers/${c2.body.id}/keys`)).body.key as string;
    const other = gatewayClient(stack.gatewayUrl, k2).call;
    await served(other, '/echo');
    const mine = [await t.gw('GET', '/echo'), await t.gw('GET', '/echo'), await t.gw('GET', '/echo')].map((r) => r.status);
    assert.deepEqual(mine.slice(-1), [429], `the first consumer runs out: ${mine}`);
    assert.equal((await other('GET', '/echo')).status, 200);
  });

  test('refused by two policies at once: Retry-After is the longer wait, in the headers and the 429 alike', async () => {
    const t = await tenant('waits');
    await t.admin('POST', '/services', { name: 'echo', url: echo.url });
    await t.admin('POST', '/routes', { name: 'echo', service: 'echo', paths: ['/echo'] });
    await t.admin('POST', '/routes', { name: 'other', service: 'echo', paths: ['/other'] });
    await t.admin('POST', '/policies', { name: 'per-second', scope: 'workspace', limit: 1, window_seconds: 1, algorithm: 'fixed-window' });
    await t.admin('POST', '/policies', { name: 'per-hour', scope: 'route', route: 'echo', limit: 1, window_seconds: 3600, algorithm: 'fixed-window' });
    // Both come in the same config version; /other (the per-second policy only) shows when it is served.
    await eventually('the policies in force', async () => (await t.gw('GET', '/other')).headers.get('ratelimit-policy') === '1;w=1', 5000, 20);
    // At the start of a fresh second, one request spends both policies; the next, in the same second, is refused by each.
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 20));
    assert.equal((await t.gw('GET', '/echo')).status, 200);
    const refused = await t.gw('GET', '/echo');
    assert.equal(refused.status, 429);
    assert.match(refused.headers.get('ratelimit-policy') ?? '', /1;w=1, 1;w=3600/);
    const wait = Number(refused.headers.get('retry-after'));
    assert.ok(wait > 60, `Retry-After ${wait}: the hourly policy's wait, not the second's`);
  });
});

describe('upstream targets', () => {
  test('a target killed under traffic is taken out by health checks, and put back when revived', async () => {
    const a = await sandbox();
    const b = await sandbox();
    try {
      const t = await tenant('lb');
      const svc = await t.admin('POST', '/services', {
        name: 'pair', targets: [{ url: a.url }, { url: b.url }], algorithm: 'round-robin', retries: 1,
        healthchecks: { active: { path: '/health', interval_ms: 200, timeout_ms: 200, healthy_successes: 2, unhealthy_failures: 2 }, passive: { unhealthy_failures: 2, unhealthy_5xx: 5, window_ms: 5000, cooldown_ms: 1000 } },
      });
      assert.equal(svc.status, 201, svc.text);
      await t.admin('POST', '/routes', { name: 'pair', service: 'pair', paths: ['/pair'] });
      await served(t.gw, '/pair');
      for (let i = 0; i < 20; i++) await t.gw('GET', '/pair');
      assert.ok(a.count > 3 && b.count > 3, `both serve: ${a.count}/${b.count}`);

      await b.close();
      // While b is being detected, a refused connection is retried on a: no request fails.
      const during = await Promise.all(Array.from({ length: 40 }, () => t.gw('GET', '/pair')));
      assert.deepEqual([...new Set(during.map((r) => r.status))], [200]);
      await eventually('b reported unhealthy', async () => {
        const info = await (await fetch(`http://127.0.0.1:${stack.layout.ports.gatewayStatus}/info`)).json() as { upstreams: Record<string, { url: string; healthy: boolean }[]> };
        return Object.values(info.upstreams).flat().some((x) => x.url.startsWith(b.url) && !x.healthy);
      }, 5000, 100);
      const aBefore = a.count;
      for (let i = 0; i < 20; i++) assert.equal((await t.gw('GET', '/pair')).status, 200);
      assert.equal(a.count - aBefore, 20, 'every request went to the healthy target');

      await b.listen();
      b.count = 0;
      await eventually('b back in rotation', async () => {
        await t.gw('GET', '/pair');
        return b.count > 0;
      }, 5000, 50);
    } finally {
      await a.close();
      await b.close().catch(() => undefined);
    }
  });

  test("a tenant's service can not reach the platform's own ports (status, Admin API, Temporal) through a name for this machine", async () => {
    const a = await tenant('ssrf');
    const other = await tenant('ssrf-other');
    const ports = stack.layout.ports;
    // The Admin API refuses these ports by address when a service is saved (admin-api.test.ts);
    // a name (the machine's own) is resolved by the gateway, and the address it gives is checked.
    const platform = [
      ['status', `http://${hostname()}:${ports.gatewayStatus}`, '/info'],
      ['admin', `http://${hostname()}:${ports.admin}`, '/openapi.json'],
      ['temporal', `http://${hostname()}:${ports.temporalHttp}`, '/api/v1/namespaces'],
    ] as const;
    for (const [name, url] of platform) {
      assert.equal((await a.admin('POST', '/services', { name, url })).status, 201);
      assert.equal((await a.admin('POST', '/routes', { name, service: name, paths: [`/${name}`], strip_path: true })).status, 201);
    }
    const echo = await sandbox();
    try {
      // An upstream of its own on loopback is served (the local stack allows loopback upstreams).
      await a.admin('POST', '/services', { name: 'own', url: echo.url });
      await a.admin('POST', '/routes', { name: 'own', service: 'own', paths: ['/own'] });
      await served(a.gw, '/own');
      for (const [name, , path] of platform) {
        const r = await a.gw('GET', `/${name}${path}`);
        assert.equal(r.status, 502, `${name}: ${r.status} ${r.text}`);
        assert.equal(r.body.error.code, 'upstream_not_allowed');
        assert.ok(!r.text.includes(other.tenant), "no other tenant's name");
      }
    } finally {
      await echo.close();
    }
  });
});

describe('behind a load balancer', () => {
  test("from a trusted proxy, the client's address is X-Forwarded-For's last untrusted entry; from anyone else, the peer's", async () => {
    const echo = await sandbox();
    // This test's requests come from 127.0.0.1: to this gateway, a trusted proxy.
    const behind = await spawnProcess('gateway', stack.env, { FLOWGATE_TRUSTED_PROXIES: '127.0.0.1, ::1' });
    try {
      await eventually('gateway ready', async () => (await fetch(`${behind.statusUrl}/readyz`).catch(() => null))?.status === 200, 30_000, 200);
      const t = await tenant('xff');
      await t.admin('POST', '/services', { name: 'echo', url: echo.url });
      await t.admin('POST', '/routes', { name: 'echo', service: 'echo', paths: ['/echo'] });
      // Only 10.0.0.0/8 may call: the test's own address (127.0.0.1) may not.
      assert.equal((await t.admin('POST', '/plugins', { name: 'ip-restriction', config: { allow: ['10.0.0.0/8'] } })).status, 201);
      const via = gatewayClient(behind.publicUrl!, t.key).call;
      await eventually('ip-restriction served', async () => (await via('GET', '/echo')).status === 403, 5000, 20);
      // The proxy's client, 10.1.2.3: allowed, and the upstream sees the chain, then the peer.
      const allowed = await via('GET', '/echo', undefined, { 'x-forwarded-for': '10.1.2.3', 'x-forwarded-proto': 'https' });
      assert.equal(allowed.status, 200, allowed.text);
      assert.equal(allowed.body.headers['x-forwarded-for'], '10.1.2.3, 127.0.0.1', 'the chain, then the peer the gateway saw');
      assert.equal(allowed.body.headers['x-forwarded-proto'], 'https', "the trusted proxy's scheme");
      assert.ok(allowed.headers.get('strict-transport-security'), 'HSTS: the client used HTTPS at the proxy');
      // A client that forged an entry before reaching the proxy: the proxy appended the real one, which decides.
      assert.equal((await via('GET', '/echo', undefined, { 'x-forwarded-for': '10.1.2.3, 203.0.113.7' })).status, 403);
      // A proxy entry that is no address (one with a port, `unknown`): the peer's address decides.
      assert.equal((await via('GET', '/echo', undefined, { 'x-forwarded-for': '10.1.2.3:52311' })).status, 403);
      // The stack's gateway trusts no proxy: the header is the client's claim, and the peer decides.
      await eventually('the stack gateway refuses the peer', async () => (await t.gw('GET', '/echo', undefined, { 'x-forwarded-for': '10.1.2.3' })).status === 403, 5000, 20);
      const direct = await t.gw('GET', '/echo', undefined, { 'x-forwarded-for': '10.1.2.3', 'x-forwarded-proto': 'https' });
      assert.equal(direct.status, 403, direct.text);
    } finally {
      behind.child.kill('SIGTERM');
      await behind.exited;
      await echo.close();
    }
  });
});

describe('answers without a single upstream', () => {
  test('aggregation merges several backends, flags partial results; a static route answers by itself', async () => {
    const users = await sandbox((req) => ({ body: JSON.stringify({ id: req.url?.split('/').pop(), name: 'Ada', email: 'ada@example.com', internal: 'x' }) }));
    const orders = await sandbox(() => ({ body: JSON.stringify({ orders: [{ id: 1 }, { id: 2 }] }) }));
    const broken = await sandbox(() => ({ status: 500, body: '{"error":"boom"}' }));
    try {
      const t = await tenant('agg');
      for (const [name, s] of [['users', users], ['orders', orders], ['broken', broken]] as const) await t.admin('POST', '/services', { name, url: s.url });
      const route = await t.admin('POST', '/routes', {
        name: 'profile', paths: ['/profile/:id'], methods: ['GET'],
        aggregate: { backends: [{ service: 'users', path: '/users/{id}', allow: ['id', 'name', 'email'] }, { service: 'orders', path: '/orders?user={id}', group: 'history' }], timeout_ms: 2000 },
        transformations: { response: { mask_pii: ['email'] } },
      });
      assert.equal(route.status, 201, route.text);
      await t.admin('POST', '/routes', { name: 'partial', paths: ['/partial/:id'], methods: ['GET'], aggregate: { backends: [{ service: 'users', path: '/users/{id}' }, { service: 'broken', path: '/x', group: 'extra' }] } });
      await t.admin('POST', '/routes', { name: 'teapot', paths: ['/teapot'], methods: ['GET'], static_response: { status: 418, headers: { 'X-Static': 'yes' }, body: { message: 'short and stout' } } });
      await served(t.gw, '/profile/7');
      const r = await t.gw('GET', '/profile/7');
      assert.deepEqual(r.body, { id: '7', name: 'Ada', email: 'a***@example.com', history: { orders: [{ id: 1 }, { id: 2 }] } });
      assert.equal(r.headers.get('x-flowgate-completed'), 'true');
      const p = await t.gw('GET', '/partial/8');
      assert.equal(p.status, 200);
      assert.equal(p.headers.get('x-flowgate-completed'), 'false');
      assert.equal(p.body.id, '8');
      assert.equal(p.body.extra, undefined);
      const s = await t.gw('GET', '/teapot');
      assert.equal(s.status, 418);
      assert.equal(s.headers.get('x-static'), 'yes');
      assert.deepEqual(s.body, { message: 'short and stout' });
      const bad = await t.admin('POST', '/routes', { name: 'both', service: 'users', paths: ['/both'], static_response: { status: 200 } });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.details[0].field, 'body.service');
    } finally {
      await Promise.all([users.close(), orders.close(), broken.close()]);
    }
  });
});

describe('transformations and the response pipeline', () => {
  test('path rewrite, added and removed headers, JSON to XML to the upstream and back, PII masked where the route asks', async () => {
    const xmlUpstream = await sandbox((req, body): { status?: number; headers?: Record<string, string>; body: string } => {
      if (req.headers['if-none-match'] === '"v1"') return { status: 304, body: '' };
      if (req.url?.includes('missing')) return { status: 404, headers: { 'content-type': 'text/html' }, body: '<html>no such account</html>' };
      return {
        headers: { 'content-type': 'application/xml', 'x-legacy-session': 'php-42' },
        // What the upstream received, echoed: the body's format and the headers the route adds and removes.
        body: `<?xml version="1.0"?><reply><path>${req.url}</path><got>${body.length > 0 ? 'xml' : 'none'}</got><type>${String(req.headers['content-type'])}</type>`
          + `<user>${String(req.headers['x-user-id'])}</user><range>${String(req.headers.range)}</range><debug>${String(req.headers['x-debug'])}</debug>`
          + `<version>${String(req.headers['x-api-version'])}</version><card>4111 1111 1111 1111</card></reply>`,
      };
    });
    try {
      const t = await tenant('xf');
      await t.admin('POST', '/services', { name: 'legacy', url: xmlUpstream.url });
      const created = await t.admin('POST', '/routes', {
        name: 'legacy', service: 'legacy', paths: ['/v2/accounts'],
        transformations: {
          request: {
            rewrite_path: { pattern: '^/v2/accounts/(\\d+)$', replacement: '/legacy/account.php?id=$1' }, body: 'json-to-xml',
            remove_headers: ['X-Debug'], add_headers: { 'X-Api-Version': 'legacy-2' },
          },
          response: { body: 'xml-to-json', mask_pii: ['card'], remove_headers: ['X-Legacy-Session'], add_headers: { 'X-Converted-By': 'flowgate' } },
        },
      });
      assert.equal(created.status, 201, created.text);
      await eventually('served', async () => (await t.gw('POST', '/v2/accounts/42', { a: 1 })).status === 200, 5000, 20);
      const r = await t.gw('POST', '/v2/accounts/42', { amount: 5 }, { 'x-debug': '1' });
      assert.equal(r.status, 200, r.text);
      assert.match(r.headers.get('content-type') ?? '', /json/);
      assert.equal(r.body.path, '/legacy/account.php?id=42');
      assert.equal(r.body.got, 'xml');
      assert.match(r.body.type, /xml/);
      assert.equal(r.body.user, 'client');
      // The request's header edits reached the upstream with the converted body; the answer's came back with the converted one.
      assert.equal(r.body.debug, 'undefined', 'X-Debug is removed before the upstream');
      assert.equal(r.body.version, 'legacy-2', 'X-Api-Version is added for the upstream');
      assert.equal(r.headers.get('x-legacy-session'), null, 'the upstream\'s X-Legacy-Session is removed');
      assert.equal(r.headers.get('x-converted-by'), 'flowgate', 'X-Converted-By is added to the answer');
      assert.match(String(r.body.card), /1111$/);
      assert.doesNotMatch(String(r.body.card), /4111/);
      // A masked route reads whole bodies: a Range would have the upstream send fragments masked one by one.
      assert.equal((await t.gw('POST', '/v2/accounts/42', { a: 1 }, { range: 'bytes=0-20' })).body.range, 'undefined');
      // Only a successful answer with a body is converted: a 304 and an error page pass as they are.
      const notModified = await t.gw('GET', '/v2/accounts/42', undefined, { 'if-none-match': '"v1"' });
      assert.equal(notModified.status, 304, notModified.text);
      const missing = await t.gw('GET', '/v2/accounts/missing');
      assert.equal(missing.status, 404, missing.text);
      assert.match(missing.headers.get('content-type') ?? '', /text\/html/);
      const badRegex = await t.admin('POST', '/routes', { name: 'bad', service: 'legacy', paths: ['/bad'], transformations: { request: { rewrite_path: { pattern: '(a+)+$', replacement: '/' } } } });
      assert.equal(badRegex.status, 400);
      assert.equal(badRegex.body.error.details[0].field, 'body.transformations.request.rewrite_path.pattern');
    } finally {
      await xmlUpstream.close();
    }
  });

  test("an upstream credential by reference: the config holds {vault:NAME#FIELD}, the upstream gets the workspace's secret from OpenBao", async () => {
    const echo = await sandbox();
    const vault = createVault(stack.env.FLOWGATE_VAULT_ADDR!, stack.env.FLOWGATE_VAULT_TOKEN);
    try {
      const [a, b] = [await tenant('ref'), await tenant('ref-other')];
      const secret = `Bearer sk_${randomUUID()}`;
      await vault.write(vaultPaths.upstreamSecret(a.tenant, 'orders-api'), { data: { token: secret } });
      const ref = '{vault:orders-api#token}';
      for (const t of [a, b]) {
        await t.admin('POST', '/services', { name: 'echo', url: echo.url });
        assert.equal((await t.admin('POST', '/routes', { name: 'orders', service: 'echo', paths: ['/orders'], transformations: { request: { add_headers: { Authorization: ref } } } })).status, 201);
      }
      await served(a.gw, '/orders');
      // The client's own header naming the reference is sent as it came, never filled in.
      const r = await a.gw('GET', '/orders', undefined, { 'x-echo': ref });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.headers.authorization, secret, 'the upstream got the secret');
      assert.equal(r.body.headers['x-echo'], ref, "a client's header is not a reference the gateway fills in");
      assert.equal((await a.admin('GET', '/routes/orders')).body.transformations.request.add_headers.Authorization, ref, 'the config holds the reference');
      // Another workspace's same reference reads its own path, where there is nothing.
      await served(b.gw, '/orders', 503);
      const other = await b.gw('GET', '/orders');
      assert.equal(other.body.error.code, 'credential_unavailable');
      assert.ok(!other.text.includes(secret));
      // A trigger rule's upstream gets the workspace's request-transformer headers, references filled in too.
      assert.equal((await a.admin('POST', '/plugins', { name: 'request-transformer', config: { add_headers: { 'X-Upstream-Key': '{vault:orders-api#token}' } } })).status, 201);
      assert.equal((await a.admin('POST', '/triggers', { name: 'ordered', route_methods: ['POST'], route_path: '/ordered', workflow_type: 'hello', input_template: { name: 'ref' }, upstream_url: echo.url })).status, 201);
      let forwarded: Awaited<ReturnType<typeof a.gw>> | undefined; // the rule is served after the plugin, created first
      await eventually('the rule served', async () => ((forwarded = await a.gw('POST', '/ordered', {})).status !== 404), 5000, 50);
      assert.equal(forwarded!.status, 200, forwarded!.text);
      assert.equal(forwarded!.body.headers['x-upstream-key'], secret, "the rule's upstream got the secret");
      assert.ok(forwarded!.headers.get('x-workflow-execution-id'), 'and the trigger was accepted');
    } finally {
      await echo.close();
    }
  });

  test('header plugins: request- and response-transformer, correlation-id and cors (a preflight answered without a credential)', async () => {
    const echo = await sandbox((req, body) => ({
      headers: { 'x-internal': 'node-7' },
      body: JSON.stringify({ url: req.url, headers: req.headers, body }),
    }));
    try {
      const t = await tenant('hp');
      await t.admin('POST', '/services', { name: 'echo', url: echo.url });
      await t.admin('POST', '/routes', { name: 'plugged', service: 'echo', paths: ['/plugged'] });
      for (const plugin of [
        { name: 'request-transformer', route: 'plugged', config: { add_headers: { 'X-Source': 'gateway', 'X-Tenant-ID': 'forged' }, remove_headers: ['X-Debug'], add_querystring: { v: '2' } } },
        { name: 'response-transformer', route: 'plugged', config: { add_headers: { 'X-Served-By': 'flowgate' }, remove_headers: ['X-Internal'] } },
        { name: 'correlation-id', route: 'plugged', config: { header_name: 'X-Correlation-ID', echo_downstream: true } },
        { name: 'cors', route: 'plugged', config: { origins: ['https://app.example.com'], methods: ['GET', 'POST'], headers: ['Content-Type', 'X-Tenant-ID'], exposed_headers: ['X-Served-By'], credentials: true } },
      ]) {
        const r = await t.admin('POST', '/plugins', plugin);
        assert.equal(r.status, 201, r.text);
      }
      // The cors plugin is the last one created: once it is served, all four are.
      await eventually('plugins served', async () => (await t.gw('GET', '/plugged', undefined, { origin: 'https://app.example.com' })).headers.get('access-control-allow-origin') !== null, 5000, 20);

      const r = await t.gw('GET', '/plugged/x?a=1', undefined, { 'x-debug': '1', 'x-correlation-id': 'corr-77', origin: 'https://app.example.com' });
      assert.equal(r.status, 200, r.text);
      // request-transformer: headers and query edited on the way up; the gateway's own assertions still win.
      assert.equal(r.body.headers['x-source'], 'gateway');
      assert.equal(r.body.headers['x-debug'], undefined);
      assert.equal(r.body.headers['x-tenant-id'], t.tenant, 'a plugin cannot forge the tenant header');
      assert.equal(r.body.url, '/plugged/x?a=1&v=2');
      // correlation-id: the client's id goes up under the plugin's header and comes back.
      assert.equal(r.body.headers['x-correlation-id'], 'corr-77');
      assert.equal(r.headers.get('x-correlation-id'), 'corr-77');
      // response-transformer.
      assert.equal(r.headers.get('x-internal'), null);
      assert.equal(r.headers.get('x-served-by'), 'flowgate');
      // cors on an ordinary answer.
      assert.equal(r.headers.get('access-control-allow-origin'), 'https://app.example.com');
      assert.equal(r.headers.get('access-control-allow-credentials'), 'true');
      assert.equal(r.headers.get('access-control-expose-headers'), 'X-Served-By');
      assert.match(r.headers.get('vary') ?? '', /Origin/);
      const elsewhere = await t.gw('GET', '/plugged/x', undefined, { origin: 'https://evil.example.com' });
      assert.equal(elsewhere.headers.get('access-control-allow-origin'), null, 'another origin is not allowed');

      // A preflight has no credential: answered before authentication, from the route's plugin.
      const preflight = (origin: string, method: string) => fetch(`${stack.gatewayUrl}/plugged/x`, {
        method: 'OPTIONS', headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'content-type', 'x-tenant-id': t.tenant },
      });
      const upstreamCalls = echo.count;
      const ok = await preflight('https://app.example.com', 'POST');
      assert.equal(ok.status, 204);
      assert.equal(ok.headers.get('access-control-allow-origin'), 'https://app.example.com');
      assert.equal(ok.headers.get('access-control-allow-methods'), 'GET, POST');
      assert.equal(ok.headers.get('access-control-allow-headers'), 'Content-Type, X-Tenant-ID');
      assert.equal(ok.headers.get('access-control-max-age'), '600');
      // As a browser sends it: no X-Tenant-ID (a preflight carries no custom header); the tenant is the host's subdomain.
      const fromBrowser = await new Promise<{ status: number; origin: string | undefined }>((resolve, reject) => {
        const r = httpRequest({
          host: '127.0.0.1', port: new URL(stack.gatewayUrl).port, path: '/plugged/x', method: 'OPTIONS',
          headers: { host: `${t.tenant}.${stack.env.FLOWGATE_TENANT_HOST_SUFFIX ?? 'gw.localhost'}`, origin: 'https://app.example.com', 'access-control-request-method': 'POST' },
        }, (res) => { res.resume(); res.on('end', () => resolve({ status: res.statusCode!, origin: res.headers['access-control-allow-origin'] as string | undefined })); });
        r.on('error', reject);
        r.end();
      });
      assert.deepEqual(fromBrowser, { status: 204, origin: 'https://app.example.com' });
      const refused = await preflight('https://app.example.com', 'DELETE');
      assert.equal(refused.headers.get('access-control-allow-origin'), null, 'a method the plugin does not allow');
      assert.equal(echo.count, upstreamCalls, 'no preflight reached the upstream');
      // Without a cors plugin, an OPTIONS without a credential is refused as any request is.
      await t.admin('POST', '/routes', { name: 'plain', service: 'echo', paths: ['/plain'] });
      await served(t.gw, '/plain');
      const plain = await fetch(`${stack.gatewayUrl}/plain`, { method: 'OPTIONS', headers: { origin: 'https://app.example.com', 'access-control-request-method': 'GET', 'x-tenant-id': t.tenant } });
      assert.equal(plain.status, 401);
    } finally {
      await echo.close();
    }
  });

  test('a gzipped request body reaches the upstream decoded and labelled so; an answer marked no-transform is not compressed', async () => {
    const upstream = await sandbox((req, body) => req.url?.startsWith('/fixed')
      ? { headers: { 'cache-control': 'private, no-transform' }, body: JSON.stringify({ pad: 'x'.repeat(4096) }) }
      : { body: JSON.stringify({ encoding: req.headers['content-encoding'] ?? null, body }) });
    try {
      const t = await tenant('gz');
      await t.admin('POST', '/services', { name: 'up', url: upstream.url });
      await t.admin('POST', '/routes', { name: 'up', service: 'up', paths: ['/echo', '/fixed'] });
      await served(t.gw, '/echo');
      const sent = await fetch(`${stack.gatewayUrl}/echo`, {
        method: 'POST', body: zlib.gzipSync(JSON.stringify({ order: 42 })),
        headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json', 'content-encoding': 'gzip' },
      });
      assert.equal(sent.status, 200);
      const echoed = await sent.json() as { encoding: string | null; body: string };
      assert.deepEqual(JSON.parse(echoed.body), { order: 42 });
      assert.equal(echoed.encoding, null, 'the plain body is not labelled gzip');
      const big = await fetch(`${stack.gatewayUrl}/echo`, { headers: { authorization: `Bearer ${t.key}`, 'accept-encoding': 'gzip' } });
      assert.equal(big.headers.get('content-encoding'), null, 'under the 1 KiB threshold: as it is');
      const fixed = await fetch(`${stack.gatewayUrl}/fixed`, { headers: { authorization: `Bearer ${t.key}`, 'accept-encoding': 'gzip' } });
      assert.equal(fixed.status, 200);
      assert.equal(fixed.headers.get('content-encoding'), null, 'no-transform: not compressed');
      assert.equal((await fixed.json() as { pad: string }).pad.length, 4096);
    } finally {
      await upstream.close();
    }
  });

  test('a path is matched and forwarded as the path it resolves to: dot segments cannot climb out of a route', async () => {
    const pub = await sandbox();
    try {
      const t = await tenant('dots');
      await t.admin('POST', '/services', { name: 'pub', url: pub.url });
      assert.equal((await t.admin('POST', '/routes', { name: 'pub', service: 'pub', paths: ['/public'] })).status, 201);
      await served(t.gw, '/public/x');
      const raw = (path: string) => rawGet<{ url?: string; error?: { code: string } }>(path, { authorization: `Bearer ${t.key}` });
      const before = pub.count;
      for (const path of ['/public/../internal/x', '/public/%2e%2E/internal/x', '/public/..\\internal']) {
        const r = await raw(path);
        assert.equal(r.status, 404, path);
        assert.equal(r.body.error?.code, 'route_not_found', path);
      }
      assert.equal(pub.count, before, 'the upstream saw none of them');
      const inside = await raw('/public/./a/../b?q=1');
      assert.equal(inside.status, 200);
      assert.equal(inside.body.url, '/public/b?q=1');
      // Runs of slashes are one (as the router reads them): `//` is the path `/`, here unrouted.
      const root = await raw('//');
      assert.equal(root.status, 404);
      assert.equal(root.body.error?.code, 'route_not_found');
    } finally {
      await pub.close();
    }
  });

  test('security headers on every answer, the upstream\'s Server and X-Powered-By removed, gzip and brotli, cache headers', async () => {
    const big = await sandbox(() => ({ body: JSON.stringify({ items: Array.from({ length: 200 }, (_, i) => ({ i, text: 'lorem ipsum dolor sit amet' })) }) }));
    try {
      const t = await tenant('resp');
      await t.admin('POST', '/services', { name: 'big', url: big.url });
      await t.admin('POST', '/routes', { name: 'big', service: 'big', paths: ['/big'] });
      await t.admin('POST', '/plugins', { name: 'cache-headers', route: 'big', config: { directive: 'public, max-age=30', vary: ['Accept-Language'] } });
      await eventually('cache headers in force', async () => (await t.gw('GET', '/big')).headers.get('cache-control') === 'public, max-age=30', 5000, 20);
      for (const encoding of ['gzip', 'br'] as const) {
        const res = await request(`${stack.gatewayUrl}/big`, { headers: { authorization: `Bearer ${t.key}`, 'accept-encoding': encoding } });
        const raw = Buffer.from(await res.body.arrayBuffer());
        assert.equal(res.headers['content-encoding'], encoding);
        const text = (encoding === 'gzip' ? gunzipSync(raw) : brotliDecompressSync(raw)).toString();
        assert.equal(JSON.parse(text).items.length, 200);
        assert.ok(raw.length < text.length / 3, `${encoding} compresses: ${raw.length} of ${text.length}`);
        assert.equal(res.headers['x-content-type-options'], 'nosniff');
        assert.ok(res.headers['content-security-policy']);
        assert.equal(res.headers['x-frame-options'], 'DENY');
        assert.equal(res.headers.server, undefined);
        assert.equal(res.headers['x-powered-by'], undefined);
        assert.equal(res.headers['strict-transport-security'], undefined, 'HSTS only over TLS');
        assert.match(String(res.headers.vary ?? ''), /Accept-Language/i);
        assert.match(String(res.headers.vary ?? ''), /Authorization.*X-API-Key.*X-Tenant-ID/, 'public, so keyed on the credential');
      }
      // An upstream's own shared-cacheable Cache-Control on a credential's answer: keyed on the credential too.
      const own = await sandbox(() => ({ headers: { 'cache-control': 'public, max-age=60', vary: 'Accept' }, body: '{}' }));
      try {
        await t.admin('POST', '/services', { name: 'own', url: own.url });
        await t.admin('POST', '/routes', { name: 'own', service: 'own', paths: ['/own'] });
        await served(t.gw, '/own');
        const res = await t.gw('GET', '/own');
        assert.equal(res.headers.get('cache-control'), 'public, max-age=60');
        assert.match(res.headers.get('vary') ?? '', /^Accept, Authorization, X-API-Key, X-Tenant-ID$/);
      } finally {
        await own.close();
      }
      // A redirect the upstream makes to its own address points at the gateway instead.
      const mover = await sandbox((req) => ({ status: 302, headers: { location: `http://127.0.0.1:${mover.port}/base/next?from=${encodeURIComponent(req.url ?? '')}` }, body: '{}' }));
      try {
        await t.admin('POST', '/services', { name: 'mover', url: `${mover.url}/base` });
        await t.admin('POST', '/routes', { name: 'moved', service: 'mover', paths: ['/moved'], strip_path: true });
        let res = await request(`${stack.gatewayUrl}/moved/old`, { headers: { authorization: `Bearer ${t.key}` } });
        for (let i = 0; i < 50 && res.statusCode !== 302; i++) {
          await res.body.dump();
          await new Promise((r) => setTimeout(r, 20));
          res = await request(`${stack.gatewayUrl}/moved/old`, { headers: { authorization: `Bearer ${t.key}` } });
        }
        await res.body.dump();
        assert.equal(res.statusCode, 302);
        assert.equal(res.headers.location, '/moved/next?from=%2Fbase%2Fold');
      } finally {
        await mover.close();
      }
      // Errors are never cached and carry the same headers.
      const denied = await fetch(`${stack.gatewayUrl}/big`);
      assert.equal(denied.status, 401);
      assert.equal(denied.headers.get('cache-control'), 'no-store');
      assert.equal(denied.headers.get('x-content-type-options'), 'nosniff');
    } finally {
      await big.close();
    }
  });
});

describe('what the pipeline checks is what the upstream gets', () => {
  test('a path deny rule holds however the path is spelled: escaped letters, doubled slashes', async () => {
    const echo = await sandbox();
    try {
      const t = await tenant('spell');
      await t.admin('POST', '/services', { name: 'echo', url: echo.url });
      await t.admin('POST', '/routes', { name: 'all', service: 'echo', paths: ['/'] });
      await t.admin('POST', '/plugins', { name: 'authorization', config: { rules: [{ effect: 'deny', paths: ['/admin', '/api/admin'] }, { effect: 'allow' }] } });
      await eventually('deny rule in force', async () => (await t.gw('GET', '/admin/users')).status === 403, 5000, 20);
      const before = echo.count;
      for (const path of ['/%61dmin/users', '/%61dm%69n/users', '/api//admin/x', '//admin/users', '/api/%61%64min/x']) {
        const r = await t.gw('GET', path);
        assert.equal(r.status, 403, `${path}: ${r.status} ${r.text}`);
      }
      assert.equal(echo.count, before, 'none reached the upstream');
      const ok = await t.gw('GET', '/public//%7Eme');
      assert.equal(ok.status, 200);
      assert.equal(ok.body.url, '/public/~me', 'forwarded as the path that was authorized');
      // A header the client's Connection names is hop-by-hop: it stops at the gateway.
      const seen = (await rawGet<{ headers: Record<string, string> }>('/public/x', { authorization: `Bearer ${t.key}`, connection: 'close, x-hop-only', 'x-hop-only': 'secret', 'x-kept': 'yes' })).body.headers;
      assert.equal(seen['x-kept'], 'yes');
      assert.equal(seen['x-hop-only'], undefined);
      // What the gateway tells the upstream about the request is its own: the client's values
      // (and their underscore spellings, read as the same names by CGI-style servers) stop here.
      const spoofed = (await rawGet<{ headers: Record<string, string> }>('/public/x', {
        authorization: `Bearer ${t.key}`, 'x-forwarded-host': 'evil.example', 'x-forwarded-proto': 'https', 'x-real-ip': '6.6.6.6',
        forwarded: 'for=6.6.6.6;host=evil.example', 'x-user-id': 'admin', x_user_id: 'admin', x_tenant_id: 'other', 'x-forwarded_for': '6.6.6.6',
      })).body.headers;
      assert.equal(spoofed['x-forwarded-host'], new URL(stack.gatewayUrl).host);
      assert.equal(spoofed['x-forwarded-proto'], 'http');
      assert.equal(spoofed['x-user-id'], 'client');
      for (const h of ['x-real-ip', 'forwarded', 'x_user_id', 'x_tenant_id', 'x-forwarded_for']) assert.equal(spoofed[h], undefined, h);
    } finally {
      await echo.close();
    }
  });

  test("the client's Accept-Encoding cannot switch PII masking off; a JSON body reaches the upstream byte for byte", async () => {
    const pii = JSON.stringify({ email: 'jane.doe@example.com', card: '4111 1111 1111 1111' });
    const upstream = await sandbox((req, body) => {
      const wanted = String(req.headers['accept-encoding'] ?? '');
      if (req.url?.startsWith('/echo')) return { body };
      // An upstream that compresses whenever the client accepts it.
      return wanted.includes('gzip') ? { headers: { 'content-encoding': 'gzip' }, body: gzipSync(pii) } : { body: pii };
    });
    try {
      const t = await tenant('masked');
      await t.admin('POST', '/services', { name: 'up', url: upstream.url });
      await t.admin('POST', '/routes', { name: 'masked', service: 'up', paths: ['/masked'], transformations: { response: { mask_pii: ['email', 'card'] } } });
      await t.admin('POST', '/routes', { name: 'echo', service: 'up', paths: ['/echo'] });
      await served(t.gw, '/masked');
      const res = await request(`${stack.gatewayUrl}/masked`, { headers: { authorization: `Bearer ${t.key}`, 'accept-encoding': 'gzip' } });
      const raw = Buffer.from(await res.body.arrayBuffer());
      const text = res.headers['content-encoding'] === 'gzip' ? gunzipSync(raw).toString() : raw.toString();
      assert.equal(res.statusCode, 200);
      assert.doesNotMatch(text, /jane\.doe|4111 1111 1111 1111/, text);

      // Big integers and spacing survive: the upstream gets the bytes the client sent.
      const sent = '{ "id": 12345678901234567890, "n": 1.50 }';
      const echoed = await request(`${stack.gatewayUrl}/echo`, { method: 'POST', headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json' }, body: sent });
      assert.equal(await echoed.body.text(), sent);
    } finally {
      await upstream.close();
    }
  });

  test('an aggregate answers by its deadline even while a backend cannot connect', async () => {
    const fast = await sandbox(() => ({ body: '{"fast":true}' }));
    // A backend whose connects hang: a listening socket that never accepts, its backlog filled, so
    // the kernel leaves further SYNs unanswered (Node's own servers always accept).
    const hole = spawn('python3', ['-c', 'import socket,sys,time\ns=socket.socket();s.bind(("127.0.0.1",0));s.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(120)'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const fillers: Socket[] = [];
    try {
      const port = Number(await new Promise<string>((resolve) => hole.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim()))));
      for (let i = 0; i < 3; i++) fillers.push(connect(port, '127.0.0.1').on('error', () => undefined));
      await new Promise((r) => setTimeout(r, 300));
      const t = await tenant('deadline');
      await t.admin('POST', '/services', { name: 'fast', url: fast.url });
      await t.admin('POST', '/services', { name: 'black', url: `http://127.0.0.1:${port}`, connect_timeout_ms: 10_000 });
      await t.admin('POST', '/routes', { name: 'both', paths: ['/both'], aggregate: { timeout_ms: 300, backends: [{ service: 'black', path: '/b' }, { service: 'fast', path: '/a' }] } });
      await served(t.gw, '/both');
      const t0 = Date.now();
      const r = await t.gw('GET', '/both');
      const took = Date.now() - t0;
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-flowgate-completed'), 'false');
      assert.equal(r.body.fast, true, 'the fast backend, listed after the hanging one, was called beside it');
      assert.ok(took < 1500, `answered in ${took} ms, the deadline is 300 ms`);
    } finally {
      for (const s of fillers) s.destroy();
      hole.kill();
      await fast.close();
    }
  });

  test('request-size-limiting counts a chunked body too', async () => {
    const echo = await sandbox();
    try {
      const t = await tenant('chunked');
      await t.admin('POST', '/services', { name: 'echo', url: echo.url });
      await t.admin('POST', '/routes', { name: 'upload', service: 'echo', paths: ['/upload'] });
      await t.admin('POST', '/plugins', { name: 'request-size-limiting', route: 'upload', config: { allowed_payload_size_bytes: 1024 } });
      await eventually('limit in force', async () => (await t.gw('POST', '/upload', { x: 'y'.repeat(2000) })).status === 413, 5000, 20);
      const before = echo.count;
      const status = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(`${stack.gatewayUrl}/upload`, { method: 'POST', headers: { authorization: `Bearer ${t.key}`, 'content-type': 'text/plain', 'transfer-encoding': 'chunked' } }, (res) => { res.resume(); resolve(res.statusCode!); });
        req.on('error', reject);
        for (let i = 0; i < 10; i++) req.write('z'.repeat(1000));
        req.end();
      });
      assert.equal(status, 413);
      assert.equal(echo.count, before, 'nothing forwarded');
      // The platform's own routes too: a workflow start with a chunked body past a workspace-wide limit.
      await t.admin('POST', '/plugins', { name: 'request-size-limiting', config: { allowed_payload_size_bytes: 1024 } });
      await eventually('workspace limit in force', async () => (await t.gw('POST', '/api/workflows/hello', { name: 'x'.repeat(2000) })).status === 413, 5000, 20);
      const started = await new Promise<number>((resolve, reject) => {
        const req = httpRequest(`${stack.gatewayUrl}/api/workflows/hello`, { method: 'POST', headers: { authorization: `Bearer ${t.key}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' } }, (res) => { res.resume(); resolve(res.statusCode!); });
        req.on('error', reject);
        req.write('{"name":"');
        for (let i = 0; i < 10; i++) req.write('n'.repeat(150));
        req.end('"}');
      });
      assert.equal(started, 413, 'a chunked start past the limit');
    } finally {
      await echo.close();
    }
  });
});

