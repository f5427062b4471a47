// Pure logic of the control plane: route collisions, diffs, schemas, grants, strip_path.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { allows, BUILT_IN_GRANTS } from '../../admin/auth';
import { upstreamPath } from '../../gateway/configured-routes';
import { parseConfigDocuments } from '../../lib/control-plane/declarative';
import { keyHash } from '../../lib/control-plane/entities';
import { findRouteConflict, normalisePattern } from '../../lib/control-plane/routing';
import { configDocument, pluginDoc, policyDoc, routeDoc, serviceDoc, triggerDoc } from '../../lib/control-plane/schemas';
import { canonical, diffDocuments } from '../../lib/control-plane/versions';
import { hashCredential } from '../../lib/credentials';
import { ApiError } from '../../lib/errors';

test('route collisions: same method, same pattern whatever the parameter names, overlapping hosts', () => {
  assert.equal(normalisePattern('/orders/:id/'), '/orders/:');
  const existing = [{ owner: 'route a', methods: ['GET', 'POST'], paths: ['/orders/:id'], hosts: [] }];
  assert.deepEqual(findRouteConflict({ owner: 'b', methods: ['POST'], paths: ['/x', '/orders/:order'], hosts: [] }, existing), { owner: 'route a', method: 'POST', path: '/orders/:order' });
  assert.equal(findRouteConflict({ owner: 'b', methods: ['DELETE'], paths: ['/orders/:id'], hosts: [] }, existing), undefined, 'another method');
  assert.equal(findRouteConflict({ owner: 'b', methods: ['GET'], paths: ['/orders/:id/items'], hosts: [] }, existing), undefined, 'another path');
  assert.equal(findRouteConflict({ owner: 'b', methods: ['GET'], paths: ['/orders/:id'], hosts: ['api.example.com'] }, existing), undefined, 'a host-specific route is more specific');
  const hosted = [{ owner: 'route h', methods: ['GET'], paths: ['/'], hosts: ['A.example.com'] }];
  assert.ok(findRouteConflict({ owner: 'b', methods: ['GET'], paths: ['/'], hosts: ['a.example.com', 'b.example.com'] }, hosted), 'hosts compare case-insensitively');
});

test('diffs compare by natural key and ignore ids and key order', () => {
  const from = { services: [{ id: '1', name: 's', url: 'http://a', retries: 0 }], routes: [{ id: '2', name: 'gone', paths: ['/'] }] };
  const to = { services: [{ id: '9', retries: 1, url: 'http://a', name: 's' }], routes: [], plugins: [{ name: 'cors', route: 'r', config: {} }] };
  const d = diffDocuments(from, to);
  assert.equal(d.changes, 3);
  assert.deepEqual(d.services, { created: [], updated: [{ key: 's', fields: { retries: { from: 0, to: 1 } } }], deleted: [] });
  assert.deepEqual(d.routes?.deleted, ['gone']);
  assert.deepEqual(d.plugins?.created, ['cors route=r']);
  assert.equal(diffDocuments(to, to).changes, 0);
  assert.equal(canonical({ b: [1, { d: 1, c: 2 }], a: undefined }), canonical({ b: [1, { c: 2, d: 1 }] }));
});

test('schemas: defaults, exactly-one rules and plugin configs checked by the plugin', () => {
  assert.deepEqual(serviceDoc.parse({ name: 's', url: 'http://x' }).targets, []);
  assert.equal(serviceDoc.safeParse({ name: 's' }).success, false, 'a url or targets');
  assert.equal(serviceDoc.safeParse({ name: 's', url: 'http://x', targets: [{ url: 'http://y' }] }).success, false, 'not both');
  const cors = pluginDoc.parse({ name: 'cors' });
  assert.deepEqual(cors.config.origins, ['*']);
  const bad = pluginDoc.safeParse({ name: 'ip-restriction', config: { allow: ['300.1.1.1'] } });
  assert.equal(bad.success, false);
  assert.deepEqual(bad.error!.issues[0]!.path, ['config', 'allow', 0]);
  assert.equal(pluginDoc.safeParse({ name: 'ip-restriction', config: {} }).success, false, 'allow or deny');
  assert.equal(policyDoc.safeParse({ name: 'p', scope: 'route', limit: 1, window_seconds: 1 }).success, false, 'a route policy names its route');
  assert.equal(policyDoc.safeParse({ name: 'p', scope: 'workspace', route: 'r', limit: 1, window_seconds: 1 }).success, false);
  assert.equal(triggerDoc.parse({ route_path: '/orders/:id', workflow_type: 'hello' }).name, 'post-orders-id');
  assert.equal(triggerDoc.parse({ event_type: 'user.signed_up', workflow_type: 'hello' }).name, 'event-user-signed-up');
  assert.equal(triggerDoc.safeParse({ route_path: '/api/x', workflow_type: 'hello' }).success, false, 'reserved prefix');
  const doc = configDocument.parse({ workspace: 'w' });
  assert.deepEqual(doc.routes, []);
  assert.equal(configDocument.safeParse({ workspace: 'w', extra: 1 }).success, false, 'unknown top-level keys are refused');
});

test('YAML aliases that do not resolve, or resolve too often, are a 400 naming the document', () => {
  const refused = (text: string, field: string) => assert.throws(() => parseConfigDocuments(text), (err: unknown) => {
    assert.ok(err instanceof ApiError, `an ApiError, not ${String(err)}`);
    assert.equal(err.statusCode, 400);
    assert.equal(err.code, 'malformed_yaml');
    assert.equal((err.details as { field: string }[])[0]!.field, field);
    return true;
  });
  refused('workspace: *x', 'body.0');
  refused('workspace: w\n---\nworkspace: *y', 'body.1');
  // Nine references at each of eight levels: far more than the yaml library's alias budget.
  const levels = 'abcdefgh'.split('');
  const bomb = ['a: &a [x, x, x, x, x, x, x, x, x]', ...levels.slice(1).map((l, i) => `${l}: &${l} [${Array(9).fill(`*${levels[i]!}`).join(', ')}]`), 'workspace: w'].join('\n');
  refused(bomb, 'body.0');
  assert.equal(parseConfigDocuments('workspace: &w w\nservices: [{ name: *w, url: "http://x" }]')[0]!.services[0]!.name, 'w', 'an alias that resolves is fine');
});

test('header values with CR, LF or other control characters are refused wherever a header is configured', () => {
  const route = { name: 'r', service: 's', paths: ['/x'] };
  const bad = 'a\r\nb';
  const refusedAt = (r: { success: boolean; error?: { issues: { path: PropertyKey[] }[] } }, path: string) => {
    assert.equal(r.success, false, path);
    assert.deepEqual(r.error!.issues.map((i) => i.path.map(String).join('.')), [path]);
  };
  refusedAt(routeDoc.safeParse({ ...route, transformations: { request: { add_headers: { 'X-A': bad } } } }), 'transformations.request.add_headers.X-A');
  refusedAt(routeDoc.safeParse({ ...route, transformations: { response: { add_headers: { 'X-A': 'a\0b' } } } }), 'transformations.response.add_headers.X-A');
  refusedAt(routeDoc.safeParse({ name: 'r', paths: ['/x'], static_response: { headers: { 'X-A': 'a\nb' } } }), 'static_response.headers.X-A');
  refusedAt(pluginDoc.safeParse({ name: 'request-transformer', config: { add_headers: { 'X-A': bad } } }), 'config.add_headers.X-A');
  refusedAt(pluginDoc.safeParse({ name: 'response-transformer', config: { add_headers: { 'X-A': 'a\x7fb' } } }), 'config.add_headers.X-A');
  refusedAt(pluginDoc.safeParse({ name: 'security-headers', config: { content_security_policy: "default-src 'none'\r\nX-B: 1" } }), 'config.content_security_policy');
  refusedAt(pluginDoc.safeParse({ name: 'cache-headers', config: { directive: 'private\n' } }), 'config.directive');
  assert.equal(routeDoc.safeParse({ ...route, transformations: { request: { add_headers: { 'X-A': 'a\tb ü' } } } }).success, true, 'tab and Latin-1 are fine');
});

test('keys in documents: a hand-written key is hashed like an issued one', () => {
  const key = 'fgk_0badc0de_some-random-part';
  assert.deepEqual(keyHash({ key }), { hash: hashCredential(key), prefix: '0badc0de' });
  const sha = hashCredential(key).toString('hex');
  assert.deepEqual(keyHash({ sha256: sha }).hash, hashCredential(key));
});

test('grants: resource:action with wildcards; built-in roles', () => {
  assert.ok(allows(BUILT_IN_GRANTS.viewer, 'routes', 'read'));
  assert.ok(!allows(BUILT_IN_GRANTS.viewer, 'routes', 'write'));
  assert.ok(allows(BUILT_IN_GRANTS.developer, 'routes', 'write'));
  assert.ok(!allows(BUILT_IN_GRANTS.developer, 'consumers', 'write'));
  assert.ok(allows(BUILT_IN_GRANTS.operator, 'runbooks', 'write'));
  assert.ok(!allows(BUILT_IN_GRANTS.operator, 'config', 'write'));
  assert.ok(allows(['audit-logs:*'], 'audit-logs', 'write'));
  assert.ok(!allows(['audit-logs:*'], 'routes', 'read'));
});

test('strip_path drops the static prefix of the matched pattern', () => {
  assert.equal(upstreamPath('/shop/orders', '/shop/orders/42', true), '/42');
  assert.equal(upstreamPath('/shop/orders', '/shop/orders', true), '/');
  assert.equal(upstreamPath('/shop/:id/items', '/shop/7/items', true), '/7/items');
  assert.equal(upstreamPath('/shop/orders', '/shop/orders/42', false), '/shop/orders/42');
});
