// gateway/upstreams.ts against sandbox upstreams: real node:http servers on 127.0.0.1, port 0.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { Upstreams, UpstreamError, type UpstreamService } from '../../gateway/upstreams';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

/** A sandbox upstream that counts requests and TCP connections, and can be killed and revived on its port. */
async function sandbox(handler: Handler = (_req, res) => res.end('ok')) {
  const s = {
    hits: 0,
    connections: 0,
    paths: [] as string[],
    handler,
    port: 0,
    url: '',
    server: undefined as unknown as http.Server,
    async listen() {
      s.server = http.createServer((req, res) => {
        // Active health checks are not traffic.
        if (req.url !== '/health') s.hits++;
        s.paths.push(req.url ?? '');
        s.handler(req, res);
      });
      s.server.on('connection', () => s.connections++);
      await new Promise<void>((resolve) => s.server.listen(s.port, '127.0.0.1', resolve));
      s.port = (s.server.address() as AddressInfo).port;
      s.url = `http://127.0.0.1:${s.port}`;
    },
    /** Stops listening and drops every socket: new connects are refused. */
    async kill() {
      const closed = new Promise((resolve) => s.server.close(resolve));
      s.server.closeAllConnections();
      await closed;
    },
  };
  await s.listen();
  servers.push(s);
  return s;
}
const servers: { server: http.Server }[] = [];
after(() => {
  for (const s of servers) {
    s.server.closeAllConnections();
    s.server.close();
  }
});

/** A port nothing listens on. */
async function deadUrl(): Promise<string> {
  const s = await sandbox();
  await s.kill();
  return s.url;
}

function capture() {
  const lines: { level: string; msg: string; service?: string; target?: string }[] = [];
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  const logger = pino({ formatters: { level: (label) => ({ level: label }) } }, stream);
  return { logger, lines };
}

let nextId = 0;
function service(targets: { url: string; weight?: number }[], extra: Partial<UpstreamService> = {}): UpstreamService {
  nextId++;
  return {
    id: `svc-${nextId}`, name: `orders-${nextId}`, workspace: 'acme',
    targets: targets.map((t) => ({ url: t.url, weight: t.weight ?? 1 })),
    connect_timeout_ms: 1000, read_timeout_ms: 2000, retries: 0, ...extra,
  };
}

const GET = { method: 'GET', path: '/', headers: {} };

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached in time');
    await sleep(10);
  }
}

const healthOf = (u: Upstreams, svc: UpstreamService, url: string) => u.health()[svc.id]!.find((t) => t.url === url)!;

test('weighted round robin: weights 1:3 over 400 requests give 100/300, smoothly interleaved', async (t) => {
  const a = await sandbox();
  const b = await sandbox();
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url, weight: 1 }, { url: b.url, weight: 3 }]);
  u.sync([svc]);
  const order: string[] = [];
  for (let i = 0; i < 400; i++) order.push((await u.request(svc, GET)).target);
  assert.equal(a.hits, 100);
  assert.equal(b.hits, 300);
  // Smooth: every window of 4 holds exactly one pick of the weight-1 target.
  for (let i = 0; i < 400; i += 4) assert.equal(order.slice(i, i + 4).filter((x) => x === a.url).length, 1, `window at ${i}`);
});

test('least connections sends to the idle target while the other is busy', async (t) => {
  const slow = await sandbox((_req, res) => setTimeout(() => res.end('slow'), 400));
  const fast = await sandbox();
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: slow.url }, { url: fast.url }], { algorithm: 'least-connections' });
  u.sync([svc]);
  // Two at once: one lands on each target; the fast one returns at once, the slow one stays in flight.
  const first = [u.request(svc, GET), u.request(svc, GET)];
  await until(() => fast.hits === 1 && slow.hits === 1);
  await until(() => healthOf(u, svc, fast.url).active === 0);
  for (let i = 0; i < 10; i++) assert.equal((await u.request(svc, GET)).target, fast.url);
  await Promise.all(first);
  assert.equal(slow.hits, 1);
  assert.equal(fast.hits, 11);
});

test('keep-alive: 200 sequential requests reuse a few sockets', async (t) => {
  const a = await sandbox();
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url }]);
  u.sync([svc]);
  for (let i = 0; i < 200; i++) assert.equal((await u.request(svc, GET)).status, 200);
  assert.equal(a.hits, 200);
  assert.ok(a.connections <= 2, `${a.connections} connections opened`);
});

test('path is appended to the target path; hop-by-hop response headers are removed', async (t) => {
  const a = await sandbox((_req, res) => {
    res.setHeader('x-custom', 'kept');
    res.setHeader('proxy-authenticate', 'Basic');
    res.setHeader('trailer', 'x-checksum');
    res.end('{"ok":true}');
  });
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: `${a.url}/base/` }]);
  u.sync([svc]);
  const res = await u.request(svc, { method: 'POST', path: '/orders/7?expand=1', headers: { 'content-length': '999', connection: 'keep-alive', 'x-in': '1' }, body: '{"a":1}' });
  assert.equal(a.paths[0], '/base/orders/7?expand=1');
  assert.equal(res.body.toString(), '{"ok":true}');
  assert.equal(res.headers['x-custom'], 'kept');
  for (const h of ['connection', 'keep-alive', 'transfer-encoding', 'proxy-authenticate', 'trailer']) assert.equal(res.headers[h], undefined, h);
});

test('repeated headers arrive as a list, a header the Connection header names is dropped, a body in many chunks arrives whole', async (t) => {
  const a = await sandbox((_req, res) => {
    res.setHeader('set-cookie', ['a=1', 'b=2']);
    res.setHeader('x-per-hop', 'secret');
    res.setHeader('connection', 'keep-alive, X-Per-Hop');
    res.setHeader('X-Mixed-Case', 'v');
    let i = 0;
    const tick = setInterval(() => {
      res.write(`chunk${i};`);
      if (++i === 5) {
        clearInterval(tick);
        res.end();
      }
    }, 5);
  });
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url }]);
  u.sync([svc]);
  const res = await u.request(svc, GET);
  assert.equal(res.status, 200);
  assert.deepEqual(res.headers['set-cookie'], ['a=1', 'b=2']);
  assert.equal(res.headers['x-per-hop'], undefined);
  assert.equal(res.headers['x-mixed-case'], 'v');
  assert.equal(res.body.toString(), 'chunk0;chunk1;chunk2;chunk3;chunk4;');
  const head = await u.request(svc, { ...GET, method: 'HEAD' });
  assert.equal(head.body.length, 0);
});

test("a caller's abort ends the exchange at once and does not count against the target", async (t) => {
  const a = await sandbox((_req, res) => setTimeout(() => res.end('late'), 1000));
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url }], { healthchecks: { passive: { unhealthy_failures: 1, unhealthy_5xx: 1, window_ms: 10_000, cooldown_ms: 10_000 } } });
  u.sync([svc]);
  const started = Date.now();
  await assert.rejects(u.request(svc, { ...GET, signal: AbortSignal.timeout(100) }), (err: UpstreamError) => err.code === 'upstream_timeout');
  assert.ok(Date.now() - started < 600, `${Date.now() - started} ms`);
  const aborted = new AbortController();
  aborted.abort(new Error('caller gave up'));
  await assert.rejects(u.request(svc, { ...GET, signal: aborted.signal }), /caller gave up/);
  assert.equal(healthOf(u, svc, a.url).healthy, true);
});

test('active health checks take a killed target out with no failed request, and put it back when revived', async (t) => {
  const targets = [await sandbox(), await sandbox(), await sandbox()];
  const [a, b, c] = targets as [Awaited<ReturnType<typeof sandbox>>, Awaited<ReturnType<typeof sandbox>>, Awaited<ReturnType<typeof sandbox>>];
  const { logger, lines } = capture();
  const registry = new Registry();
  const u = new Upstreams({ logger, registry });
  t.after(() => u.close());
  const svc = service(targets.map((s) => ({ url: s.url })), {
    retries: 2,
    healthchecks: { active: { path: '/health', interval_ms: 30, timeout_ms: 200, healthy_successes: 2, unhealthy_failures: 2 } },
  });
  u.sync([svc]);
  const gauge = async () => (await registry.getSingleMetricAsString('upstream_target_health')).split('\n').find((l) => l.includes(c.url))!;
  assert.match(await gauge(), / 1$/);

  await c.kill();
  // Before the checker notices, a refused connect is retried on another target: still no failure.
  for (let i = 0; i < 6; i++) assert.equal((await u.request(svc, GET)).status, 200);
  await until(() => !healthOf(u, svc, c.url).healthy);
  const hitsBefore = a.hits + b.hits;
  const results = await Promise.allSettled(Array.from({ length: 60 }, () => u.request(svc, GET)));
  assert.equal(results.filter((r) => r.status === 'rejected').length, 0);
  assert.equal(a.hits + b.hits - hitsBefore, 60);
  assert.match(await gauge(), / 0$/);
  const out = lines.find((l) => l.msg.includes('unhealthy'));
  assert.equal(out?.level, 'warn');
  assert.equal(out?.service, svc.name);
  assert.equal(out?.target, c.url);

  await c.listen();
  await until(() => healthOf(u, svc, c.url).healthy);
  c.hits = 0;
  for (let i = 0; i < 30; i++) await u.request(svc, GET);
  assert.equal(c.hits, 10);
  assert.match(await gauge(), / 1$/);
  assert.ok(lines.some((l) => l.level === 'info' && l.msg.includes('healthy') && l.target === c.url));
});

test('passive: a target answering 500 is taken out after N, tried once after the cooldown, and put back when it recovers', async (t) => {
  const a = await sandbox();
  let broken = true;
  const b = await sandbox((_req, res) => {
    res.statusCode = broken ? 500 : 200;
    res.end();
  });
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url }, { url: b.url }], {
    healthchecks: { passive: { unhealthy_failures: 3, unhealthy_5xx: 3, window_ms: 10_000, cooldown_ms: 300 } },
  });
  u.sync([svc]);
  const statuses: number[] = [];
  for (let i = 0; i < 26; i++) statuses.push((await u.request(svc, GET)).status);
  assert.equal(b.hits, 3, 'out after the third 500');
  assert.equal(statuses.filter((s) => s === 500).length, 3, 'the 500s themselves reach the caller');
  assert.equal(healthOf(u, svc, b.url).healthy, false);

  await sleep(350);
  for (let i = 0; i < 10; i++) await u.request(svc, GET);
  assert.equal(b.hits, 4, 'one half-open trial, which failed');
  assert.equal(healthOf(u, svc, b.url).healthy, false);

  broken = false;
  await sleep(350);
  for (let i = 0; i < 10; i++) await u.request(svc, GET);
  assert.equal(healthOf(u, svc, b.url).healthy, true);
  assert.ok(b.hits >= 4 + 5, `${b.hits}: back in rotation`);
});

test('passive: all targets out gives no_healthy_target (503) without touching them', async (t) => {
  const a = await sandbox((_req, res) => { res.statusCode = 503; res.end(); });
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url }], { healthchecks: { passive: { unhealthy_failures: 2, unhealthy_5xx: 2, window_ms: 10_000, cooldown_ms: 60_000 } } });
  u.sync([svc]);
  await u.request(svc, GET);
  await u.request(svc, GET);
  await assert.rejects(u.request(svc, GET), (err: UpstreamError) => err instanceof UpstreamError && err.code === 'no_healthy_target' && err.statusCode === 503);
  assert.equal(a.hits, 2);
});

test('connection refused is retried on another target; without retries it fails as upstream_unavailable', async (t) => {
  const live = await sandbox();
  const dead = await deadUrl();
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: dead }, { url: live.url }], { retries: 1 });
  u.sync([svc]);
  for (let i = 0; i < 10; i++) assert.equal((await u.request(svc, GET)).target, live.url);
  assert.equal(live.hits, 10);

  const once = service([{ url: dead }, { url: live.url }], { retries: 0 });
  const settled = await Promise.allSettled(Array.from({ length: 4 }, () => u.request(once, GET)));
  const failed = settled.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  assert.equal(failed.length, 2);
  for (const f of failed) assert.equal((f.reason as UpstreamError).code, 'upstream_unavailable');
});

test('never retried once the upstream saw the request', async (t) => {
  const a = await sandbox((req) => req.socket.destroy());
  const b = await sandbox((req) => req.socket.destroy());
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url }, { url: b.url }], { retries: 3 });
  u.sync([svc]);
  await assert.rejects(u.request(svc, { method: 'POST', path: '/pay', headers: {}, body: '{}' }), (err: UpstreamError) => err.code === 'upstream_unavailable');
  assert.equal(a.hits + b.hits, 1);
});

test('a slow upstream gives upstream_timeout after read_timeout_ms, not retried', async (t) => {
  const a = await sandbox((_req, res) => setTimeout(() => res.end('late'), 2000));
  const u = new Upstreams({ logger: capture().logger });
  t.after(() => u.close());
  const svc = service([{ url: a.url }], { read_timeout_ms: 150, retries: 2 });
  u.sync([svc]);
  const started = Date.now();
  await assert.rejects(u.request(svc, GET), (err: UpstreamError) => err.code === 'upstream_timeout' && err.statusCode === 504);
  const took = Date.now() - started;
  assert.ok(took >= 140 && took < 450, `${took} ms`);
  assert.equal(a.hits, 1);
});

test('sync keeps the health of targets that stay and drops removed ones', async (t) => {
  const a = await sandbox();
  const b = await sandbox((_req, res) => { res.statusCode = 500; res.end(); });
  const registry = new Registry();
  const u = new Upstreams({ logger: capture().logger, registry });
  t.after(() => u.close());
  const svc = service([{ url: a.url }, { url: b.url }], { healthchecks: { passive: { unhealthy_failures: 1, unhealthy_5xx: 1, window_ms: 10_000, cooldown_ms: 60_000 } } });
  u.sync([svc]);
  while (b.hits === 0) await u.request(svc, GET);
  assert.equal(healthOf(u, svc, b.url).healthy, false);
  u.sync([{ ...svc }]);
  assert.equal(healthOf(u, svc, b.url).healthy, false, 'state kept across an identical config');
  u.sync([{ ...svc, targets: [{ url: a.url, weight: 1 }] }]);
  assert.deepEqual(u.health()[svc.id]!.map((x) => x.url), [a.url]);
  assert.ok(!(await registry.getSingleMetricAsString('upstream_target_health')).includes(b.url));
  u.sync([]);
  assert.deepEqual(u.health(), {});
  assert.ok(!(await registry.getSingleMetricAsString('upstream_target_health')).includes(a.url), 'a removed service leaves no gauge behind');
});

test('an answer past the size bound is cut off and refused (502 upstream_response_too_large), not held whole; the target stays healthy', async (t) => {
  // An upstream that streams 64 MiB (an endless export, a misconfigured file server).
  const big = await sandbox((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    const chunk = Buffer.alloc(1024 * 1024, 120);
    let sent = 0;
    const write = () => {
      while (sent < 64) {
        sent++;
        if (!res.write(chunk)) return res.once('drain', write);
      }
      res.end();
    };
    write();
  });
  const u = new Upstreams({ logger: capture().logger, maxResponseBytes: 8 * 1024 * 1024 });
  t.after(() => u.close());
  const svc = service([{ url: big.url }], { healthchecks: { passive: { unhealthy_failures: 1, unhealthy_5xx: 1, window_ms: 10_000, cooldown_ms: 10_000 } } });
  const before = process.memoryUsage().arrayBuffers;
  await assert.rejects(u.request(svc, GET), (err: unknown) => err instanceof UpstreamError && err.code === 'upstream_response_too_large' && err.statusCode === 502);
  assert.ok(process.memoryUsage().arrayBuffers - before < 32 * 1024 * 1024, 'not buffered whole');
  assert.equal(healthOf(u, svc, big.url).healthy, true, 'the content, not the target\'s health');
});
