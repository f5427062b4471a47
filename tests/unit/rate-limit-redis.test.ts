// Rate limits shared through a real Redis by two gateway instances, and the local fallback
// while that Redis is stopped.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import pino from 'pino';
import { prom } from '../../lib/metrics';
import { RateLimiter, type LimitDecision, type LimitPolicy, type RateAlgorithm } from '../../gateway/rate-limit';
import { eventually, privateServer } from '../helpers/stack';

let redis: Awaited<ReturnType<typeof privateServer>>;
const limiters: RateLimiter[] = [];
const registry = new prom.Registry();
type Line = { level: number; msg: string; limiter?: string };
const logs: Line[] = [];
const logger = pino({ level: 'info' }, { write: (line: string) => { logs.push(JSON.parse(line) as Line); } });

function gateway(name: string): RateLimiter {
  const limiter = new RateLimiter({ redisUrl: redis.env.FLOWGATE_REDIS_URL, logger: logger.child({ limiter: name }), registry, keyPrefix: `test:${randomUUID()}:` });
  limiters.push(limiter);
  return limiter;
}

/**
 * Both limiters share one prefix: they stand for two gateways of one deployment. A roomy
 * command timeout, so a loaded test machine does not send a request to the local fallback
 * (fail-fast is the outage test's business).
 */
function gatewayPair(): [RateLimiter, RateLimiter] {
  const keyPrefix = `test:${randomUUID()}:`;
  const pair = [1, 2].map(() => new RateLimiter({ redisUrl: redis.env.FLOWGATE_REDIS_URL, logger, registry, keyPrefix, commandTimeoutMs: 2000 })) as [RateLimiter, RateLimiter];
  limiters.push(...pair);
  return pair;
}

async function gaugeValue(name: string): Promise<number | undefined> {
  const m = registry.getSingleMetric(name);
  return m ? (await m.get()).values[0]?.value : undefined;
}

before(async () => {
  redis = await privateServer('redis');
});

after(async () => {
  await Promise.all(limiters.map((l) => l.close()));
  if (!redis) return;
  await redis.stop();
  await rm(redis.layout.dir, { recursive: true, force: true });
});

// An hour-long window: a window boundary inside the test's few ms is very unlikely.
const policy = (algorithm: RateAlgorithm, limit: number): LimitPolicy => ({ name: algorithm, limit, windowSeconds: 3600, algorithm });

for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
  test(`${algorithm}: two gateways on one Redis hold one limit exactly`, async () => {
    const [a, b] = gatewayPair();
    await eventually('both limiters connected', () => a.redisHealthy && b.redisHealthy, 10_000, 20);
    const p = policy(algorithm, 50);
    const ds = await Promise.all(Array.from({ length: 120 }, (_, i) => (i % 2 ? a : b).check('ws:acme:route:orders:consumer:c1', p)));
    assert.deepEqual(ds.filter((d) => d.source !== 'redis'), [], 'every decision was made in Redis');
    assert.equal(ds.filter((d) => d.allowed).length, 50);
    assert.deepEqual(ds.filter((d) => d.allowed).map((d) => d.remaining).sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i),
      'each allowed request saw its own count');
    for (const d of ds.filter((x) => !x.allowed)) assert.ok(d.retryAfterSeconds! >= 1 && d.retryAfterSeconds! <= 3600);
    await Promise.all([a.close(), b.close()]);
  });
}

for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
  test(`${algorithm}: with leases most decisions skip Redis, and two gateways still hold a large limit exactly`, async () => {
    const [a, b] = gatewayPair();
    await eventually('both limiters connected', () => a.redisHealthy && b.redisHealthy, 10_000, 20);
    // A 30-day window: the bucket refills no whole token while the test runs, even on a slow machine.
    const p: LimitPolicy = { name: algorithm, limit: 3000, windowSeconds: 30 * 86_400, algorithm };
    const ds: LimitDecision[] = [];
    // Waves of concurrent requests from both, well past the limit, as two busy gateways send them.
    for (let wave = 0; wave < 80; wave++) {
      ds.push(...await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? a : b).check('ws:acme', p))));
    }
    const allowed = ds.filter((d) => d.allowed);
    assert.equal(allowed.length, 3000, 'every leased token was counted in Redis, and near the limit each request went to Redis again');
    const bySource = (s: string) => ds.filter((d) => d.source === s).length;
    assert.equal(bySource('local'), 0);
    assert.ok(bySource('lease') > 2000, `${bySource('lease')} of ${ds.length} decisions came from leases`);
    assert.ok(ds.filter((d) => !d.allowed).every((d) => d.source === 'redis'), 'only Redis refuses');
    // Leases are slices of Redis's count in the order it granted them: every allowed request still saw a count of its own.
    assert.deepEqual(allowed.map((d) => d.remaining).sort((x, y) => x - y), Array.from({ length: 3000 }, (_, i) => i));
    await Promise.all([a.close(), b.close()]);
  });
}

test('a burst past the limit from one gateway: no leased token is left unspent while Redis refuses', async () => {
  const [a] = gatewayPair();
  await eventually('limiter connected', () => a.redisHealthy, 10_000, 20);
  for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
    for (let round = 0; round < 5; round++) {
      const p: LimitPolicy = { name: `${algorithm}-${round}`, limit: 1000, windowSeconds: 30 * 86_400, algorithm };
      // Bursts that cross the limit while leases are out: the first teaches the limiter the key's rate; without spending leased tokens on requests Redis refused, fewer than 1000 were allowed.
      const ds: LimitDecision[] = [];
      for (const n of [50, 400, 400, 400]) ds.push(...await Promise.all(Array.from({ length: n }, () => a.check('burst', p))));
      assert.equal(ds.filter((d) => d.allowed).length, 1000, `${algorithm} round ${round}: ${ds.filter((d) => d.source === 'lease').length} from leases`);
    }
  }
  await a.close();
});

test('requests under two policies, concurrent: leased tokens are neither overwritten nor left unspent, so the limit is the limit', async () => {
  const [a] = gatewayPair();
  await eventually('limiter connected', () => a.redisHealthy, 10_000, 20);
  const wide = (name: string, limit: number): LimitPolicy => ({ name, limit, windowSeconds: 30 * 86_400, algorithm: 'fixed-window' });
  // Both policies lease: without merging, a lease that came back replaced the one before it.
  let allowed = 0;
  for (let round = 0; round < 40; round++) {
    const ds = await Promise.all(Array.from({ length: 50 }, () => a.checkAll([{ key: 'two:route', policy: wide('route', 1000) }, { key: 'two:consumer', policy: wide('consumer', 1000) }])));
    allowed += ds.filter((d) => d.every((x) => x.allowed)).length;
  }
  assert.equal(allowed, 1000, 'both policies allow 1000');
  // A route policy shared by a consumer whose own limit is too small to lease (each of its
  // requests asks Redis) and one with a large limit: the route's leased tokens are spent, not left
  // to expire while Redis counts the route again for every request.
  const route = wide('route2', 300);
  const ok = (ds: LimitDecision[][]) => ds.filter((d) => d.every((x) => x.allowed)).length;
  let small = 0;
  for (let round = 0; round < 4; round++) small += ok(await Promise.all(Array.from({ length: 25 }, async () => a.checkAll([{ key: 'mix:route', policy: route }, { key: 'mix:small', policy: wide('small', 50) }]))));
  let large = 0;
  for (let round = 0; round < 8; round++) large += ok(await Promise.all(Array.from({ length: 50 }, async () => a.checkAll([{ key: 'mix:route', policy: route }, { key: 'mix:large', policy: wide('large', 100_000) }]))));
  assert.equal(small, 50);
  assert.equal(small + large, 300, `the route allowed ${small} + ${large}`);
  // Requests in flight together that find one lease token: one token, one request.
  const r100 = wide('route3', 100);
  let admitted = 0;
  for (let i = 0; i < 3; i++) if ((await a.check('few:route', r100)).allowed) admitted += 1;
  for (let round = 0; round < 3; round++) admitted += ok(await Promise.all(Array.from({ length: 30 }, async () => a.checkAll([{ key: 'few:route', policy: r100 }, { key: `few:small${round}`, policy: wide('small3', 50) }]))));
  for (let i = 0; i < 200; i++) if ((await a.check('few:route', r100)).allowed) admitted += 1;
  assert.equal(admitted, 100, 'never more than the limit');
  await a.close();
});

test('a Redis that answers nothing (paused): one call waits out the timeout, the next are local, and none is counted later', async () => {
  const keyPrefix = `test:${randomUUID()}:`;
  const limiter = new RateLimiter({ redisUrl: redis.env.FLOWGATE_REDIS_URL, logger, keyPrefix, commandTimeoutMs: 300 });
  limiters.push(limiter);
  await eventually('limiter connected', () => limiter.redisHealthy, 10_000, 20);
  const p = policy('fixed-window', 50); // too small to lease: every request asks Redis
  const admin = new Redis(redis.env.FLOWGATE_REDIS_URL!);
  try {
    await admin.call('CLIENT', 'PAUSE', '2500', 'ALL');
    const t0 = performance.now();
    const ds: LimitDecision[] = [];
    for (let i = 0; i < 20; i++) ds.push(await limiter.check('paused', p));
    const took = performance.now() - t0;
    assert.ok(took < 1500, `20 decisions took ${Math.round(took)} ms with a 300 ms timeout`);
    assert.ok(ds.every((d) => d.source === 'local' && d.allowed));
    // Resumed: what was decided locally was not counted in Redis as well.
    await new Promise((r) => setTimeout(r, 3500));
    let shared: LimitDecision | undefined;
    await eventually('decided in Redis again', async () => (shared = await limiter.check('paused', p)).source === 'redis', 10_000, 100);
    assert.ok(shared!.remaining >= 47, `Redis counted ${50 - shared!.remaining} request(s)`);
  } finally {
    admin.disconnect();
  }
});

test('checkAll in Redis: a request one policy refuses is counted against none', async () => {
  const [a, b] = gatewayPair();
  await eventually('both limiters connected', () => a.redisHealthy && b.redisHealthy, 10_000, 20);
  const minute: LimitPolicy = { name: 'minute', limit: 5, windowSeconds: 3600, algorithm: 'sliding-window' };
  const burst: LimitPolicy = { name: 'burst', limit: 2, windowSeconds: 3600, algorithm: 'token-bucket' };
  const both = [{ key: 'c1', policy: minute }, { key: 'c1', policy: burst }];
  const ds = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).checkAll(both)));
  assert.equal(ds.filter((pair) => pair.every((d) => d.allowed)).length, 2);
  const left = await Promise.all(Array.from({ length: 6 }, () => a.check('c1', minute)));
  assert.equal(left.filter((d) => d.allowed).length, 3, 'the refused requests did not use the per-minute quota');
  await Promise.all([a.close(), b.close()]);
});

test('sliding-window in Redis weighs the previous window by its overlap', async () => {
  const prefix = `test:${randomUUID()}:`;
  const shared = new RateLimiter({ redisUrl: redis.env.FLOWGATE_REDIS_URL, logger, keyPrefix: prefix, commandTimeoutMs: 2000 });
  limiters.push(shared);
  await eventually('limiter connected', () => shared.redisHealthy, 10_000, 20);
  const client = new Redis(redis.env.FLOWGATE_REDIS_URL!);
  try {
    const p = policy('sliding-window', 100);
    const w = 3_600_000;
    const serverNow = async () => { const [s, us] = await client.time(); return Number(s) * 1000 + Math.floor(Number(us) / 1000); };
    const weighted = (now: number) => Math.floor(100 * (w - (now % w)) / w);
    const t0 = await serverNow();
    // The previous window's counter, as the script names it: <prefix><alg>:<window ms>:<policy>:<key>:<window number>.
    await client.set(`${prefix}s:${w}:${p.name}:k:${Math.floor(t0 / w) - 1}`, '100');
    const ds = await Promise.all(Array.from({ length: 120 }, () => shared.check('k', p)));
    const t1 = await serverNow();
    const allowed = ds.filter((d) => d.allowed).length;
    assert.ok(Math.floor(t0 / w) === Math.floor(t1 / w), 'the test stayed within one window');
    assert.ok(allowed >= 100 - weighted(t0) && allowed <= 100 - weighted(t1), `${allowed} allowed, previous window weighs ${weighted(t0)}..${weighted(t1)}`);
  } finally {
    client.disconnect();
  }
});

test('Redis stopped: decisions are local and fast and still limited; Redis back: shared again', async () => {
  const limiter = gateway('outage');
  const mine = (level: number) => logs.filter((l) => l.limiter === 'outage' && l.level === level);
  await eventually('limiter connected', () => limiter.redisHealthy, 10_000, 20);
  assert.equal((await limiter.check('warm', policy('fixed-window', 5))).source, 'redis');
  assert.equal(await gaugeValue('rate_limit_redis_up'), 1);

  await redis.stop();
  const p = policy('token-bucket', 5);
  const ds = [];
  for (let i = 0; i < 8; i++) {
    const t0 = performance.now();
    ds.push(await limiter.check('outage', p));
    assert.ok(performance.now() - t0 < 100, `decision ${i} took ${performance.now() - t0} ms`);
  }
  assert.deepEqual(ds.map((d) => d.source), Array(8).fill('local'));
  assert.equal(ds.filter((d) => d.allowed).length, 5);
  assert.equal(limiter.redisHealthy, false);
  assert.equal(await gaugeValue('rate_limit_redis_up'), 0);
  await new Promise((r) => setTimeout(r, 500)); // reconnect attempts fail meanwhile
  assert.equal(mine(40).length, 1, 'one warning for the outage, not one per request or reconnect attempt');

  await redis.start();
  const roomy = policy('fixed-window', 1_000_000);
  await eventually('decisions made in Redis again', async () => (await limiter.check('after', roomy)).source === 'redis', 15_000, 50);
  assert.equal(limiter.redisHealthy, true);
  assert.equal(await gaugeValue('rate_limit_redis_up'), 1);
  assert.deepEqual(mine(30).map((l) => l.msg), ['rate limits: redis is back, limits are shared again']);
  assert.equal(mine(40).length, 1);
  const decided = registry.getSingleMetric('rate_limit_decisions_total');
  const values = (await decided!.get()).values;
  assert.ok(values.some((v) => v.labels.source === 'local' && v.labels.outcome === 'refused' && v.value === 3));
});
