// The gateway's request pipeline, stages 2 to 5, against the running stack: the tenant from
// every source and conflicts between them, API keys, JWTs (HS256 from Vault, RS256 and ES256
// from a JWKS) with their edge cases, RBAC/ABAC, and cross-tenant attempts on every endpoint
// (property-based) all refused.
import assert from 'node:assert/strict';
import { createHmac, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { exportJWK, SignJWT } from 'jose';
import { request } from 'undici';
import { createVault } from '../../lib/vault';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, testStack } from '../helpers/stack';

const stack = testStack();
const vault = createVault(stack.env.FLOWGATE_VAULT_ADDR!, stack.env.FLOWGATE_VAULT_TOKEN);

/** A sandbox upstream that echoes what it received and counts requests per tenant header. */
let upstream: Server;
let upstreamUrl: string;
const hits = new Map<string, number>();
before(async () => {
  upstream = createServer((req, res) => {
    const tenant = String(req.headers['x-tenant-id']);
    hits.set(tenant, (hits.get(tenant) ?? 0) + 1);
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ url: req.url, headers: req.headers }));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
after(() => new Promise<void>((r) => upstream.close(() => r())));

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const hsSecret = randomBytes(32).toString('base64url');

async function publicJwk(key: KeyObject, kid: string, alg: string) {
  return { ...(await exportJWK(key)), kid, alg, use: 'sig' };
}

/** A tenant with a route to the echo upstream, a consumer `alice` (developer) and the jwt plugin. */
async function jwtTenant() {
  const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'jwt');
  await t.admin('POST', '/services', { name: 'echo', url: upstreamUrl });
  assert.equal((await t.admin('POST', '/routes', { name: 'echo', service: 'echo', paths: ['/echo'] })).status, 201);
  const alice = await t.admin('POST', '/consumers', { username: 'alice', roles: ['developer'] });
  const key = (await t.admin('POST', `/consumers/${alice.body.id}/keys`)).body.key as string;
  await vault.write(`secret/data/jwt/${t.tenant}/hs-1`, { data: { secret: hsSecret } });
  const plugin = await t.admin('POST', '/plugins', {
    name: 'jwt',
    config: {
      algorithms: ['RS256', 'ES256', 'HS256'], issuers: ['https://idp.test'], audiences: ['flowgate'],
      jwks: { keys: [await publicJwk(rsa.publicKey, 'rsa-1', 'RS256'), await publicJwk(ec.publicKey, 'ec-1', 'ES256')] },
      hs256_kids: ['hs-1'], clock_skew_seconds: 5,
    },
  });
  assert.equal(plugin.status, 201, plugin.text);
  await eventually('the gateway serves the route', async () => (await gatewayClient(stack.gatewayUrl, key).call('GET', '/echo')).status === 200, 5000, 20);
  return { ...t, key, pluginId: plugin.body.id as string };
}

type Claims = Record<string, unknown>;
async function sign(alg: 'RS256' | 'ES256' | 'HS256', claims: Claims, opts: { kid?: string; exp?: number | string; nbf?: number } = {}) {
  const key = alg === 'RS256' ? rsa.privateKey : alg === 'ES256' ? ec.privateKey : Buffer.from(hsSecret);
  const kid = opts.kid ?? (alg === 'RS256' ? 'rsa-1' : alg === 'ES256' ? 'ec-1' : 'hs-1');
  let jwt = new SignJWT({ iss: 'https://idp.test', aud: 'flowgate', ...claims }).setProtectedHeader({ alg, kid }).setIssuedAt();
  jwt = jwt.setExpirationTime(opts.exp ?? '5m');
  if (opts.nbf !== undefined) jwt = jwt.setNotBefore(opts.nbf);
  return jwt.sign(key);
}

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

const get = (token: string, path = '/echo', headers: Record<string, string> = {}) => gatewayClient(stack.gatewayUrl, token).call('GET', path, undefined, headers);

describe('JWT authentication', () => {
  let t: Awaited<ReturnType<typeof jwtTenant>>;
  before(async () => { t = await jwtTenant(); });

  test('RS256, ES256 and HS256 (secret from Vault) are accepted; the upstream sees the user and tenant, never the token', async () => {
    for (const alg of ['RS256', 'ES256', 'HS256'] as const) {
      const r = await get(await sign(alg, { sub: 'alice', tenant: t.tenant }));
      assert.equal(r.status, 200, `${alg}: ${r.text}`);
      assert.equal(r.body.headers['x-user-id'], 'alice');
      assert.equal(r.body.headers['x-tenant-id'], t.tenant);
      assert.equal(r.body.headers.authorization, undefined);
    }
    // No tenant claim: X-Tenant-ID names the workspace whose keys check the token.
    assert.equal((await get(await sign('RS256', { sub: 'bob' }), '/echo', { 'x-tenant-id': t.tenant })).status, 200);
  });

  test('expired, not yet valid, wrong issuer, wrong audience, no exp, tampered, unknown kid: 401 with the reason', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, string][] = [
      ['expired', await sign('RS256', { sub: 'alice', tenant: t.tenant }, { exp: now - 60 })],
      ['not_yet_valid', await sign('RS256', { sub: 'alice', tenant: t.tenant }, { nbf: now + 600 })],
      ['claim_iss', await sign('RS256', { sub: 'alice', tenant: t.tenant, iss: 'https://evil.test' })],
      ['claim_aud', await sign('RS256', { sub: 'alice', tenant: t.tenant, aud: 'someone-else' })],
      ['unknown_kid', await sign('RS256', { sub: 'alice', tenant: t.tenant }, { kid: 'rsa-9' })],
      ['unknown_kid', await sign('HS256', { sub: 'alice', tenant: t.tenant }, { kid: 'hs-9' })],
    ];
    const good = await sign('ES256', { sub: 'alice', tenant: t.tenant });
    const [h, p, s] = good.split('.');
    cases.push(['bad_signature', `${h}.${b64({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), sub: 'mallory' })}.${s}`]);
    const noExp = await new SignJWT({ iss: 'https://idp.test', aud: 'flowgate', sub: 'alice', tenant: t.tenant }).setProtectedHeader({ alg: 'RS256', kid: 'rsa-1' }).sign(rsa.privateKey);
    cases.push(['claim_exp', noExp]);
    for (const [reason, token] of cases) {
      const r = await get(token);
      assert.equal(r.status, 401, `${reason}: ${r.text}`);
      assert.equal(r.body.error.code, 'invalid_token');
      assert.equal(r.body.error.details[0].message, reason);
    }
  });

  test('alg none and algorithm confusion (an HS256 token keyed with the RSA public key) are refused', async () => {
    const claims = { sub: 'alice', tenant: t.tenant, iss: 'https://idp.test', aud: 'flowgate', exp: Math.floor(Date.now() / 1000) + 300 };
    const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
    const r1 = await get(none);
    assert.equal(r1.status, 401);
    assert.equal(r1.body.error.details[0].message, 'alg_none');
    // The classic confusion: sign with HMAC using the server's public key as the secret, naming the RSA key's kid.
    const pem = rsa.publicKey.export({ type: 'spki', format: 'pem' });
    const head = b64({ alg: 'HS256', kid: 'rsa-1', typ: 'JWT' });
    const body = b64(claims);
    const sig = createHmac('sha256', pem).update(`${head}.${body}`).digest('base64url');
    const r2 = await get(`${head}.${body}.${sig}`);
    assert.equal(r2.status, 401);
    assert.equal(r2.body.error.details[0].message, 'unknown_kid');
    // An RS256 header over an ES256 key's kid finds no key of that type either.
    const r3 = await get(await sign('ES256', { sub: 'alice', tenant: t.tenant }, { kid: 'rsa-1' }));
    assert.equal(r3.status, 401);
  });

  test('a token whose tenant claim disagrees with X-Tenant-ID or the host is refused; a tenant without the jwt plugin takes no JWTs', async () => {
    const token = await sign('RS256', { sub: 'alice', tenant: t.tenant });
    const other = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'jwt-none');
    const r1 = await get(token, '/echo', { 'x-tenant-id': other.tenant });
    assert.equal(r1.status, 403, r1.text);
    assert.equal(r1.body.error.code, 'tenant_mismatch');
    const r2 = await get(await sign('RS256', { sub: 'alice', tenant: other.tenant }));
    assert.equal(r2.status, 401);
    assert.equal(r2.body.error.code, 'invalid_token');
  });

  test('a verified token is cached, but not past a config change that removes the plugin', async () => {
    const token = await sign('RS256', { sub: 'alice', tenant: t.tenant });
    assert.equal((await get(token)).status, 200);
    assert.equal((await t.admin('DELETE', `/plugins/${t.pluginId}`)).status, 204);
    await eventually('the cached token stops working', async () => (await get(token)).status === 401, 3000, 20);
  });
});

describe('tenant extraction', () => {
  test('the host subdomain names the tenant; X-Tenant-ID, host and API key must agree', async () => {
    const a = await jwtTenant();
    const b = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'host');
    const port = stack.layout.ports.gateway;
    const call = async (host: string, headers: Record<string, string> = {}) => {
      const res = await request(`http://127.0.0.1:${port}/echo`, { headers: { host, authorization: `Bearer ${a.key}`, ...headers } });
      return { status: res.statusCode, body: await res.body.json() as { error?: { code: string } } };
    };
    assert.equal((await call(`${a.tenant}.gw.localhost:${port}`)).status, 200);
    const wrongHost = await call(`${b.tenant}.gw.localhost:${port}`);
    assert.equal(wrongHost.status, 403);
    assert.equal(wrongHost.body.error!.code, 'tenant_mismatch');
    const wrongHeader = await call(`${a.tenant}.gw.localhost:${port}`, { 'x-tenant-id': b.tenant });
    assert.equal(wrongHeader.status, 403);
    // A host outside the suffix names no tenant.
    assert.equal((await call(`example.com:${port}`)).status, 200);
  });
});

describe('authorization (RBAC and ABAC)', () => {
  test('roles nest, custom roles match by name, claims, methods, paths and source addresses decide; the first matching rule wins', async () => {
    const t = await jwtTenant();
    await t.admin('POST', '/roles', { name: 'auditor', grants: ['audit-logs:read'] });
    const consumers: Record<string, string> = {};
    for (const [name, roles] of [['vic', ['viewer']], ['ada', ['admin']], ['aud', ['auditor']]] as const) {
      const c = await t.admin('POST', '/consumers', { username: name, roles });
      consumers[name] = (await t.admin('POST', `/consumers/${c.body.id}/keys`)).body.key;
    }
    consumers.alice = t.key;
    const plugin = await t.admin('POST', '/plugins', {
      name: 'authorization', route: 'echo',
      config: {
        rules: [
          { effect: 'deny', paths: ['/echo/admin'], roles: ['developer'], claims: undefined },
          { effect: 'allow', paths: ['/echo/admin'], roles: ['admin'] },
          { effect: 'allow', roles: ['auditor'], methods: ['GET'] },
          { effect: 'allow', roles: ['developer'], methods: ['GET', 'POST'] },
          { effect: 'allow', roles: ['viewer'], methods: ['GET'], source_cidrs: ['10.0.0.0/8'] },
          { effect: 'allow', claims: { scope: ['echo:write'] } },
        ],
      },
    });
    assert.equal(plugin.status, 201, plugin.text);
    const call = (who: string, method: string, path: string) => gatewayClient(stack.gatewayUrl, consumers[who]!).call(method, path, method === 'GET' ? undefined : {});
    await eventually('rules in force', async () => (await call('vic', 'GET', '/echo')).status === 403, 5000, 20);
    const expect: [string, string, string, number][] = [
      ['alice', 'GET', '/echo', 200], ['alice', 'POST', '/echo', 200], ['alice', 'DELETE', '/echo', 403],
      ['ada', 'DELETE', '/echo', 403], // admin nests developer: GET and POST only, by the developer rule
      ['ada', 'GET', '/echo/admin', 403], // the developer deny comes first and admin holds developer
      ['aud', 'GET', '/echo', 200], ['aud', 'POST', '/echo', 403],
      ['vic', 'GET', '/echo', 403], // not from 10.0.0.0/8
    ];
    for (const [who, method, path, status] of expect) {
      const r = await call(who, method, path);
      assert.equal(r.status, status, `${who} ${method} ${path}: ${r.text}`);
      if (status === 403) assert.equal(r.body.error.code, 'forbidden');
    }
    // ABAC on a claim: a JWT for an unknown subject with the scope may DELETE.
    const token = await sign('RS256', { sub: 'svc-robot', tenant: t.tenant, scope: 'echo:write' });
    assert.equal((await gatewayClient(stack.gatewayUrl, token).call('DELETE', '/echo')).status, 200);
  });
});

describe('cross-tenant attempts', () => {
  test('with tenant A\'s credentials, nothing of tenant B is reachable on any endpoint (property-based)', async () => {
    const a = await jwtTenant();
    const b = await jwtTenant();
    await b.admin('POST', '/routes', { name: 'secret', service: 'echo', paths: ['/b-only'] });
    const bRun = await gatewayClient(stack.gatewayUrl, b.key).start('hello', { name: 'b' });
    assert.equal(bRun.status, 202);
    const bId = bRun.body.execution_id as string;
    await eventually('B\'s route served', async () => (await gatewayClient(stack.gatewayUrl, b.key).call('GET', '/b-only')).status === 200, 5000, 20);
    const before = hits.get(b.tenant) ?? 0;
    const aJwtAsB = await sign('RS256', { sub: 'alice', tenant: b.tenant }); // B trusts this key too, but the token says B while…
    const endpoints = [
      ['GET', `/api/workflows/${bId}`], ['GET', `/api/workflows/${bId}/result?wait=0`], ['POST', `/api/workflows/${bId}/signals/x`],
      ['POST', `/api/workflows/${bId}/cancel`], ['GET', '/b-only'], ['GET', '/b-only/x'], ['GET', '/api/workflows?limit=50'],
    ] as const;
    const credentials = ['key', 'jwt'] as const;
    const tenantHints = ['none', 'header', 'host'] as const;
    /** One request for `endpoint` (its path as given, or a variant of it) with A's credential. */
    const attempt = async (endpoint: (typeof endpoints)[number], path: string, cred: (typeof credentials)[number], hint: (typeof tenantHints)[number]) => {
      const method = endpoint[0];
      const token = cred === 'key' ? a.key : await sign('RS256', { sub: 'alice', tenant: a.tenant });
      const headers: Record<string, string> = { authorization: `Bearer ${token}` };
      if (hint === 'header') headers['x-tenant-id'] = b.tenant;
      if (hint === 'host') headers.host = `${b.tenant}.gw.localhost:${stack.layout.ports.gateway}`;
      if (method === 'POST') headers['content-type'] = 'application/json';
      const res = await request(`${stack.gatewayUrl}${path}`, { method, headers, body: method === 'POST' ? '{}' : undefined });
      const text = await res.body.text();
      const what = `${method} ${path} ${cred} ${hint}: ${res.statusCode} ${text}`;
      if (endpoint[1].startsWith('/api/workflows?')) {
        // The list answers, with A's executions only.
        if (res.statusCode === 200) assert.ok(!text.includes(bId), `B's execution listed for A: ${what}`);
        else assert.ok(res.statusCode === 403 || (path !== endpoint[1] && [400, 404].includes(res.statusCode)), what);
        return;
      }
      // 400: a variant the gateway refuses as malformed (an unsafe path, say).
      assert.ok([400, 401, 403, 404].includes(res.statusCode), what);
      assert.ok(!text.includes('"workflow_type"'), `no status of B's execution: ${what}`);
    };
    // Every combination of endpoint, credential and tenant hint (42), each once.
    for (const e of endpoints) for (const cred of credentials) for (const hint of tenantHints) await attempt(e, e[1], cred, hint);
    // Then generated variants of the same paths (a character percent-encoded, a trailing or
    // doubled slash, another letter case, a query, a dot segment) with any credential and hint.
    const variant = (path: string, kind: string, at: number) => {
      const [p, q] = path.split('?') as [string, string | undefined];
      const i = 1 + (at % (p.length - 1));
      const changed = kind === 'encode' && p[i] !== '/' ? `${p.slice(0, i)}%${p.charCodeAt(i).toString(16).toUpperCase()}${p.slice(i + 1)}`
        : kind === 'slash' ? `${p}/` : kind === 'double' ? `/${p}` : kind === 'upper' ? p.toUpperCase() : kind === 'dot' ? `/x/..${p}` : p;
      const query = [q, kind === 'query' ? `tenant=${b.tenant}` : undefined].filter(Boolean).join('&');
      return query ? `${changed}?${query}` : changed;
    };
    await fc.assert(fc.asyncProperty(
      fc.constantFrom(...endpoints), fc.constantFrom('encode', 'slash', 'double', 'upper', 'dot', 'query'), fc.nat(64),
      fc.constantFrom(...credentials), fc.constantFrom(...tenantHints),
      async (e, kind, at, cred, hint) => attempt(e, variant(e[1], kind, at), cred, hint),
    ), { numRuns: 60 });
    // And the one token that names B while signed by a key B also trusts does reach B: trust is per workspace, by design.
    assert.equal((await get(aJwtAsB, '/b-only')).status, 200);
    assert.equal((hits.get(b.tenant) ?? 0) - before, 1, 'B\'s upstream saw only that one request');
  });
});
