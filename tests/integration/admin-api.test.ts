// The control plane against the real PostgreSQL, NATS and Kafka: CRUD of every entity, role
// and workspace checks on every endpoint (taken from the served OpenAPI document), audit rows
// that nobody can change, row-level security, versions, diffs and declarative sync.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { parse, stringify } from 'yaml';
import { createKafka, TOPICS } from '../../lib/kafka';
import { ApiError } from '../../lib/errors';
import { asPlatform, createPool, inWorkspace } from '../../lib/postgres';
import { revokePlatformToken } from '../../lib/tenants';
import { adminTenant, type HttpCall } from '../helpers/admin';
import { eventually, readyStatus, spawnProcess, testStack } from '../helpers/stack';

const stack = testStack();
const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 2);
after(() => pool.end());

/** One sample per collection, in dependency order, with a field to update. */
const SAMPLES: { collection: string; body: Record<string, unknown>; patch: Record<string, unknown>; key?: string }[] = [
  { collection: 'roles', body: { name: 'route-reader', grants: ['routes:read'] }, patch: { description: 'reads routes' } },
  { collection: 'services', body: { name: 'svc', url: 'http://127.0.0.1:9/' }, patch: { retries: 2 } },
  { collection: 'consumers', body: { username: 'alice', roles: ['viewer'] }, patch: { custom_id: 'c-1' } },
  { collection: 'routes', body: { name: 'r1', service: 'svc', paths: ['/crud'] }, patch: { strip_path: true } },
  { collection: 'triggers', body: { name: 't1', route_path: '/crud-trigger', workflow_type: 'hello' }, patch: { enabled: false } },
  { collection: 'policies', body: { name: 'pol', scope: 'route', route: 'r1', limit: 5, window_seconds: 1 }, patch: { limit: 6 } },
  { collection: 'plugins', body: { name: 'cors', route: 'r1' }, patch: { enabled: false }, key: 'id' },
];

describe('CRUD of every entity', () => {
  test('create, read by id and name, list with filters and cursor, update with If-Match, replace, delete', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    const ids: Record<string, string> = {};
    for (const s of SAMPLES) {
      const created = await t.admin('POST', `/${s.collection}`, s.body);
      assert.equal(created.status, 201, `${s.collection}: ${created.text}`);
      assert.equal(created.headers.get('etag'), `"1-${created.body.id}"`);
      assert.equal(created.headers.get('location'), `/${s.collection}/${created.body.id}`);
      ids[s.collection] = created.body.id;
      const natural = s.key === 'id' ? created.body.id : String(s.body.name ?? s.body.username);
      const byName = await t.admin('GET', `/${s.collection}/${natural}`);
      assert.equal(byName.status, 200, byName.text);
      assert.equal(byName.body.id, created.body.id);
      const list = await t.admin('GET', `/${s.collection}?limit=1`);
      assert.equal(list.status, 200, list.text);
      assert.equal(list.body.data.length, 1);

      const stale = await t.admin('PATCH', `/${s.collection}/${created.body.id}`, s.patch, { 'if-match': `"7-${created.body.id}"` });
      assert.equal(stale.status, 412, stale.text);
      assert.equal(stale.body.error.code, 'precondition_failed');
      const patched = await t.admin('PATCH', `/${s.collection}/${created.body.id}`, s.patch, { 'if-match': created.headers.get('etag')! });
      assert.equal(patched.status, 200, `${s.collection}: ${patched.text}`);
      for (const [k, v] of Object.entries(s.patch)) assert.deepEqual(patched.body[k], v);
      assert.equal(patched.body.version, 2);
      // A concurrent editor who read version 1 is refused now.
      const late = await t.admin('PATCH', `/${s.collection}/${created.body.id}`, s.patch, { 'if-match': created.headers.get('etag')! });
      assert.equal(late.status, 412);
    }
    // Deleted and created again under its name: the old entity's ETag does not match the new one,
    // though both are at version 1 (a writer who read the old one must not overwrite the new).
    const first = await t.admin('POST', '/services', { name: 'again', url: 'http://127.0.0.1:9/' });
    assert.equal((await t.admin('DELETE', '/services/again')).status, 204);
    const second = await t.admin('POST', '/services', { name: 'again', url: 'http://127.0.0.1:10/' });
    assert.equal(second.body.version, 1);
    const aba = await t.admin('PUT', '/services/again', { name: 'again', url: 'http://127.0.0.1:11/' }, { 'if-match': first.headers.get('etag')! });
    assert.equal(aba.status, 412, aba.text);
    assert.equal((await t.admin('GET', '/services/again')).body.url, 'http://127.0.0.1:10/');
    // PUT replaces the whole entity.
    const put = await t.admin('PUT', `/services/svc`, { name: 'svc', targets: [{ url: 'http://127.0.0.1:9/', weight: 5 }, { url: 'http://127.0.0.1:10/' }] });
    assert.equal(put.status, 200, put.text);
    assert.equal(put.body.url, undefined);
    assert.deepEqual(put.body.targets, [{ url: 'http://127.0.0.1:9/', weight: 5 }, { url: 'http://127.0.0.1:10/', weight: 100 }]);
    // Filters and the cursor.
    await t.admin('POST', '/services', { name: 'svc-b', url: 'http://127.0.0.1:11/', tags: ['blue'] });
    await t.admin('POST', '/services', { name: 'svc-c', url: 'http://127.0.0.1:12/', tags: ['blue'] });
    const blue = await t.admin('GET', '/services?tag=blue&limit=1');
    assert.deepEqual(blue.body.data.map((s: { name: string }) => s.name), ['svc-b']);
    const next = await t.admin('GET', `/services?tag=blue&limit=1&cursor=${blue.body.next}`);
    assert.deepEqual(next.body.data.map((s: { name: string }) => s.name), ['svc-c']);
    assert.equal(next.body.next, null);
    assert.equal((await t.admin('GET', '/routes?service=svc')).body.data.length, 1);
    const badFilter = await t.admin('GET', '/services?colour=blue');
    assert.equal(badFilter.status, 400);
    assert.ok(badFilter.body.error.details.some((d: { field: string }) => d.field === 'query.colour'), badFilter.text);

    // A service in use can't go; deletion in reverse order works and leaves 404s behind.
    const inUse = await t.admin('DELETE', '/services/svc');
    assert.equal(inUse.status, 409, inUse.text);
    assert.equal(inUse.body.error.code, 'in_use');
    for (const s of [...SAMPLES].reverse()) {
      const del = await t.admin('DELETE', `/${s.collection}/${ids[s.collection]}`);
      assert.equal(del.status, 204, `${s.collection}: ${del.text}`);
      assert.equal((await t.admin('GET', `/${s.collection}/${ids[s.collection]}`)).status, 404);
    }
  });

  test('consumer keys are shown once, stored hashed and revocable; workspaces, admin tokens and webhook secrets', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    const c = await t.admin('POST', '/consumers', { username: 'svc-account' });
    const key = await t.admin('POST', `/consumers/${c.body.id}/keys`);
    assert.equal(key.status, 201);
    assert.match(key.body.key, /^fgk_[0-9a-f]{8}_/);
    const keys = await t.admin('GET', `/consumers/svc-account/keys`);
    assert.equal(keys.body.data.length, 1);
    assert.ok(!keys.text.includes(key.body.key), 'the key is never listed');
    assert.ok(!(await t.admin('GET', '/config')).text.includes(key.body.key));
    assert.equal((await t.admin('DELETE', `/consumers/svc-account/keys/${key.body.id}`)).status, 204);
    assert.ok((await t.admin('GET', `/consumers/svc-account/keys`)).body.data[0].revoked_at);

    // Issuing or revoking a key changes the consumer's document (its keys), so its ETag moves: a
    // PUT of the document as read before the revocation is refused, and cannot bring the key back.
    const k2 = await t.admin('POST', `/consumers/svc-account/keys`);
    const read = await t.admin('GET', '/consumers/svc-account');
    const etag = read.headers.get('etag')!;
    assert.ok(etag);
    assert.equal(read.body.keys.length, 1);
    assert.equal((await t.admin('DELETE', `/consumers/svc-account/keys/${k2.body.id}`)).status, 204);
    const { username, roles, tags, keys: readKeys } = read.body;
    const stale = await t.admin('PUT', '/consumers/svc-account', { username, roles, tags, keys: readKeys }, { 'if-match': etag });
    assert.equal(stale.status, 412, stale.text);
    assert.ok((await t.admin('GET', `/consumers/svc-account/keys`)).body.data.find((k: { id: string }) => k.id === k2.body.id).revoked_at, 'still revoked');
    // Nor without If-Match, nor by syncing a document exported before the revocation: 409, still revoked.
    const replace = await t.admin('PUT', '/consumers/svc-account', { username, roles, tags, keys: readKeys });
    assert.equal(replace.status, 409, replace.text);
    assert.equal(replace.body.error.code, 'key_revoked');
    assert.equal(replace.body.error.details[0].field, 'body.keys.0');
    const exported = (await t.admin('GET', '/config/export?format=json')).body;
    exported.consumers.find((c: { username: string }) => c.username === 'svc-account').keys = readKeys;
    const resync = await t.admin('POST', '/config/sync', exported);
    assert.equal(resync.status, 409, resync.text);
    assert.equal(resync.body.error.code, 'key_revoked');
    assert.ok((await t.admin('GET', `/consumers/svc-account/keys`)).body.data.find((k: { id: string }) => k.id === k2.body.id).revoked_at, 'still revoked');
    const k3 = await t.admin('POST', `/consumers/svc-account/keys`);
    assert.notEqual((await t.admin('GET', '/consumers/svc-account')).headers.get('etag'), etag, 'a new key moves it too');
    assert.equal((await t.admin('DELETE', `/consumers/svc-account/keys/${k3.body.id}`)).status, 204);

    const secret = await t.admin('POST', '/webhook-secrets', { name: 'rotated' });
    assert.equal(secret.status, 201);
    const secrets = await t.admin('GET', '/webhook-secrets');
    assert.deepEqual(secrets.body.data.map((s: { name: string }) => s.name).sort(), ['default', 'rotated']);
    assert.ok(!secrets.text.includes(secret.body.secret), 'secret values are never listed');
    assert.equal((await t.admin('DELETE', `/webhook-secrets/${secret.body.id}`)).status, 204);

    const tok = await t.admin('POST', '/admin-tokens', { name: 'ci', role: 'viewer' });
    assert.equal(tok.status, 201);
    assert.equal((await t.as(tok.body.token)('GET', '/routes')).status, 200);
    assert.equal((await t.admin('DELETE', `/admin-tokens/${tok.body.id}`)).status, 204);
    assert.equal((await t.as(tok.body.token)('GET', '/routes')).status, 401, 'a revoked token is refused');
    assert.equal((await t.admin('POST', '/admin-tokens', { name: 'x', role: 'no-such-role' })).status, 409);

    const platform = t.as(t.platform);
    const ws = `${t.tenant}-new`;
    assert.equal((await platform('POST', '/workspaces', { id: ws, name: 'New' })).status, 201);
    assert.equal((await platform('POST', '/workspaces', { id: ws, name: 'New' })).status, 409);
    assert.equal((await platform('PATCH', `/workspaces/${ws}`, { name: 'Renamed' })).body.name, 'Renamed');
    assert.equal((await t.admin('POST', '/workspaces', { id: `${ws}-2`, name: 'x' })).status, 403, 'a workspace admin does not create workspaces');
    assert.equal((await t.admin('GET', `/workspaces/${ws}`)).status, 404, 'nor sees other workspaces');
    assert.deepEqual((await t.admin('GET', '/workspaces')).body.data.map((w: { id: string }) => w.id), [t.tenant]);
    assert.equal((await platform('DELETE', `/workspaces/${ws}`)).status, 204);
    assert.equal((await platform('GET', `/workspaces/${ws}`)).status, 404);
    // Its audit rows (and Temporal's executions under its id) outlive it: the id is not given
    // out again, or the new workspace would read the old one's trail as its own.
    const again = await platform('POST', '/workspaces', { id: ws, name: 'Another customer' });
    assert.equal(again.status, 409, again.text);
    assert.equal(again.body.error.code, 'workspace_id_retired');
    assert.equal(again.body.error.details[0].field, 'body.id');
    assert.equal((await platform('GET', `/workspaces/${ws}`)).status, 404, 'not created');
  });

  test('platform-wide tokens are listed, issued and revoked through the API; the platform audit log shows them, and the last admin token stays', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    const platform = t.as(t.platform);
    const listed = await platform('GET', '/platform/admin-tokens');
    assert.equal(listed.status, 200, listed.text);
    assert.ok(listed.body.data.some((k: { name: string }) => k.name === `${t.tenant}-platform`));
    assert.ok(!listed.text.includes(t.platform) && !listed.text.includes('token_hash'), 'never a value or a hash');

    const issued = await platform('POST', '/platform/admin-tokens', { name: `${t.tenant}-ops`, role: 'operator' });
    assert.equal(issued.status, 201, issued.text);
    assert.equal(issued.headers.get('cache-control'), 'no-store');
    const ops = t.as(issued.body.token);
    assert.equal((await ops('GET', '/runbooks')).status, 200, 'a platform-wide operator runs runbooks');
    assert.equal((await ops('POST', '/platform/admin-tokens', { name: 'more', role: 'admin' })).status, 403, 'an operator issues no tokens');
    assert.equal((await ops('GET', '/platform/admin-tokens')).status, 200, 'but reads the list');
    for (const [method, path, body] of [['GET', '/platform/admin-tokens', undefined], ['POST', '/platform/admin-tokens', { name: 'x', role: 'admin' }], ['GET', '/platform/audit-logs', undefined]] as const) {
      assert.equal((await t.admin(method, path, body)).status, 403, `a workspace admin: ${method} ${path}`);
    }
    const custom = await platform('POST', '/platform/admin-tokens', { name: 'x', role: 'auditor' });
    assert.equal(custom.status, 400);
    assert.equal(custom.body.error.details[0].field, 'body.role');

    assert.equal((await platform('DELETE', `/platform/admin-tokens/${issued.body.id}`)).status, 204);
    assert.equal((await ops('GET', '/runbooks')).status, 401, 'a revoked platform token is refused');
    assert.equal((await platform('DELETE', `/platform/admin-tokens/${issued.body.id}`)).status, 404, 'revoked once');
    const workspaceToken = (await t.admin('GET', '/admin-tokens')).body.data[0].id;
    assert.equal((await platform('DELETE', `/platform/admin-tokens/${workspaceToken}`)).status, 404, "a workspace's token is not a platform one");

    const audit = await platform('GET', `/platform/audit-logs?entity_type=admin_token&entity_id=${issued.body.id}`);
    assert.equal(audit.status, 200, audit.text);
    assert.deepEqual(audit.body.data.map((r: { action: string; actor: string }) => [r.action, r.actor]), [['delete', `token:${t.tenant}-platform`], ['create', `token:${t.tenant}-platform`]]);
    assert.equal((await platform('GET', `/platform/audit-logs?entity_id=${t.tenant}`)).body.data.length, 0, "a workspace's rows are not the platform's");
    assert.equal((await t.admin('GET', `/audit-logs?entity_id=${issued.body.id}`)).body.data.length, 0, "nor the platform's a workspace's");

    // The last live platform-wide admin token is not revoked (other tests' tokens are live, so the
    // rule is shown in a transaction where they are revoked, then rolled back).
    const mine = listed.body.data.find((k: { name: string }) => k.name === `${t.tenant}-platform`).id;
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      await client.query("SELECT set_config('flowgate.scope', 'platform', true)");
      await client.query("UPDATE admin_tokens SET revoked_at = now() WHERE workspace_id IS NULL AND role = 'admin' AND revoked_at IS NULL AND id <> $1", [mine]);
      await assert.rejects(revokePlatformToken(client, mine, { actor: 'test' }), (err: unknown) => err instanceof ApiError && err.statusCode === 409);
    } finally {
      await client.query('ROLLBACK');
      client.release();
    }
    assert.equal((await platform('GET', '/platform/admin-tokens')).status, 200, 'the rolled-back revocations changed nothing');
  });

  test('a platform token naming a workspace that does not exist is told 404, on writes too', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    const platform = t.as(t.platform);
    for (const [method, path, body] of [
      ['POST', '/webhook-secrets?workspace=no-such-ws', { name: 'a' }],
      ['POST', '/admin-tokens?workspace=no-such-ws', { name: 'a', role: 'viewer' }],
      ['PUT', '/payment-settings?workspace=no-such-ws', { approval_threshold: 100, max_amount: 1000, currencies: ['EUR'] }],
      ['GET', '/services?workspace=no-such-ws', undefined],
    ] as const) {
      const r = await platform(method, path, body);
      assert.equal(r.status, 404, `${method} ${path}: ${r.text}`);
      assert.equal(r.body.error.code, 'not_found');
    }
    assert.equal((await platform('GET', `/services?workspace=${t.tenant}`)).status, 200);
  });

  test('list cursors page through entities that share a name (plugins in several scopes); a forged cursor is 400', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    await t.admin('POST', '/services', { name: 'svc', url: 'http://127.0.0.1:9' });
    for (const r of ['r1', 'r2']) assert.equal((await t.admin('POST', '/routes', { name: r, service: 'svc', paths: [`/${r}`] })).status, 201);
    const created = [];
    for (const route of [undefined, 'r1', 'r2']) {
      const p = await t.admin('POST', '/plugins', { name: 'cors', ...(route ? { route } : {}), config: {} });
      assert.equal(p.status, 201, p.text);
      created.push(p.body.id as string);
    }
    const seen: string[] = [];
    let next: string | null = null;
    do {
      const page = await t.admin('GET', `/plugins?limit=1${next ? `&cursor=${next}` : ''}`);
      assert.equal(page.status, 200, page.text);
      seen.push(...page.body.data.map((p: { id: string }) => p.id));
      next = page.body.next;
    } while (next && seen.length < 10);
    assert.deepEqual(seen.sort(), created.sort());
    const forged = Buffer.from(JSON.stringify({ after: 'a\u0000b' })).toString('base64url');
    const r = await t.admin('GET', `/plugins?cursor=${forged}`);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.body.error.details[0].field, 'query.cursor');
  });

  test('bad input names each field; missing references and colliding routes are 409 with the reason', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    const bad = await t.admin('POST', '/services', { name: 'bad name!', url: 'ftp://x', retries: 99 });
    assert.equal(bad.status, 400);
    const fields = bad.body.error.details.map((d: { field: string }) => d.field).sort();
    assert.deepEqual(fields, ['body.name', 'body.retries', 'body.url']);
    const plugin = await t.admin('POST', '/plugins', { name: 'ip-restriction', config: { allow: ['10.0.0.0/33'] } });
    assert.equal(plugin.status, 400);
    assert.equal(plugin.body.error.details[0].field, 'body.config.allow.0');
    const unknownPlugin = await t.admin('POST', '/plugins', { name: 'no-such-plugin' });
    assert.equal(unknownPlugin.body.error.details[0].field, 'body.name');
    const missing = await t.admin('POST', '/routes', { name: 'orphan', service: 'nope', paths: ['/x'] });
    assert.equal(missing.status, 409);
    assert.equal(missing.body.error.code, 'unknown_reference');
    assert.equal(missing.body.error.details[0].field, 'body.service');
    assert.equal((await t.admin('POST', '/consumers', { username: 'u', roles: ['ghost'] })).body.error.details[0].field, 'body.roles.0');

    await t.admin('POST', '/services', { name: 's', url: 'http://127.0.0.1:9' });
    assert.equal((await t.admin('POST', '/routes', { name: 'a', service: 's', paths: ['/orders/:id'], methods: ['GET', 'POST'] })).status, 201);
    const clash = await t.admin('POST', '/routes', { name: 'b', service: 's', paths: ['/orders/:order'], methods: ['POST'] });
    assert.equal(clash.status, 409);
    assert.equal(clash.body.error.code, 'route_conflict');
    assert.match(clash.body.error.message, /route a/);
    // Another method, or a host of its own, does not collide.
    assert.equal((await t.admin('POST', '/routes', { name: 'c', service: 's', paths: ['/orders/:id'], methods: ['DELETE'] })).status, 201);
    assert.equal((await t.admin('POST', '/routes', { name: 'd', service: 's', paths: ['/orders/:id'], methods: ['GET'], hosts: ['api.example.com'] })).status, 201);
    const trig = await t.admin('POST', '/triggers', { route_path: '/orders/:x', workflow_type: 'hello' });
    assert.equal(trig.status, 409, 'a trigger route collides with routes too');
    assert.match(trig.body.error.message, /route a/);
    assert.equal((await t.admin('POST', '/services', { name: 's', url: 'http://127.0.0.1:9' })).status, 409, 'a taken name');

    // A NUL character, which PostgreSQL text cannot hold, anywhere: 400 naming it, never 500.
    for (const [method, path, body, field] of [
      ['GET', '/services/a%00b', undefined, 'params.id'],
      ['GET', '/audit-logs?actor=%00', undefined, 'query.actor'],
      ['GET', '/services?workspace=%00', undefined, 'query.workspace'],
      ['POST', '/services', { name: 'n', url: 'http://127.0.0.1:9', tags: ['ok', 'x\u0000'] }, 'body.tags.1'],
      ['PATCH', '/services/s', { tags: ['\u0000'] }, 'body.tags.0'],
    ] as const) {
      const r = await t.admin(method, path, body);
      assert.equal(r.status, 400, `${method} ${path}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.code, 'validation_failed');
      assert.equal(r.body.error.details[0].field, field, `${method} ${path}`);
    }
  });
});

describe("a trigger rule's callback_url", () => {
  test('where webhooks go to public addresses only, a rule naming a non-public one is refused when saved, by every way in', async () => {
    // The stack allows loopback receivers (FLOWGATE_WEBHOOK_ALLOW_PRIVATE=true); a production admin does not.
    const admin = await spawnProcess('admin', stack.env, { FLOWGATE_WEBHOOK_ALLOW_PRIVATE: 'false' });
    try {
      await eventually('the admin process ready', async () => (await readyStatus(admin.statusUrl)).code === 200, 60_000);
      const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, admin.publicUrl!, 'cb');
      const refused = (r: Awaited<ReturnType<typeof t.admin>>, field: string) => {
        assert.equal(r.status, 400, r.text);
        assert.equal(r.body.error.code, 'validation_failed');
        assert.equal(r.body.error.details[0].field, field);
        assert.match(r.body.error.details[0].message, /public address/);
      };
      for (const url of ['http://127.0.0.1:8200/v1/sys/health', 'http://169.254.169.254/latest/meta-data', 'http://localhost:8081/workspaces', 'http://[::ffff:10.0.0.1]/']) {
        refused(await t.admin('POST', '/triggers', { name: 'r', event_type: 'order.created', workflow_type: 'hello', callback_url: url }), 'body.callback_url');
      }
      const ok = await t.admin('POST', '/triggers', { name: 'r', event_type: 'order.created', workflow_type: 'hello', callback_url: 'https://hooks.example.com/flowgate' });
      assert.equal(ok.status, 201, ok.text);
      refused(await t.admin('PATCH', '/triggers/r', { callback_url: 'http://10.1.2.3/hook' }), 'body.callback_url');
      refused(await t.admin('PUT', '/triggers/r', { name: 'r', event_type: 'order.created', workflow_type: 'hello', callback_url: 'http://192.168.0.1/' }), 'body.callback_url');
      const doc = (await t.admin('GET', '/config/export?format=json')).body;
      doc.triggers[0].callback_url = 'http://127.0.0.1:8081/';
      refused(await t.admin('POST', '/config/sync', doc), 'body.triggers.0.callback_url');
      assert.equal((await t.admin('GET', '/triggers/r')).body.callback_url, 'https://hooks.example.com/flowgate', 'nothing changed');
    } finally {
      admin.child.kill('SIGTERM');
      await admin.exited;
    }
  });
});

describe("a service's address", () => {
  test("an address the gateway would refuse (the stack's own ports, link-local) is refused when saved, by every way in, a jwt plugin's jwks_url too", async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'addr');
    const ports = stack.layout.ports;
    const refused = (r: Awaited<ReturnType<typeof t.admin>>, field: string, why: RegExp) => {
      assert.equal(r.status, 400, r.text);
      assert.equal(r.body.error.code, 'validation_failed');
      assert.equal(r.body.error.details[0].field, field);
      assert.match(r.body.error.details[0].message, why);
    };
    refused(await t.admin('POST', '/services', { name: 'vault', url: `http://127.0.0.1:${ports.openbao}/v1/sys/health` }), 'body.url', /platform's own/);
    refused(await t.admin('POST', '/services', { name: 'meta', url: 'http://169.254.169.254/latest/meta-data' }), 'body.url', /link-local/);
    refused(await t.admin('POST', '/services', { name: 'pair', targets: [{ url: 'http://127.0.0.1:9' }, { url: `http://localhost:${ports.temporalHttp}` }] }), 'body.targets.1.url', /platform's own/);
    refused(await t.admin('POST', '/triggers', { name: 'up', route_path: '/up', workflow_type: 'hello', upstream_url: `http://127.0.0.1:${ports.admin}` }), 'body.upstream_url', /platform's own/);
    refused(await t.admin('POST', '/plugins', { name: 'jwt', config: { algorithms: ['RS256'], jwks_url: `http://127.0.0.1:${ports.gatewayStatus}/metrics` } }), 'body.config.jwks_url', /platform's own/);
    const ok = await t.admin('POST', '/services', { name: 'own', url: 'http://127.0.0.1:9' });
    assert.equal(ok.status, 201, ok.text);
    refused(await t.admin('PATCH', '/services/own', { url: `http://[::1]:${ports.gatewayStatus}` }), 'body.url', /platform's own/);
    const doc = (await t.admin('GET', '/config/export?format=json')).body;
    doc.services[0].url = `http://127.0.0.1:${ports.postgres}`;
    refused(await t.admin('POST', '/config/sync', doc), 'body.services.0.url', /platform's own/);
    assert.equal((await t.admin('GET', '/services/own')).body.url, 'http://127.0.0.1:9', 'nothing changed');
  });
});

describe('who may call what', () => {
  let endpoints: { method: string; path: string; grant: string; platform: boolean }[] = [];
  before(async () => {
    const doc = await (await fetch(`${stack.adminUrl}/openapi.json`)).json() as { paths: Record<string, Record<string, { 'x-flowgate-grant': string; 'x-flowgate-platform'?: boolean }>> };
    endpoints = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).map(([method, op]) => ({ method: method.toUpperCase(), path, grant: op['x-flowgate-grant'], platform: op['x-flowgate-platform'] === true })));
    assert.ok(endpoints.length >= 40, `the OpenAPI document lists ${endpoints.length} endpoints`);
  });
  const concrete = (path: string) => path.replace('{version}', '1').replace('{keyId}', '00000000-0000-4000-8000-000000000000').replace(/\{id\}/g, '00000000-0000-4000-8000-000000000000');

  test('every endpoint refuses a missing or made-up credential', async () => {
    const nobody: HttpCall = async (method, path) => {
      const r = await fetch(`${stack.adminUrl}${path}`, { method });
      return { status: r.status, headers: r.headers, body: await r.json(), text: '' };
    };
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    for (const e of endpoints) {
      assert.equal((await nobody(e.method, concrete(e.path))).status, 401, `${e.method} ${e.path} without a credential`);
      assert.equal((await t.as('fga_00000000_made-up-token-value-here')(e.method, concrete(e.path))).status, 401, `${e.method} ${e.path} with a made-up token`);
    }
  });

  test('viewers read only; developers edit routing only; custom roles get what they are granted', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    const viewer = t.as(t.tokens.viewer!);
    const developer = t.as(t.tokens.developer!);
    for (const e of endpoints) {
      const path = concrete(e.path);
      const v = await viewer(e.method, path, e.method === 'GET' || e.method === 'DELETE' ? undefined : {});
      // Platform endpoints refuse every workspace token, a viewer's reads included.
      if (e.grant.endsWith(':write') || e.platform) assert.equal(v.status, 403, `viewer ${e.method} ${e.path}`);
      else assert.notEqual(v.status, 403, `viewer may read ${e.method} ${e.path}: ${v.text}`);
    }
    assert.equal((await developer('POST', '/services', { name: 'dev-svc', url: 'http://127.0.0.1:9' })).status, 201);
    assert.equal((await developer('POST', '/consumers', { username: 'dev-user' })).status, 403);
    assert.equal((await developer('POST', '/config/sync', 'workspace: x', { 'content-type': 'application/yaml' })).status, 403);
    assert.equal((await t.as(t.tokens.operator!)('POST', '/routes', {})).status, 403);

    assert.equal((await t.admin('POST', '/roles', { name: 'auditor', grants: ['audit-logs:read', 'config:read'] })).status, 201);
    const tok = await t.admin('POST', '/admin-tokens', { name: 'aud', role: 'auditor' });
    const auditor = t.as(tok.body.token);
    assert.equal((await auditor('GET', '/audit-logs')).status, 200);
    assert.equal((await auditor('GET', '/config')).status, 200);
    assert.equal((await auditor('GET', '/routes')).status, 403);
    assert.equal((await auditor('POST', '/services', { name: 'x', url: 'http://127.0.0.1:9' })).status, 403);
    // A custom role may carry any name, `constructor` too: its own grants, not a 500.
    assert.equal((await t.admin('POST', '/roles', { name: 'constructor', grants: ['routes:read'] })).status, 201);
    const odd = t.as((await t.admin('POST', '/admin-tokens', { name: 'odd', role: 'constructor' })).body.token);
    assert.equal((await odd('GET', '/routes')).status, 200);
    assert.equal((await odd('GET', '/services')).status, 403);
  });

  test('config:write syncs only what the role may write: no granting itself more through a document', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    assert.equal((await t.admin('POST', '/roles', { name: 'deployer', grants: ['config:read', 'config:write', 'services:write', 'routes:write'] })).status, 201);
    const deployer = t.as((await t.admin('POST', '/admin-tokens', { name: 'dep', role: 'deployer' })).body.token);
    const doc = (await deployer('GET', '/config/export?format=json')).body;
    // Its own role with every grant, and a consumer (API keys): neither is the role's to write.
    for (const edit of [
      (d: any) => { d.roles.find((r: { name: string }) => r.name === 'deployer').grants = ['*:*']; }, // eslint-disable-line @typescript-eslint/no-explicit-any
      (d: any) => { d.consumers.push({ username: 'backdoor', keys: [{ key: 'a-key-the-deployer-chose-1234' }] }); }, // eslint-disable-line @typescript-eslint/no-explicit-any
    ]) {
      const edited = structuredClone(doc);
      edit(edited);
      const r = await deployer('POST', '/config/sync', edited);
      assert.equal(r.status, 403, r.text);
      assert.equal(r.body.error.code, 'forbidden');
    }
    // Its role twice, first with every grant, then unchanged: the diff (one entry per name) would
    // show no role change, and the grants check with it. Refused as malformed.
    const twice = structuredClone(doc);
    const own = twice.roles.find((r: { name: string }) => r.name === 'deployer');
    twice.roles.unshift({ ...own, grants: ['*:*'] });
    twice.services.push({ name: 'alongside', url: 'http://127.0.0.1:9' });
    const dup = await deployer('POST', '/config/sync', twice);
    assert.equal(dup.status, 400, dup.text);
    assert.match(dup.body.error.details[0].field, /^body\.roles\.\d+$/);
    assert.deepEqual((await t.admin('GET', '/roles/deployer')).body.grants, ['config:read', 'config:write', 'services:write', 'routes:write'], 'unchanged');
    assert.equal((await t.admin('GET', '/consumers/backdoor')).status, 404);
    // What it may write, it syncs.
    const ok = structuredClone(doc);
    ok.services.push({ name: 'synced', url: 'http://127.0.0.1:9' });
    const r = await deployer('POST', '/config/sync', ok);
    assert.equal(r.status, 200, r.text);
    assert.equal((await t.admin('GET', '/services/synced')).status, 200);
  });

  test("a workspace's token never reaches another workspace, on any endpoint", async () => {
    const a = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'wsa');
    const b = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'wsb');
    const svc = await b.admin('POST', '/services', { name: 'secret-svc', url: 'http://127.0.0.1:9' });
    for (const e of endpoints) {
      if (e.path.startsWith('/workspaces')) continue;
      // Runbooks, platform tokens and the platform's audit log act on the platform, not a
      // workspace: a workspace token is refused outright.
      if (e.platform) {
        assert.equal((await a.admin(e.method, concrete(e.path), e.method === 'GET' ? undefined : {})).status, 403, `${e.method} ${e.path}`);
        continue;
      }
      // A valid body where the collection has a sample, so that a check made only after the
      // body's validation would still be reached; 404 (the workspace is not the caller's) either way.
      const collection = /^\/([a-z-]+)$/.exec(e.path)?.[1];
      const body = e.method === 'GET' || e.method === 'DELETE' ? undefined : (e.method === 'POST' && SAMPLES.find((s) => s.collection === collection)?.body) || {};
      const sep = e.path.includes('?') ? '&' : '?';
      const r = await a.admin(e.method, `${concrete(e.path)}${sep}workspace=${b.tenant}`, body);
      assert.equal(r.status, 404, `${e.method} ${e.path} for another workspace: ${r.status} ${r.text}`);
      const viaHeader = await a.admin(e.method, concrete(e.path), body, { 'x-tenant-id': b.tenant });
      assert.equal(viaHeader.status, 404, `${e.method} ${e.path} with X-Tenant-ID of another workspace: ${viaHeader.status} ${viaHeader.text}`);
    }
    assert.equal((await b.admin('GET', '/roles/route-reader')).status, 404, "nothing was written into B's workspace");
    assert.equal((await b.admin('GET', '/services/svc')).status, 404);
    // B's entity by its id, from A's own workspace: not found (row-level security), never B's data.
    const byId = await a.admin('GET', `/services/${svc.body.id}`);
    assert.equal(byId.status, 404);
    assert.equal((await a.admin('DELETE', `/services/${svc.body.id}`)).status, 404);
    assert.equal((await b.admin('GET', `/services/${svc.body.id}`)).status, 200, 'still there for its owner');
    assert.ok(!(await a.admin('GET', '/audit-logs')).text.includes('secret-svc'));
  });
});

describe('isolation in PostgreSQL itself', () => {
  test('row-level security confines every query to its workspace, a forgotten WHERE included', async () => {
    const a = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'rls');
    const b = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'rls');
    await a.admin('POST', '/services', { name: 'a-svc', url: 'http://127.0.0.1:9' });
    await b.admin('POST', '/services', { name: 'b-svc', url: 'http://127.0.0.1:9' });
    const names = (ws: string) => inWorkspace(pool, ws, async (db) => (await db.query<{ name: string }>('SELECT name FROM services')).rows.map((r) => r.name));
    assert.deepEqual(await names(a.tenant), ['a-svc']);
    assert.deepEqual(await names(b.tenant), ['b-svc']);
    // Outside any scope the application role sees nothing at all.
    for (const table of ['services', 'consumers', 'api_keys', 'audit_logs', 'config_versions', 'workspaces', 'webhook_secrets']) {
      assert.equal((await pool.query(`SELECT count(*)::int AS n FROM ${table}`)).rows[0].n, 0, `${table} without a scope`);
    }
    // Writing into another workspace from inside one is refused by the policy.
    await assert.rejects(
      inWorkspace(pool, a.tenant, (db) => db.query("INSERT INTO services (workspace_id, name, url) VALUES ($1, 'smuggled', 'http://x')", [b.tenant])),
      /row-level security/,
    );
    const total = await asPlatform(pool, async (db) => (await db.query('SELECT count(*)::int AS n FROM services WHERE workspace_id = ANY($1)', [[a.tenant, b.tenant]])).rows[0].n);
    assert.equal(total, 2);
  });
});

describe('audit', () => {
  test('every change writes an audit row with before and after, sent to Kafka api.config-changes', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'aud');
    const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'audit-test');
    const consumer = kafka.consumer({ groupId: `audit-test-${t.tenant}` });
    const seen: { entity_type: string; action: string; workspace_id: string }[] = [];
    await consumer.connect();
    await consumer.subscribe({ topic: TOPICS.configChanges, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => { const v = JSON.parse(message.value!.toString()); if (v.workspace_id === t.tenant) seen.push(v); } });
    try {
      const created = await t.admin('POST', '/services', { name: 'audited', url: 'http://127.0.0.1:9' });
      await t.admin('PATCH', '/services/audited', { retries: 3 });
      await t.admin('DELETE', '/services/audited');
      const log = await t.admin('GET', `/audit-logs?entity_id=${created.body.id}`);
      assert.deepEqual(log.body.data.map((r: { action: string }) => r.action), ['delete', 'update', 'create']);
      const [del, upd, cre] = log.body.data;
      assert.equal(cre.after.name, 'audited');
      assert.equal(cre.before, null);
      assert.equal(upd.before.retries, 0);
      assert.equal(upd.after.retries, 3);
      assert.equal(del.after, null);
      assert.ok(cre.actor.startsWith('token:'));
      assert.ok(Number(upd.config_version) > Number(cre.config_version));
      await eventually('audit records on Kafka', () => ['create', 'update', 'delete'].every((a) => seen.some((s) => s.action === a && s.entity_type === 'service')), 30_000);
      // Pins are config changes too: on api.config-changes, not only the audit trail.
      assert.equal((await t.admin('PUT', '/config/pin', { version: Number(cre.config_version) })).status, 200);
      assert.equal((await t.admin('DELETE', '/config/pin')).status, 204);
      await eventually('pin and unpin on api.config-changes', () => ['pin', 'unpin'].every((a) => seen.some((s) => s.action === a && s.entity_type === 'config')), 30_000);
    } finally {
      await consumer.disconnect();
    }
  });

  test('an audit row too large for Kafka goes as a stand-in naming its size, and holds back no later row', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'big');
    const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'audit-big-test');
    const consumer = kafka.consumer({ groupId: `audit-big-test-${t.tenant}`, maxBytesPerPartition: 4 * 1024 * 1024 });
    const seen: { entity_type: string; action: string; truncated?: { bytes: number }; after: unknown }[] = [];
    await consumer.connect();
    await consumer.subscribe({ topic: TOPICS.auditTrail, fromBeginning: true });
    await consumer.run({ eachMessage: async ({ message }) => { const v = JSON.parse(message.value!.toString()); if (v.workspace_id === t.tenant) seen.push(v); } });
    try {
      // Before and after of 600 KB each: past the broker's 1 MB record limit.
      const page = (c: string) => ({ name: 'page', paths: ['/page'], static_response: { status: 200, body: { html: c.repeat(600_000) } } });
      assert.equal((await t.admin('POST', '/routes', page('a'))).status, 201);
      const put = await t.admin('PUT', '/routes/page', page('b'));
      assert.equal(put.status, 200, put.text.slice(0, 200));
      assert.equal((await t.admin('POST', '/services', { name: 'after-the-big-one', url: 'http://127.0.0.1:9' })).status, 201);
      await eventually('the later row on Kafka', () => seen.some((v) => v.entity_type === 'service' && v.action === 'create'), 30_000, 200);
      const big = seen.find((v) => v.entity_type === 'route' && v.action === 'update');
      assert.ok(big, 'the big row went too');
      assert.ok(big.truncated && big.truncated.bytes > 1_000_000, JSON.stringify(big.truncated));
      assert.equal(big.after, null);
    } finally {
      await consumer.disconnect();
    }
  });

  test("a declarative sync's audit rows keep key prefixes, never key hashes", async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl);
    const doc = (await t.admin('GET', '/config/export?format=json')).body;
    const key = `operator-chosen-key-${randomBytes(8).toString('hex')}`;
    doc.consumers.push({ username: 'synced-user', keys: [{ key }] });
    const r = await t.admin('POST', '/config/sync', doc);
    assert.equal(r.status, 200, r.text);
    const rows = (await t.admin('GET', '/audit-logs?entity_type=consumer')).body.data as unknown[];
    assert.ok(rows.length > 0);
    const text = JSON.stringify(rows);
    assert.ok(!/sha256|key_hash|hash/.test(text), text);
    assert.ok(!text.includes(key));
  });

  test('audit rows cannot be changed or deleted, by the application role or the owner', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'aud');
    await t.admin('POST', '/services', { name: 'x', url: 'http://127.0.0.1:9' });
    const app = (sql: string) => inWorkspace(pool, t.tenant, (db) => db.query(sql));
    await assert.rejects(app("UPDATE audit_logs SET actor = 'forged'"), /permission denied/);
    await assert.rejects(app('DELETE FROM audit_logs'), /permission denied/);
    await assert.rejects(app('TRUNCATE audit_logs'), /permission denied/);
    await assert.rejects(app('DELETE FROM config_versions'), /permission denied/);
    const owner = new pg.Client({ connectionString: stack.env.FLOWGATE_DATABASE_OWNER_URL });
    await owner.connect();
    try {
      await owner.query("SELECT set_config('flowgate.scope', 'platform', false)");
      await assert.rejects(owner.query("UPDATE audit_logs SET actor = 'forged' WHERE workspace_id = $1", [t.tenant]), /insert-only/);
      await assert.rejects(owner.query('DELETE FROM audit_logs WHERE workspace_id = $1', [t.tenant]), /insert-only/);
      await assert.rejects(owner.query('TRUNCATE audit_logs'), /insert-only|foreign key/);
    } finally {
      await owner.end();
    }
    const secrets = await t.admin('POST', '/webhook-secrets', { name: 'not-in-audit' });
    const rows = await inWorkspace(pool, t.tenant, async (db) => (await db.query('SELECT before, after FROM audit_logs')).rows);
    assert.ok(!JSON.stringify(rows).includes(secrets.body.secret), 'no secret value in the audit log');
  });
});

describe('versioned and declarative config', () => {
  test('every change bumps the version; versions read back whole and diff', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'ver');
    const v0 = (await t.admin('GET', '/config')).body.version;
    const s = await t.admin('POST', '/services', { name: 'v-svc', url: 'http://127.0.0.1:9' });
    assert.equal(Number(s.headers.get('x-flowgate-config-version')), v0 + 1);
    await t.admin('POST', '/routes', { name: 'v-route', service: 'v-svc', paths: ['/v'] });
    await t.admin('PATCH', '/services/v-svc', { retries: 1 });
    const now = (await t.admin('GET', '/config')).body;
    assert.equal(now.version, v0 + 3);
    const old = await t.admin('GET', `/config/versions/${v0 + 1}`);
    assert.deepEqual(old.body.config.routes, []);
    assert.equal(old.body.config.services[0].retries, 0);
    const diff = await t.admin('GET', `/config/diff?from=${v0 + 1}&to=${v0 + 3}`);
    assert.deepEqual(diff.body.diff.routes.created, ['v-route']);
    assert.deepEqual(diff.body.diff.services.updated, [{ key: 'v-svc', fields: { retries: { from: 0, to: 1 } } }]);
    const versions = await t.admin('GET', '/config/versions?limit=2');
    assert.deepEqual(versions.body.data.map((v: { version: number }) => v.version), [v0 + 3, v0 + 2]);
    assert.equal((await t.admin('GET', '/config/versions/99999')).status, 404);
  });

  test('export then sync changes nothing; a sync that fails changes nothing either', async () => {
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'decl');
    await t.admin('POST', '/roles', { name: 'r', grants: ['routes:read'] });
    await t.admin('POST', '/services', { name: 'orders', targets: [{ url: 'http://127.0.0.1:9' }] });
    await t.admin('POST', '/routes', { name: 'orders', service: 'orders', paths: ['/orders'], transformations: { request: { add_headers: { 'X-From': 'gw' } } } });
    const c = await t.admin('POST', '/consumers', { username: 'shop', roles: ['r'] });
    await t.admin('POST', `/consumers/${c.body.id}/keys`);
    await t.admin('POST', '/plugins', { name: 'request-size-limiting', route: 'orders', config: { allowed_payload_size_bytes: 1024 } });
    await t.admin('POST', '/policies', { name: 'per-shop', scope: 'consumer', consumer: 'shop', limit: 100, window_seconds: 60 });
    await t.admin('POST', '/triggers', { event_type: 'order.created', workflow_type: 'hello', input_template: { name: '{{event.data.name}}' } });
    const before = await t.admin('GET', '/config');
    const yaml = (await t.admin('GET', '/config/export')).text;
    assert.match(yaml, /^_format_version: "1"/);
    const yamlHeaders = { 'content-type': 'application/yaml' };

    const diff = await t.admin('POST', '/config/diff', yaml, yamlHeaders);
    assert.equal(diff.status, 200, diff.text);
    assert.equal(diff.body.diff.changes, 0);
    const sync = await t.admin('POST', '/config/sync', yaml, yamlHeaders);
    assert.equal(sync.status, 200, sync.text);
    assert.equal(sync.body.diff.changes, 0);
    const after = await t.admin('GET', '/config');
    assert.equal(after.body.version, before.body.version, 'no new version');
    assert.deepEqual(after.body.config, before.body.config, 'same entities, same ids');

    // An edited file: one update, one create, one delete.
    const doc = parse(yaml);
    doc.plugins[0].config.allowed_payload_size_bytes = 2048;
    doc.policies = [];
    doc.roles.unshift({ name: 'extra', grants: ['config:read'] });
    const edited = stringify(doc);
    const planned = await t.admin('POST', '/config/sync?dry_run=true', edited, yamlHeaders);
    assert.equal(planned.body.diff.changes, 3, planned.text);
    assert.equal((await t.admin('GET', '/config')).body.version, before.body.version, 'a dry run changes nothing');
    const applied = await t.admin('POST', '/config/sync', edited, yamlHeaders);
    assert.equal(applied.status, 200, applied.text);
    assert.equal(applied.body.version, before.body.version + 1, 'one sync, one version');
    const live = (await t.admin('GET', '/config')).body.config;
    assert.equal(live.plugins[0].config.allowed_payload_size_bytes, 2048);
    assert.deepEqual(live.policies, []);
    assert.deepEqual(live.roles.map((r: { name: string }) => r.name), ['extra', 'r']);

    // A service renamed, its route moved to the new name: the old one goes once nothing uses it.
    doc.services[0].name = 'orders-v2';
    doc.routes[0].service = 'orders-v2';
    const renamed = await t.admin('POST', '/config/sync', stringify(doc), yamlHeaders);
    assert.equal(renamed.status, 200, renamed.text);
    const moved = (await t.admin('GET', '/config')).body.config;
    assert.deepEqual(moved.services.map((x: { name: string }) => x.name), ['orders-v2']);
    assert.equal(moved.routes[0].service, 'orders-v2');
    // Renamed again, with an aggregate still naming the old name: refused, as any missing service is.
    const dangling = structuredClone(doc);
    dangling.services[0].name = 'orders-v3';
    dangling.routes[0].service = 'orders-v3';
    dangling.routes.push({ name: 'agg', paths: ['/agg'], aggregate: { backends: [{ service: 'orders-v2', path: '/x' }] } });
    const refusedAgg = await t.admin('POST', '/config/sync', stringify(dangling), yamlHeaders);
    assert.equal(refusedAgg.status, 409, refusedAgg.text);
    assert.equal(refusedAgg.body.error.details[0].field, `body.routes.${dangling.routes.length - 1}.aggregate.backends.0.service`);
    assert.deepEqual((await t.admin('GET', '/config')).body.config.services.map((x: { name: string }) => x.name), ['orders-v2'], 'nothing changed');

    // A document whose last entity is wrong: refused whole, nothing changed.
    const current = await t.admin('GET', '/config');
    doc.plugins[0].config.allowed_payload_size_bytes = 4096;
    doc.triggers.unshift({ name: 'broken', route_path: '/b', workflow_type: 'no-such-workflow' });
    const broken = stringify(doc);
    // The dry run and the diff answer what the sync will: the same refusal, not a plan that then fails.
    for (const ask of ['/config/sync?dry_run=true', '/config/diff']) {
      const planned = await t.admin('POST', ask, broken, yamlHeaders);
      assert.equal(planned.status, 409, `${ask}: ${planned.text}`);
      assert.match(planned.body.error.details[0].field, /^body\.triggers\.0\.workflow_type$/);
    }
    const failed = await t.admin('POST', '/config/sync', broken, yamlHeaders);
    assert.equal(failed.status, 409, failed.text);
    assert.match(failed.body.error.details[0].field, /^body\.triggers\.0\.workflow_type$/);
    const unchanged = await t.admin('GET', '/config');
    assert.equal(unchanged.body.version, current.body.version);
    assert.deepEqual(unchanged.body.config, current.body.config);
    const invalid = await t.admin('POST', '/config/sync', 'workspace: x\nservices: [{name: 1}]', yamlHeaders);
    assert.equal(invalid.status, 400);
    assert.ok(invalid.body.error.details.some((d: { field: string }) => d.field === 'body.services.0.name'), invalid.text);
    const elsewhere = await t.admin('POST', '/config/sync', yaml.replace(`workspace: ${t.tenant}`, 'workspace: other'), yamlHeaders);
    assert.equal(elsewhere.status, 400);
    assert.equal(elsewhere.body.error.details[0].field, 'body.workspace');
  });
});
