// The local rate-limit algorithms (the fallback when Redis is down) and the RateLimit headers.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LocalLimiter, RateLimiter, rateLimitHeaders, type LimitDecision, type LimitPolicy, type RateAlgorithm } from '../../gateway/rate-limit';
import { createLogger } from '../../lib/logger';

/** An hour boundary, so every window in these tests starts at T0. */
const T0 = Math.ceil(1.7e12 / 3_600_000) * 3_600_000;

function clocked(start = T0) {
  const clock = { now: start };
  return { clock, limiter: new LocalLimiter({ now: () => clock.now }) };
}

const policy = (algorithm: RateAlgorithm, limit = 10, windowSeconds = 60, name: string = algorithm): LimitPolicy => ({ name, limit, windowSeconds, algorithm });

function allowedCount(ds: LimitDecision[]) { return ds.filter((d) => d.allowed).length; }

for (const algorithm of ['fixed-window', 'sliding-window', 'token-bucket'] as const) {
  test(`${algorithm}: exactly N requests from a fresh key, then refused`, () => {
    const { clock, limiter } = clocked();
    clock.now = T0 + 10_000; // 10 s into the window
    const p = policy(algorithm);
    const ds = Array.from({ length: 15 }, () => limiter.check('k', p));
    assert.equal(allowedCount(ds), 10);
    assert.deepEqual(ds.slice(0, 10).map((d) => d.remaining), [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    for (const d of ds.slice(10)) {
      assert.equal(d.allowed, false);
      assert.equal(d.remaining, 0);
      assert.equal(d.source, 'local');
      assert.equal(d.policy, algorithm);
      assert.ok(Number.isInteger(d.retryAfterSeconds) && d.retryAfterSeconds! >= 1 && d.retryAfterSeconds! <= 60);
    }
    // Retry-After is honest: one second earlier is still refused, at it a request is allowed.
    const wait = ds[10]!.retryAfterSeconds! * 1000;
    clock.now += wait - 1000;
    assert.equal(limiter.check('k', p).allowed, false);
    clock.now += 1000;
    assert.equal(limiter.check('k', p).allowed, true);
    assert.ok(ds.every((d) => Number.isInteger(d.resetSeconds) && d.resetSeconds >= 0));
    assert.equal(limiter.check('other', p).allowed, true, 'keys are independent');
  });
}

test('fixed-window: the quota comes back whole at the next window', () => {
  const { clock, limiter } = clocked();
  const p = policy('fixed-window', 3);
  clock.now = T0 + 59_000;
  for (let i = 0; i < 3; i++) assert.equal(limiter.check('k', p).allowed, true);
  const refused = limiter.check('k', p);
  assert.equal(refused.allowed, false);
  assert.equal(refused.retryAfterSeconds, 1);
  assert.equal(refused.resetSeconds, 1);
  clock.now = T0 + 60_000;
  assert.equal(allowedCount(Array.from({ length: 5 }, () => limiter.check('k', p))), 3);
});

test('token-bucket: refills limit/window tokens per second, capped at the limit', () => {
  const { clock, limiter } = clocked();
  const p = policy('token-bucket', 10, 60); // one token per 6 s
  for (let i = 0; i < 10; i++) assert.equal(limiter.check('k', p).allowed, true);
  const refused = limiter.check('k', p);
  assert.equal(refused.allowed, false);
  assert.equal(refused.retryAfterSeconds, 6);
  assert.equal(refused.resetSeconds, 60);
  clock.now += 5_999;
  assert.equal(limiter.check('k', p).allowed, false);
  clock.now += 1;
  const one = limiter.check('k', p);
  assert.equal(one.allowed, true);
  assert.equal(one.remaining, 0);
  assert.equal(limiter.check('k', p).allowed, false);
  clock.now += 30_000; // five tokens
  assert.equal(allowedCount(Array.from({ length: 8 }, () => limiter.check('k', p))), 5);
  clock.now += 3_600_000; // far more than a window: full, not more
  assert.equal(allowedCount(Array.from({ length: 15 }, () => limiter.check('k', p))), 10);
});

test('sliding-window: the previous window counts in proportion to its overlap', () => {
  const { clock, limiter } = clocked();
  const p = policy('sliding-window', 10, 60);
  clock.now = T0 + 30_000;
  assert.equal(allowedCount(Array.from({ length: 10 }, () => limiter.check('k', p))), 10);
  // 15 s into the next window, 75 % of the previous one overlaps: floor(10 × 0.75) = 7 used.
  clock.now = T0 + 60_000 + 15_000;
  const ds = Array.from({ length: 5 }, () => limiter.check('k', p));
  assert.deepEqual(ds.map((d) => d.allowed), [true, true, true, false, false]);
  assert.deepEqual(ds.map((d) => d.remaining), [2, 1, 0, 0, 0]);
  // 3 + floor(10 × (1 − f)) < 10 once 10 × (1 − f) < 7, i.e. after 18 s: 3.001 s from now.
  assert.equal(ds[3]!.retryAfterSeconds, 4);
  clock.now = T0 + 60_000 + 18_000;
  assert.equal(limiter.check('k', p).allowed, false);
  clock.now += 1;
  assert.equal(limiter.check('k', p).allowed, true);
  // Two windows later nothing of the first remains.
  clock.now = T0 + 180_000;
  assert.equal(allowedCount(Array.from({ length: 12 }, () => limiter.check('k', p))), 10);
});

test('sliding-window: a full current window frees a slot as soon as the next window begins to weigh it down', () => {
  const { clock, limiter } = clocked();
  const p = policy('sliding-window', 4, 60);
  clock.now = T0 + 50_000;
  for (let i = 0; i < 4; i++) limiter.check('k', p);
  const refused = limiter.check('k', p);
  // At the next window's start the previous one weighs 4 × 1 = 4; a ms later floor(4 × (1 − f)) = 3.
  assert.equal(refused.retryAfterSeconds, 11);
  clock.now = T0 + 60_000;
  assert.equal(limiter.check('k', p).allowed, false);
  clock.now += 1;
  assert.equal(limiter.check('k', p).allowed, true);
  assert.equal(limiter.check('k', p).allowed, false);
  clock.now = T0 + 60_000 + 30_000; // floor(4 × 0.5) = 2, plus the 1 counted in this window
  assert.equal(allowedCount(Array.from({ length: 4 }, () => limiter.check('k', p))), 1);
});

test('checkAll: a request one policy refuses is counted against none', () => {
  const { limiter } = clocked();
  const perMinute = policy('fixed-window', 5, 60, 'per-minute');
  const burst = policy('token-bucket', 2, 3600, 'burst');
  const both = [{ key: 'c1', policy: perMinute }, { key: 'c1', policy: burst }];
  assert.ok(limiter.checkAll(both).every((d) => d.allowed));
  assert.ok(limiter.checkAll(both).every((d) => d.allowed));
  for (let i = 0; i < 3; i++) {
    const [minute, b] = limiter.checkAll(both);
    assert.equal(b!.allowed, false);
    assert.equal(minute!.allowed, true, 'its own policy would allow it');
    assert.equal(minute!.remaining, 3, 'but it was not counted');
  }
  // The per-minute policy still has 3 of its 5.
  assert.equal(allowedCount(Array.from({ length: 5 }, () => limiter.check('c1', perMinute))), 3);
});

test('policies with the same name on the same key but other algorithms do not share counts', () => {
  const { limiter } = clocked();
  const a = policy('fixed-window', 1, 60, 'p');
  const b = policy('token-bucket', 1, 60, 'p');
  assert.equal(limiter.check('k', a).allowed, true);
  assert.equal(limiter.check('k', b).allowed, true);
});

test('the local limiter is bounded: the least recently counted key goes first', () => {
  const clock = { now: T0 };
  const limiter = new LocalLimiter({ now: () => clock.now, maxKeys: 3 });
  const p = policy('fixed-window', 1);
  for (const k of ['a', 'b', 'c']) limiter.check(k, p);
  limiter.check('d', p);
  assert.equal(limiter.size, 3);
  assert.equal(limiter.check('a', p).allowed, true, 'a was evicted, so it starts fresh');
  assert.equal(limiter.check('c', p).allowed, false, 'c is still held');
});

test('invalid policies are rejected', () => {
  const { limiter } = clocked();
  assert.throws(() => limiter.check('k', policy('fixed-window', 0)), RangeError);
  assert.throws(() => limiter.check('k', policy('fixed-window', 1.5)), RangeError);
  assert.throws(() => limiter.check('k', policy('fixed-window', 5, 0)), RangeError);
});

test('without a Redis URL the RateLimiter decides locally', async () => {
  const limiter = new RateLimiter({ logger: createLogger('test', 'silent') });
  const p = policy('fixed-window', 2, 3600);
  const ds = await Promise.all([1, 2, 3].map(() => limiter.check('k', p)));
  assert.deepEqual(ds.map((d) => [d.allowed, d.source]), [[true, 'local'], [true, 'local'], [false, 'local']]);
  assert.equal(limiter.redisHealthy, false);
  assert.deepEqual(await limiter.checkAll([]), []);
  await limiter.close();
});

const d = (over: Partial<LimitDecision>): LimitDecision => ({
  allowed: true, policy: 'p', limit: 100, remaining: 50, resetSeconds: 30, source: 'redis', windowSeconds: 60, ...over,
});

test('rateLimitHeaders: the decision with the fewest remaining, every policy listed', () => {
  const h = rateLimitHeaders([
    d({ policy: 'minute', limit: 100, remaining: 40, resetSeconds: 20, windowSeconds: 60 }),
    d({ policy: 'second', limit: 10, remaining: 3, resetSeconds: 1, windowSeconds: 1 }),
    d({ policy: 'day', limit: 10000, remaining: 9000, resetSeconds: 80000, windowSeconds: 86400 }),
  ]);
  assert.deepEqual(h, {
    'RateLimit-Limit': '10',
    'RateLimit-Remaining': '3',
    'RateLimit-Reset': '1',
    'RateLimit-Policy': '100;w=60, 10;w=1, 10000;w=86400',
  });
});

test('rateLimitHeaders: Retry-After is the longest wait among the refusals', () => {
  const h = rateLimitHeaders([
    d({ limit: 10, remaining: 0, allowed: false, resetSeconds: 5, retryAfterSeconds: 5, windowSeconds: 10 }),
    d({ limit: 100, remaining: 0, allowed: false, resetSeconds: 40, retryAfterSeconds: 40 }),
    d({ limit: 5, remaining: 0, allowed: true, resetSeconds: 2, windowSeconds: 2 }),
  ]);
  assert.equal(h['Retry-After'], '40');
  assert.equal(h['RateLimit-Remaining'], '0');
  assert.equal(h['RateLimit-Limit'], '100', 'among equals, the refusal with the longest wait');
  assert.equal(h['RateLimit-Reset'], '40');
  assert.equal(rateLimitHeaders([d({})])['Retry-After'], undefined);
  assert.deepEqual(rateLimitHeaders([]), {});
});

/**
 * A RateLimiter whose Redis is a script stand-in answering `reply(key, nth call)` after
 * `delayMs`: the lease bookkeeping around the script, as pure logic. Replies are the script's
 * `[allowed, remaining, resetMs, retryMs, leased]` per key.
 */
function scripted(reply: (key: string, call: number) => [number, number, number, number, number], delayMs = 0) {
  const limiter = new RateLimiter({ logger: createLogger('gateway', 'silent') });
  let calls = 0;
  const flowgateRateLimit = async (n: number, ...args: (string | number)[]) => {
    const call = ++calls;
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    return (args.slice(0, n) as string[]).map((k) => reply(k, call));
  };
  (limiter as unknown as { redis: unknown }).redis = { status: 'ready', flowgateRateLimit };
  return limiter;
}

test("a lease ends with its window as Redis measured it: a reply that comes back late does not stretch it past the window's end", async () => {
  const p = policy('fixed-window', 100_000, 60, 'p');
  // Redis ran the script 10 ms before the window's end and its answer took 30 ms to arrive.
  const limiter = scripted((_k, call) => (call === 1 ? [1, 50_000, 10, 0, 50] : [0, 0, 60_000, 60_000, 0]), 30);
  const [first] = await limiter.checkAll([{ key: 'k', policy: p }]);
  assert.equal(first!.source, 'redis');
  const next = await limiter.checkAll([{ key: 'k', policy: p }]);
  assert.notEqual(next[0]!.source, 'lease', 'the leased tokens belonged to the window that ended');
});

test('a lease from the next window does not carry the tokens of one leased in the window before', async () => {
  const p = policy('fixed-window', 100_000, 60, 'p');
  const q = policy('fixed-window', 100_000, 60, 'q');
  // Two requests under p and q at once: the first call is answered in window W (5 ms left), the
  // second in W+1; each leases 50 tokens of p. Afterwards nothing more is admitted by Redis.
  const limiter = scripted((_k, call) => (call <= 2 ? (call === 1 ? [1, 50_000, 5, 0, 50] : [1, 99_949, 60_000, 0, 50]) : [0, 0, 60_000, 60_000, 0]));
  await Promise.all([limiter.checkAll([{ key: 'k', policy: p }, { key: 'k', policy: q }]), limiter.checkAll([{ key: 'k', policy: p }, { key: 'k', policy: q }])]);
  await new Promise((r) => setTimeout(r, 20)); // window W is over
  let spent = 0;
  for (let i = 0; i < 200; i++) {
    const [d] = await limiter.checkAll([{ key: 'k', policy: p }]);
    if (d!.source !== 'lease') break;
    spent++;
  }
  assert.ok(spent <= 50, `${spent} leased tokens spent in W+1, which counted 50`);
});

test('a lease topped up within its window lives as long as the new one: tokens Redis counted are not left to expire early', async () => {
  const b = policy('token-bucket', 100_000, 60, 'b');
  // Call 1 leases 5 tokens; they are spent; call 2, 600 ms later and while the first lease lives, leases 50 more.
  const limiter = scripted((_k, call) => (call === 1 ? [1, 90_000, 1000, 0, 5] : call === 2 ? [1, 89_000, 1000, 0, 50] : [0, 0, 1000, 1000, 0]));
  await limiter.checkAll([{ key: 'k', policy: b }]);
  for (let i = 0; i < 5; i++) assert.equal((await limiter.checkAll([{ key: 'k', policy: b }]))[0]!.source, 'lease');
  await new Promise((r) => setTimeout(r, 600));
  assert.equal((await limiter.checkAll([{ key: 'k', policy: b }]))[0]!.source, 'redis', 'the lease is spent: Redis is asked');
  await new Promise((r) => setTimeout(r, 500)); // past the first lease's end, within the second's
  assert.equal((await limiter.checkAll([{ key: 'k', policy: b }]))[0]!.source, 'lease', 'the tokens leased by call 2 are still spendable');
});
