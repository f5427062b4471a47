// The gateway's record of requests: one audit entry per request on Kafka `api.audit-trail`
// (keyed by tenant, with the correlation id), none lost while Kafka is stopped and restarted;
// every error (with masked bodies) and a sample of successes in api_calls; the seed's metric
// names with route patterns, never raw paths.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createKafka, TOPICS } from '../../lib/kafka';
import { Registry } from 'prom-client';
import { createLogger } from '../../lib/logger';
import { asPlatform, createPool } from '../../lib/postgres';
import { RequestAudit } from '../../gateway/request-audit';
import { freePorts, serverSpec, startServer, stopServer } from '../../stack/stack';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, spawnProcess, testStack } from '../helpers/stack';

const stack = testStack();
const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 2);
let upstream: Server;
let upstreamUrl: string;
before(async () => {
  upstream = createServer((req, res) => {
    res.setHeader('content-type', 'application/json');
    if (req.url?.includes('slow')) {
      setTimeout(() => res.end('{"ok":"late"}'), 1500);
      return;
    }
    if (req.url?.includes('fail')) {
      res.statusCode = 500;
      res.end(JSON.stringify({ error: 'failed for jane.doe@example.com' }));
      return;
    }
    res.end('{"ok":true}');
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
});
after(async () => {
  await pool.end();
  await new Promise<void>((r) => upstream.close(() => r()));
});

async function tenant() {
  const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'audit');
  const c = await t.admin('POST', '/consumers', { username: 'client' });
  const key = (await t.admin('POST', `/consumers/${c.body.id}/keys`)).body.key as string;
  await t.admin('POST', '/services', { name: 'echo', url: upstreamUrl });
  await t.admin('POST', '/routes', { name: 'items', service: 'echo', paths: ['/items/:id'] });
  const gw = gatewayClient(stack.gatewayUrl, key).call;
  await eventually('route served', async () => (await gw('GET', '/items/1')).status === 200, 5000, 20);
  return { ...t, key, gw };
}

type AuditEntry = {
  audit_id: string; request_id: string; tenant?: string; method: string; route: string; path: string; status: number; latency_ms: number; user?: string; at: string; error_code?: string;
};
type SeenEntry = AuditEntry & { key: string; partition: number };

/**
 * The tenant's entries on the audit trail, and those of the given request ids whatever their
 * key (a refused request has no tenant: it is keyed `_platform`). Every record is kept, so an
 * entry sent twice shows as two.
 */
async function collect(tenantId: string, requestIds: Iterable<string> = []) {
  const wanted = new Set(requestIds);
  const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'audit-test');
  const consumer = kafka.consumer({ groupId: `gw-audit-${tenantId}-${randomUUID()}` });
  const records = new Map<string, SeenEntry[]>();
  await consumer.connect();
  await consumer.subscribe({ topic: TOPICS.auditTrail, fromBeginning: true });
  await consumer.run({
    eachMessage: async ({ message, partition }) => {
      const v = JSON.parse(message.value!.toString()) as AuditEntry;
      if (v.tenant !== tenantId && !wanted.has(v.request_id)) return;
      const list = records.get(v.request_id) ?? [];
      list.push({ ...v, key: message.key!.toString(), partition });
      records.set(v.request_id, list);
    },
  });
  return {
    /** Whether a request has an entry. */
    seen: { has: (id: string) => records.has(id) },
    /** Every entry of a request id. */
    all: (id: string): SeenEntry[] => records.get(id) ?? [],
    /** A request's one entry; fails when it has none or more than one. */
    one(id: string): SeenEntry {
      const list = records.get(id) ?? [];
      assert.equal(list.length, 1, `request ${id}: exactly one audit entry, got ${list.length}`);
      return list[0]!;
    },
    stop: () => consumer.disconnect(),
  };
}

describe('audit trail on Kafka', () => {
  test('every request has one entry, keyed by tenant on one partition, with the route pattern and correlation id', async () => {
    const t = await tenant();
    const ids = Array.from({ length: 20 }, (_, i) => `aud-${i}-${randomUUID()}`);
    const deniedId = `aud-denied-${randomUUID()}`;
    const trail = await collect(t.tenant, [deniedId]);
    try {
      for (const [i, id] of ids.entries()) await t.gw('GET', `/items/${i}`, undefined, { 'x-request-id': id });
      // A refused request is audited too: it names no tenant, so its entry is the platform's.
      // A client may send one X-Request-ID twice: two entries, each with an id of its own.
      const reused = `aud-reused-${randomUUID()}`;
      for (let i = 0; i < 2; i++) await t.gw('GET', `/items/r${i}`, undefined, { 'x-request-id': reused });
      const denied = await fetch(`${stack.gatewayUrl}/items/1`, { headers: { authorization: 'Bearer fgk_00000000_nope', 'x-request-id': deniedId } });
      assert.equal(denied.status, 401);
      const deniedCode = ((await denied.json()) as { error: { code: string } }).error.code;
      assert.equal(deniedCode, 'invalid_credential');
      await eventually('all entries on Kafka', () => ids.every((id) => trail.seen.has(id)), 30_000, 200);
      await eventually('the refused request\'s entry on Kafka', () => trail.seen.has(deniedId), 10_000, 200);
      // An entry sent twice would come within the producer's 100 ms of buffering: give it time to show.
      await new Promise((r) => setTimeout(r, 1500));
      const entries = ids.map((id) => trail.one(id));
      await eventually('both entries of the reused request id', () => trail.all(reused).length === 2, 10_000, 200);
      const twice = trail.all(reused);
      assert.deepEqual(twice.map((e) => e.path).sort(), ['/items/r0', '/items/r1']);
      const auditIds = [...entries, ...twice].map((e) => e.audit_id);
      assert.ok(auditIds.every((a) => /^[0-9a-f-]{36}$/.test(a)), 'each entry has an audit_id');
      assert.equal(new Set(auditIds).size, auditIds.length, 'no two entries share one');
      assert.equal(new Set(entries.map((e) => e.partition)).size, 1, 'one tenant, one partition');
      for (const [i, e] of entries.entries()) {
        assert.equal(e.request_id, ids[i]);
        assert.equal(e.key, t.tenant);
        assert.equal(e.tenant, t.tenant);
        assert.equal(e.route, '/items/:id');
        assert.equal(e.path, `/items/${i}`);
        assert.equal(e.method, 'GET');
        assert.equal(e.status, 200);
        assert.equal(e.user, 'client');
        assert.ok(e.latency_ms > 0 && e.latency_ms < 5000);
      }
      const refused = trail.one(deniedId);
      assert.equal(refused.key, '_platform', 'a request without a tenant is keyed _platform');
      assert.equal(refused.tenant, undefined);
      assert.equal(refused.status, 401);
      assert.equal(refused.error_code, deniedCode);
      assert.equal(refused.method, 'GET');
      assert.equal(refused.path, '/items/1');
      assert.equal(refused.user, undefined);
    } finally {
      await trail.stop();
    }
  });

  test('a client that goes away before its answer is audited too, once, as 499', async () => {
    const t = await tenant();
    const id = `aud-gone-${randomUUID()}`;
    const trail = await collect(t.tenant);
    try {
      const { port } = new URL(stack.gatewayUrl);
      const socket = connect(Number(port), '127.0.0.1');
      await new Promise<void>((r) => socket.once('connect', () => r()));
      socket.write(`GET /items/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${t.key}\r\nX-Request-ID: ${id}\r\n\r\n`);
      await new Promise((r) => setTimeout(r, 300));
      socket.destroy();
      await eventually("the gone client's entry on Kafka", () => trail.seen.has(id), 15_000, 200);
      // The upstream answers after 1.5 s: that must not write a second entry.
      await new Promise((r) => setTimeout(r, 2500));
      const e = trail.one(id);
      assert.equal(e.status, 499);
      assert.equal(e.error_code, 'client_closed_request');
      assert.equal(e.route, '/items/:id');
      assert.equal(e.tenant, t.tenant);
    } finally {
      await trail.stop();
    }
  });

  test('Kafka stopped and restarted: no audit entry is lost', async () => {
    const t = await tenant();
    const ids: string[] = [];
    try {
      await stopServer(stack.layout, 'kafka');
      for (let i = 0; i < 50; i++) {
        const id = `outage-${i}-${randomUUID()}`;
        ids.push(id);
        const r = await t.gw('GET', `/items/${i}`, undefined, { 'x-request-id': id });
        assert.equal(r.status, 200, 'requests are served while Kafka is down');
      }
      // The gauge counts the producer thread's queue as of its last report (every 250 ms).
      let queued = 0;
      await eventually('the entries waiting for Kafka counted', async () => {
        const metrics = await (await fetch(`http://127.0.0.1:${stack.layout.ports.gatewayStatus}/metrics`)).text();
        queued = Number(/^gateway_audit_queued(?:\{[^}]*\})? (\d+)/m.exec(metrics)?.[1]);
        return queued >= 50;
      }, 5000, 100).catch(() => undefined);
      assert.ok(queued >= 50, `entries wait for Kafka: ${queued}`);
    } finally {
      await startServer(stack.layout, serverSpec('kafka'));
    }
    const trail = await collect(t.tenant);
    try {
      await eventually('every entry from the outage on Kafka', () => ids.every((id) => trail.seen.has(id)), 90_000, 500);
    } finally {
      await trail.stop();
    }
  });
});

describe('audit trail through a gateway crash', () => {
  test('a gateway killed while Kafka is down loses no audit entry: the next start sends its spool', async () => {
    const t = await tenant();
    const spool = mkdtempSync(path.join(os.tmpdir(), 'flowgate-spool-'));
    const port = String((await freePorts()).gateway);
    const env = { FLOWGATE_SPOOL_DIR: spool, FLOWGATE_GATEWAY_PORT: port };
    let gw = await spawnProcess('gateway', stack.env, env);
    const ids: string[] = [];
    try {
      await eventually('gateway ready', async () => (await fetch(`${gw.statusUrl}/readyz`).catch(() => null))?.status === 200, 30_000, 200);
      const call = gatewayClient(gw.publicUrl!, t.key).call;
      await eventually('route served', async () => (await call('GET', '/items/1')).status === 200, 5000, 20);
      await stopServer(stack.layout, 'kafka');
      for (let i = 0; i < 30; i++) {
        const id = `crash-${i}-${randomUUID()}`;
        ids.push(id);
        assert.equal((await call('GET', `/items/${i}`, undefined, { 'x-request-id': id })).status, 200);
      }
      // Past the second after which unacknowledged entries go to disk, and the 100 ms of buffering.
      await eventually('entries spooled', () => ids.every((id) => readdirSync(spool).some((f) => readFileSync(path.join(spool, f), 'utf8').includes(id))), 10_000, 200);
      gw.child.kill('SIGKILL');
      await gw.exited;
    } finally {
      await startServer(stack.layout, serverSpec('kafka'));
    }
    gw = await spawnProcess('gateway', stack.env, env);
    const trail = await collect(t.tenant);
    try {
      await eventually('every entry from before the crash on Kafka', () => ids.every((id) => trail.seen.has(id)), 90_000, 500);
      await eventually('the spool is emptied once sent', () => readdirSync(spool).length === 0, 10_000, 200);
    } finally {
      await trail.stop();
      gw.child.kill('SIGTERM');
      await gw.exited;
      rmSync(spool, { recursive: true, force: true });
    }
  });
});

describe('api_calls and metrics', () => {
  test('errors are kept with masked bodies; metrics use route patterns', async () => {
    const t = await tenant();
    const id = `calls-${randomUUID()}`;
    const r = await t.gw('POST', '/items/fail-1', { email: 'john.smith@example.com', card: '4111111111111111' }, { 'x-request-id': id });
    assert.equal(r.status, 500);
    let row: Record<string, string> | undefined;
    await eventually('the error is in api_calls', async () => {
      row = (await asPlatform(pool, (db) => db.query('SELECT * FROM api_calls WHERE request_id = $1', [id]))).rows[0];
      return Boolean(row);
    }, 10_000, 200);
    assert.equal(row!.workspace_id, t.tenant);
    assert.equal(Number(row!.status), 500);
    assert.equal(row!.route, '/items/:id');
    assert.equal(row!.consumer !== null, true);
    assert.doesNotMatch(row!.request_body!, /john\.smith|4111111111111111/);
    assert.match(row!.request_body!, /@example\.com/);
    assert.doesNotMatch(row!.response_body!, /jane\.doe/);
    const metrics = await (await fetch(`http://127.0.0.1:${stack.layout.ports.gatewayStatus}/metrics`)).text();
    assert.match(metrics, new RegExp(`http_requests_total\\{method="POST",path="/items/:id",status="500",tenant="${t.tenant}"[^}]*\\} 1`));
    assert.match(metrics, /http_request_duration_seconds_bucket\{[^}]*path="\/items\/:id"/);
    assert.match(metrics, /auth_token_validation_duration_seconds_count\{[^}]*method="api_key"/);
    assert.match(metrics, /upstream_target_health\{/);
    assert.doesNotMatch(metrics, /path="\/items\/fail-1"/, 'no raw paths in labels');
  });

  test('a body PostgreSQL cannot store (a NUL byte) is kept with a stand-in and holds back no other row', async () => {
    const t = await tenant();
    const nul = `nul-${randomUUID()}`;
    const next = `after-nul-${randomUUID()}`;
    const r = await fetch(`${stack.gatewayUrl}/items/fail-nul`, {
      method: 'POST', headers: { authorization: `Bearer ${t.key}`, 'content-type': 'text/plain', 'x-request-id': nul }, body: 'before\0after',
    });
    assert.equal(r.status, 500);
    assert.equal((await t.gw('POST', '/items/fail-2', { n: 1 }, { 'x-request-id': next })).status, 500);
    let rows: { request_id: string; request_body: string }[] = [];
    await eventually('both errors are in api_calls', async () => {
      rows = (await asPlatform(pool, (db) => db.query('SELECT request_id, request_body FROM api_calls WHERE request_id = ANY($1)', [[nul, next]]))).rows;
      return rows.length === 2;
    }, 10_000, 200);
    assert.equal(rows.find((x) => x.request_id === nul)!.request_body, 'before\uFFFDafter');
  });

  test('a row PostgreSQL refuses is dropped and counted; the rest of its batch is written', async () => {
    const registry = new Registry();
    const audit = new RequestAudit({ pool, logger: createLogger('audit-test', 'error'), registry, successSample: 1, flushMs: 60_000 });
    const ids = [0, 1, 2].map((i) => `refused-${i}-${randomUUID()}`);
    const row = (id: string, at: string) => ({ at, request_id: id, method: 'GET', path: '/x', status: 404, latency_ms: 1, client_ip: '127.0.0.1' });
    audit.record(row(ids[0]!, new Date().toISOString()));
    audit.record(row(ids[1]!, 'not a timestamp')); // SQLSTATE 22007: this row can never be written
    audit.record(row(ids[2]!, new Date().toISOString()));
    await audit.close();
    const written = (await asPlatform(pool, (db) => db.query('SELECT request_id FROM api_calls WHERE request_id = ANY($1)', [ids]))).rows.map((r) => r.request_id as string);
    assert.deepEqual(written.sort(), [ids[0], ids[2]].sort());
    assert.match(await registry.metrics(), /gateway_api_calls_dropped_total 1/);
  });
});
