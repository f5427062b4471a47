// gateway/aggregate.ts: the merge rules alone, then fan-out against sandbox upstreams (node:http on port 0).
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import pino from 'pino';
import { aggregate, backendPath, mergeAggregate, type AggregateBackend } from '../../gateway/aggregate';
import { Upstreams, type UpstreamService } from '../../gateway/upstreams';

const b = (service: string, extra: Partial<AggregateBackend> = {}): AggregateBackend => ({ service, path: '/', ...extra });

test('merge: objects merge shallowly in backend order, a later field wins', () => {
  const out = mergeAggregate([
    { backend: b('users'), ok: true, body: { id: 7, name: 'Ada', meta: { a: 1 } } },
    { backend: b('orders'), ok: true, body: { orders: [1, 2], meta: { b: 2 } } },
  ]);
  assert.deepEqual(out, { body: { id: 7, name: 'Ada', orders: [1, 2], meta: { b: 2 } }, complete: true });
});

test('merge: group nests a backend under its key; arrays become { collection }', () => {
  const out = mergeAggregate([
    { backend: b('users', { group: 'user' }), ok: true, body: { id: 7 } },
    { backend: b('orders', { group: 'orders' }), ok: true, body: [{ id: 1 }] },
    { backend: b('flags'), ok: true, body: ['beta'] },
  ]);
  assert.deepEqual(out.body, { user: { id: 7 }, orders: { collection: [{ id: 1 }] }, collection: ['beta'] });
});

test('merge: allow keeps listed top-level fields, then mapping renames them, then group', () => {
  const out = mergeAggregate([
    { backend: b('users', { allow: ['id', 'email', 'name'], mapping: { name: 'full_name', id: 'user_id' }, group: 'u' }), ok: true, body: { id: 7, name: 'Ada', email: 'a@x', password_hash: 'x' } },
  ]);
  assert.deepEqual(out.body, { u: { user_id: 7, full_name: 'Ada', email: 'a@x' } });
  // Renames are simultaneous: a swap does not lose a field.
  const swap = mergeAggregate([{ backend: b('s', { mapping: { a: 'b', b: 'a' } }), ok: true, body: { a: 1, b: 2 } }]);
  assert.deepEqual(swap.body, { b: 1, a: 2 });
});

test('merge: a failed part is left out and flags the result incomplete; __proto__ stays data', () => {
  const out = mergeAggregate([
    { backend: b('users'), ok: true, body: JSON.parse('{"id":7,"__proto__":{"admin":true}}') },
    { backend: b('orders'), ok: false },
  ]);
  assert.equal(out.complete, false);
  assert.equal(out.body.id, 7);
  assert.equal((out.body as { admin?: boolean }).admin, undefined);
  assert.equal(Object.getPrototypeOf(out.body), Object.prototype);
});

test('backendPath substitutes {id} and :id, encoded; a missing parameter gives undefined', () => {
  assert.equal(backendPath('/users/{id}/orders/:order', { id: 'a b', order: '9' }), '/users/a%20b/orders/9');
  assert.equal(backendPath('/users/{id}', {}), undefined);
  assert.equal(backendPath('/report?at=10:30', {}), '/report?at=10:30');
});

// Sandbox upstreams: one server, behaviour by path.
let server: http.Server;
let base = '';
const seen: string[] = [];
before(async () => {
  server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const json = (status: number, body: unknown) => { res.writeHead(status, { 'content-type': 'application/json' }); res.end(JSON.stringify(body)); };
    if (req.url?.startsWith('/users/')) return json(200, { id: req.url.slice(7), name: 'Ada', secret: 's' });
    if (req.url === '/orders?user=7') return json(200, [{ id: 1 }]);
    if (req.url === '/slow') return setTimeout(() => json(200, { late: true }), 1000);
    if (req.url === '/broken') return json(500, { error: 'boom' });
    if (req.url === '/html') return res.end('<html></html>');
    if (req.url === '/echo') {
      let body = '';
      req.on('data', (c) => { body += String(c); });
      return req.on('end', () => json(200, { echoed: JSON.parse(body) }));
    }
    return json(404, {});
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

function setup() {
  const upstreams = new Upstreams({ logger: pino({ level: 'silent' }) });
  const svc = (name: string): UpstreamService => ({ id: name, name, workspace: 'acme', url: base, targets: [], connect_timeout_ms: 1000, read_timeout_ms: 5000, retries: 0 });
  const services = new Map(['users', 'orders', 'misc'].map((n) => [n, svc(n)]));
  upstreams.sync([...services.values()]);
  return { upstreams, services };
}

test('aggregate: path params substituted, grouped and filtered', async (t) => {
  const { upstreams, services } = setup();
  t.after(() => upstreams.close());
  const out = await aggregate(upstreams, services, [
    { service: 'users', path: '/users/{id}', allow: ['id', 'name'] },
    { service: 'orders', path: '/orders?user={id}', group: 'orders' },
    { service: 'misc', path: '/echo', method: 'POST' },
  ], { headers: { 'content-type': 'application/json' }, params: { id: '7' }, body: '{"x":1}', timeoutMs: 2000 });
  assert.deepEqual(out, { body: { id: '7', name: 'Ada', orders: { collection: [{ id: 1 }] }, echoed: { x: 1 } }, complete: true, failed: [] });
});

test('aggregate: non-2xx, non-JSON and unknown services are left out and named in failed', async (t) => {
  const { upstreams, services } = setup();
  t.after(() => upstreams.close());
  const out = await aggregate(upstreams, services, [
    { service: 'users', path: '/users/{id}', group: 'user' },
    { service: 'misc', path: '/broken' },
    { service: 'misc', path: '/html' },
    { service: 'nope', path: '/x' },
  ], { headers: {}, params: { id: '7' }, timeoutMs: 2000 });
  assert.equal(out.complete, false);
  assert.deepEqual(out.body, { user: { id: '7', name: 'Ada', secret: 's' } });
  assert.deepEqual(out.failed, ['misc /broken', 'misc /html', 'nope /x']);
});

test('aggregate: backends are called in parallel; one past the shared timeout is left out and the rest answer on time', async (t) => {
  const { upstreams, services } = setup();
  t.after(() => upstreams.close());
  const started = Date.now();
  // The slow backend first: called one after the other, the second would start only at the deadline.
  const out = await aggregate(upstreams, services, [
    { service: 'misc', path: '/slow', group: 'slow' },
    { service: 'users', path: '/users/1' },
  ], { headers: {}, timeoutMs: 200 });
  const took = Date.now() - started;
  assert.ok(took >= 190 && took < 700, `${took} ms`);
  assert.equal(out.complete, false);
  assert.deepEqual(out.failed, ['misc /slow']);
  assert.deepEqual(out.body, { id: '1', name: 'Ada', secret: 's' });
});
