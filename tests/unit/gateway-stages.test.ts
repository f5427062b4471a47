// The gateway's pure pipeline stages on their own: tenant resolution and its conflicts, the
// authorization rules (RBAC nesting and each ABAC condition), and which plugins and rate
// limits a workspace's config puts in force for a route and consumer.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { ApiError } from '../../lib/errors';
import type { Snapshot } from '../../lib/control-plane/versions';
import { authorize, effectiveRoles, ipAllowed, pathForRules, type AuthorizationConfig } from '../../gateway/authz';
import { requestTarget } from '../../lib/request-target';
import { resolveTenant, tenantFromCertificate, tenantFromHost } from '../../gateway/tenant';
import { WorkspaceView } from '../../gateway/workspace-view';
import { publicLocation, userIdHeader } from '../../gateway/configured-routes';

describe('tenant', () => {
  test('all sources agree: the tenant; any disagreement: 403 naming the first source', () => {
    assert.equal(resolveTenant([{ source: 'credential', tenant: 'acme' }, { source: 'header', tenant: 'acme' }]), 'acme');
    assert.throws(() => resolveTenant([{ source: 'credential', tenant: 'acme' }, { source: 'host', tenant: 'globex' }]), (err: ApiError) => {
      assert.equal(err.statusCode, 403);
      assert.equal(err.code, 'tenant_mismatch');
      assert.deepEqual(err.details, [{ field: 'headers.host', message: 'must match the tenant of the credential' }]);
      assert.doesNotMatch(err.message, /acme|globex/, 'no tenant named in the answer');
      return true;
    });
    assert.throws(() => resolveTenant([]), (err: ApiError) => err.statusCode === 401);
  });

  test('host subdomains under the suffix only, one label, a valid tenant id', () => {
    assert.equal(tenantFromHost('acme.gw.localhost:8000', 'gw.localhost'), 'acme');
    assert.equal(tenantFromHost('ACME.GW.localhost', 'gw.localhost'), 'acme');
    assert.equal(tenantFromHost('a.b.gw.localhost', 'gw.localhost'), undefined);
    assert.equal(tenantFromHost('gw.localhost', 'gw.localhost'), undefined);
    assert.equal(tenantFromHost('evilgw.localhost', 'gw.localhost'), undefined);
    assert.equal(tenantFromHost('acme.gw.localhost', undefined), undefined);
  });

  test('a certificate names its tenant by SAN URI, else O; its consumer by CN', () => {
    const cert = (subject: Record<string, string>, san?: string) => ({ subject, subjectaltname: san, fingerprint256: 'AB:CD:EF' }) as never;
    assert.deepEqual(tenantFromCertificate(cert({ CN: 'alice', O: 'other' }, 'DNS:x, URI:urn:flowgate:tenant:acme')), { tenant: 'acme', consumer: 'alice', fingerprint: 'abcdef' });
    assert.equal(tenantFromCertificate(cert({ CN: 'bob', O: 'globex' }))?.tenant, 'globex');
    // Only a SAN entry that is exactly a tenant URI counts, and two tenants are none.
    assert.equal(tenantFromCertificate(cert({ CN: 'ci' }, 'DNS:xURI:urn:flowgate:tenant:victim, URI:urn:flowgate:tenant:acme'))?.tenant, 'acme');
    assert.equal(tenantFromCertificate(cert({ CN: 'ci' }, 'URI:urn:flowgate:tenant:acme/URI:urn:flowgate:tenant:victim')), undefined);
    assert.equal(tenantFromCertificate(cert({ CN: 'ci' }, 'URI:urn:flowgate:tenant:acme, URI:urn:flowgate:tenant:victim')), undefined);
    assert.equal(tenantFromCertificate(cert({ CN: 'ci' }, 'URI:urn:flowgate:tenant:acme, URI:urn:flowgate:tenant:acme'))?.tenant, 'acme');
    assert.equal(tenantFromCertificate(cert({ CN: 'bob', O: 'Not A Tenant' })), undefined);
    assert.equal(tenantFromCertificate(cert({ O: 'globex' })), undefined);
  });
});

describe('authorization', () => {
  const at = (iso: string) => new Date(iso);
  const base = { roles: ['developer'], method: 'GET', path: '/orders/1', ip: '127.0.0.1', now: at('2026-11-18T10:00:00Z') };

  test('built-in roles nest upward only; custom roles match by name', () => {
    assert.deepEqual([...effectiveRoles(['operator'])].sort(), ['developer', 'operator', 'viewer']);
    assert.deepEqual([...effectiveRoles(['auditor'])], ['auditor']);
    const cfg: AuthorizationConfig = { rules: [{ effect: 'allow', roles: ['operator'] }], default: 'deny' };
    assert.equal(authorize(cfg, { ...base, roles: ['admin'] }).allowed, true);
    assert.equal(authorize(cfg, { ...base, roles: ['developer'] }).allowed, false);
  });

  test('each condition can fail a rule; the first matching rule decides; no match is the default', () => {
    const cfg: AuthorizationConfig = {
      rules: [
        { effect: 'deny', source_cidrs: ['10.0.0.0/8'] },
        { effect: 'allow', methods: ['GET'], paths: ['/orders'], hours_utc: { from: 8, to: 18 }, weekdays_utc: [1, 2, 3, 4, 5] },
        { effect: 'allow', claims: { scope: ['orders:write'] } },
      ],
      default: 'deny',
    };
    assert.deepEqual(authorize(cfg, base), { allowed: true, rule: 1 });
    assert.deepEqual(authorize(cfg, { ...base, ip: '::ffff:10.1.2.3' }), { allowed: false, rule: 0 });
    assert.equal(authorize(cfg, { ...base, method: 'POST' }).allowed, false);
    assert.equal(authorize(cfg, { ...base, path: '/ordersx' }).allowed, false, 'a path prefix stops at a segment');
    assert.equal(authorize(cfg, { ...base, now: at('2026-11-18T19:00:00Z') }).allowed, false, 'after hours');
    assert.equal(authorize(cfg, { ...base, now: at('2026-11-22T10:00:00Z') }).allowed, false, 'a Sunday');
    assert.deepEqual(authorize(cfg, { ...base, method: 'DELETE', claims: { scope: ['orders:read', 'orders:write'] } }), { allowed: true, rule: 2 });
    // An OAuth access token's scope is one space-separated string (RFC 9068): each scope counts.
    assert.deepEqual(authorize(cfg, { ...base, method: 'DELETE', claims: { scope: 'orders:read orders:write' } }), { allowed: true, rule: 2 });
    assert.equal(authorize(cfg, { ...base, method: 'DELETE', claims: { scope: 'orders:read orders:writer' } }).allowed, false, 'whole scopes only');
    const readonly: AuthorizationConfig = { rules: [{ effect: 'deny', claims: { scp: ['orders:readonly'] } }], default: 'allow' };
    assert.equal(authorize(readonly, { ...base, claims: { scp: 'openid orders:readonly' } }).allowed, false, 'a deny on one scope among several');
    // Other claims are compared whole: a name with a space is one value.
    const named: AuthorizationConfig = { rules: [{ effect: 'allow', claims: { name: ['Ada'] } }], default: 'deny' };
    assert.equal(authorize(named, { ...base, claims: { name: 'Ada Lovelace' } }).allowed, false);
    assert.equal(authorize({ ...cfg, default: 'allow' }, { ...base, method: 'DELETE' }).allowed, true);
    // A window across midnight.
    const night: AuthorizationConfig = { rules: [{ effect: 'allow', hours_utc: { from: 22, to: 6 } }], default: 'deny' };
    assert.equal(authorize(night, { ...base, now: at('2026-11-18T23:30:00Z') }).allowed, true);
    assert.equal(authorize(night, { ...base, now: at('2026-11-18T12:00:00Z') }).allowed, false);
  });

  test('a path rule holds however the request spells the path: escapes decoded, a trailing slash either way', () => {
    const cfg: AuthorizationConfig = { rules: [{ effect: 'deny', paths: ['/users/@me', '/files/a!b', '/admin/', '/café'] }], default: 'allow' };
    for (const raw of ['/users/%40me', '/users/%40me/', '/files/a%21b', '/admin', '/admin/x', '/caf%C3%A9', '/caf%c3%a9/menu']) {
      assert.equal(authorize(cfg, { ...base, path: requestTarget(raw).pathname }).allowed, false, raw);
    }
    // An encoded slash is not a segment boundary, and what is not under a rule stays allowed.
    for (const raw of ['/users%2F%40me', '/administrator', '/users/@mex', '/files/a%FFb']) {
      assert.equal(authorize(cfg, { ...base, path: requestTarget(raw).pathname }).allowed, true, raw);
    }
    assert.equal(pathForRules('/a%2Fb/%40/'), '/a%2Fb/@');
  });

  test('ip-restriction: deny wins, an allow list must hold the address', () => {
    assert.equal(ipAllowed({ allow: ['192.168.0.0/16'], deny: ['192.168.1.0/24'] }, '192.168.2.9'), true);
    assert.equal(ipAllowed({ allow: ['192.168.0.0/16'], deny: ['192.168.1.0/24'] }, '192.168.1.9'), false);
    assert.equal(ipAllowed({ allow: ['192.168.0.0/16'], deny: [] }, '127.0.0.1'), false);
    assert.equal(ipAllowed({ allow: [], deny: ['::1'] }, '::1'), false);
  });
});

describe('workspace view', () => {
  const snapshot = {
    _format_version: '1', workspace: 'acme', services: [], routes: [], triggers: [], roles: [],
    consumers: [{ id: 'c1', username: 'alice', roles: ['developer'] }, { id: 'c2', username: 'bob' }, { id: 'c3', username: 'carol' }],
    plugins: [
      { id: 'p1', name: 'cache-headers', config: { directive: 'global' }, enabled: true },
      { id: 'p2', name: 'cache-headers', service: 'orders', config: { directive: 'service' }, enabled: true },
      { id: 'p3', name: 'cache-headers', route: 'list', config: { directive: 'route' }, enabled: true },
      { id: 'p4', name: 'cache-headers', route: 'list', consumer: 'alice', config: { directive: 'route+consumer' }, enabled: true },
      { id: 'p5', name: 'ip-restriction', consumer: 'bob', config: { allow: ['10.0.0.1'], deny: [] }, enabled: true },
      { id: 'p6', name: 'cors', config: {}, enabled: false },
      { id: 'p7', name: 'cache-headers', consumer: 'carol', config: { directive: 'consumer' }, enabled: true },
      { id: 'p8', name: 'ip-restriction', route: 'list', config: { allow: ['10.0.0.9'], deny: [] }, enabled: true },
    ],
    policies: [
      { id: 'q1', name: 'quota', scope: 'workspace', limit: 100, window_seconds: 60, algorithm: 'sliding-window', enabled: true },
      { id: 'q2', name: 'per-client', scope: 'route', route: 'list', limit: 10, window_seconds: 1, algorithm: 'token-bucket', enabled: true },
      { id: 'q3', name: 'bob', scope: 'consumer', consumer: 'bob', limit: 5, window_seconds: 60, algorithm: 'fixed-window', enabled: true },
      { id: 'q4', name: 'off', scope: 'workspace', limit: 1, window_seconds: 1, algorithm: 'fixed-window', enabled: false },
    ],
  } as unknown as Snapshot;
  const view = new WorkspaceView(snapshot);

  test("Kong's precedence: consumer+route, consumer+service, consumer, route, service, workspace; disabled ones never apply", () => {
    const directive = (route: { name: string; service?: string } | undefined, consumer?: string) => view.pluginsFor(route, consumer)['cache-headers']?.directive;
    assert.equal(directive({ name: 'list', service: 'orders' }, 'alice'), 'route+consumer');
    assert.equal(directive({ name: 'list', service: 'orders' }, 'bob'), 'route');
    assert.equal(directive({ name: 'get', service: 'orders' }, 'alice'), 'service');
    assert.equal(directive({ name: 'other', service: 'billing' }, 'alice'), 'global');
    assert.equal(directive({ name: 'list', service: 'orders' }, 'carol'), 'consumer', "a consumer's own plugin beats the route's");
    assert.equal(directive({ name: 'get', service: 'orders' }, 'carol'), 'consumer', "and the service's");
    assert.deepEqual(view.pluginsFor({ name: 'list', service: 'orders' }, 'bob')['ip-restriction']?.allow, ['10.0.0.1'], "bob's allow-list, not the route's");
    assert.deepEqual(view.pluginsFor({ name: 'list', service: 'orders' }, 'alice')['ip-restriction']?.allow, ['10.0.0.9']);
    assert.ok(view.pluginsFor(undefined, 'bob')['ip-restriction']);
    assert.equal(view.pluginsFor(undefined, 'alice')['ip-restriction'], undefined);
    assert.equal(view.pluginsFor(undefined, 'alice').cors, undefined);
  });

  test('rate limits: the workspace quota for all, a route policy per consumer, a consumer policy across routes', () => {
    assert.deepEqual(view.limitsFor('acme', 'list', 'alice').map((l) => l.key), ['acme:ws:quota', 'acme:route:list:alice:per-client']);
    assert.deepEqual(view.limitsFor('acme', undefined, 'bob').map((l) => [l.key, l.policy.algorithm]), [['acme:ws:quota', 'sliding-window'], ['acme:consumer:bob:bob', 'fixed-window']]);
  });
});

test('X-User-ID carries a printable-ASCII name as it is, anything else percent-encoded', () => {
  assert.equal(userIdHeader('alice@example.com'), 'alice@example.com');
  assert.equal(userIdHeader('Łukasz'), '%C5%81ukasz');
  assert.equal(userIdHeader('山田'), '%E5%B1%B1%E7%94%B0');
  assert.equal(userIdHeader('a\r\nX-Admin: 1'), 'a%0D%0AX-Admin%3A%201');
});

test("an upstream's Location pointing at itself points at the gateway: origin dropped, base path mapped back", () => {
  const target = 'http://10.0.3.7:8080/base';
  assert.equal(publicLocation('http://10.0.3.7:8080/base/42?x=1#top', target, '/shop/orders/*', true, false), '/shop/orders/42?x=1#top');
  assert.equal(publicLocation('http://10.0.3.7:8080/base', target, '/shop/orders/*', true, false), '/shop/orders');
  assert.equal(publicLocation('/base/42', target, '/shop/orders/*', true, false), '/shop/orders/42', 'relative to the target');
  assert.equal(publicLocation('http://10.0.3.7:8080/base/shop/orders/42', target, '/shop/orders/*', false, false), '/shop/orders/42');
  assert.equal(publicLocation('http://10.0.3.7:8080/elsewhere', target, '/shop/orders/*', true, false), '/elsewhere', 'outside the base: origin dropped only');
  assert.equal(publicLocation('http://10.0.3.7:8080/base/42', target, '/v2/*', true, true), '/base/42', 'a rewritten path cannot be undone');
  assert.equal(publicLocation('https://cdn.example.com/img/1.png', target, '/shop/*', true, false), 'https://cdn.example.com/img/1.png');
  assert.equal(publicLocation('http://10.0.3.7:9999/base/42', target, '/shop/*', true, false), 'http://10.0.3.7:9999/base/42', 'another port is another origin');
});
