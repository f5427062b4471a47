import { Redis } from 'ioredis';
import type { Registry } from 'prom-client';
import type { Logger } from '../lib/logger';
import { prom } from '../lib/metrics';

/**
 * Rate limits shared by every gateway instance through Redis: a Lua script decides, timed by
 * the Redis server's clock so instances with skewed clocks agree. When Redis is unreachable
 * each instance falls back to an in-process limiter with the same algorithms, so the
 * effective limit becomes N per instance until Redis is back.
 *
 * Leases keep Redis off most requests without giving up exactness (Kong's sync_rate and
 * Envoy's global quota trade exactness for it). A request that goes to Redis may take some
 * of the key's spare quota with it, counted in Redis at once: later requests of this instance
 * spend it locally, with no round trip, until it is used up or a second has passed. A lease
 * is sized to about 100 ms of the key's recent traffic here, and only when the quota has
 * plenty left: at most 1/16 of what is left, and none below 64. So the shared count never
 * exceeds the limit (every token was counted in Redis before it is spent), and near the
 * limit each request is decided in Redis again, so two instances still hold it exactly. What
 * a lease costs: tokens left in one that expires unspent are lost to the window (at most a
 * sixteenth of what was left when it was taken), and RateLimit-Remaining counts what was
 * left in Redis when the lease was taken, not what other instances spent since.
 *
 * Keys of one request are read and written by one script, so they must live on one
 * Redis node (standalone Redis, or one hash slot in a cluster).
 */

export type RateAlgorithm = 'fixed-window' | 'sliding-window' | 'token-bucket';
export type LimitPolicy = { name: string; limit: number; windowSeconds: number; algorithm: RateAlgorithm };
export type LimitDecision = {
  allowed: boolean;
  policy: string;
  limit: number;
  remaining: number;
  /** Seconds until the quota is back (integer >= 0), for RateLimit-Reset. */
  resetSeconds: number;
  /** When refused: seconds (integer >= 1) until a request would next be allowed. */
  retryAfterSeconds?: number;
  /** redis: decided in Redis; lease: from quota this instance leased from Redis; local: the fallback. */
  source: 'redis' | 'lease' | 'local';
  /** The policy's window, for RateLimit-Policy. */
  windowSeconds?: number;
};
export type LimitCheck = { key: string; policy: LimitPolicy };

const ALG_CODE: Record<RateAlgorithm, string> = { 'fixed-window': 'f', 'sliding-window': 's', 'token-bucket': 't' };
/** How long requests are decided locally after a Redis call failed, before one asks Redis again. */
const REDIS_COOL_DOWN_MS = 2000;
const COMMAND_TIMEOUT_MS = 50;
/** Leases: sized to this much of a key's recent traffic, never more than LEASE_MAX tokens, valid at most LEASE_TTL_MS. */
const LEASE_SPAN_MS = 100;
const LEASE_MAX = 1000;
const LEASE_TTL_MS = 1000;
/** Passed to the script: a lease only from at least LEASE_MIN_SPARE spare tokens, and at most 1/LEASE_SHARE of them. */
const LEASE_MIN_SPARE = 64;
const LEASE_SHARE = 16;
const LOCAL_MAX_KEYS = 100_000;

const windowMs = (p: LimitPolicy) => Math.round(p.windowSeconds * 1000);
const baseKey = (prefix: string, { key, policy }: LimitCheck) => `${prefix}${ALG_CODE[policy.algorithm]}:${windowMs(policy)}:${policy.name}:${key}`;

function validate(p: LimitPolicy): void {
  if (!Number.isInteger(p.limit) || p.limit < 1) throw new RangeError(`rate limit policy ${p.name}: limit must be an integer >= 1, got ${p.limit}`);
  if (!(windowMs(p) >= 1)) throw new RangeError(`rate limit policy ${p.name}: windowSeconds must be > 0, got ${p.windowSeconds}`);
  if (!(p.algorithm in ALG_CODE)) throw new RangeError(`rate limit policy ${p.name}: unknown algorithm ${String(p.algorithm)}`);
}

function decision(policy: LimitPolicy, source: LimitDecision['source'], allowed: boolean, remaining: number, resetMs: number, retryMs: number): LimitDecision {
  const d: LimitDecision = {
    allowed,
    policy: policy.name,
    limit: policy.limit,
    remaining: Math.max(0, Math.floor(remaining)),
    resetSeconds: Math.max(0, Math.ceil(resetMs / 1000)),
    source,
    windowSeconds: policy.windowSeconds,
  };
  if (!allowed) d.retryAfterSeconds = Math.max(1, Math.ceil(retryMs / 1000));
  return d;
}

/*
 * The algorithms exist twice, in TypeScript (local fallback) and in Lua (Redis); the two
 * are written to compute the same numbers in the same order. All times are in ms.
 *
 * Sliding window: the Cloudflare/Kong two-window approximation. Windows are aligned to
 * the epoch; with `cur` requests counted in the current window, `prev` in the previous
 * one and a fraction `f` of the current window elapsed, the requests of the last full
 * window are estimated as cur + floor(prev × (1 − f)), i.e. the previous window's requests
 * are assumed evenly spread. O(1) state (two counters), and flooring the weighted part
 * keeps it from refusing below the limit.
 */

type State =
  | { kind: 'f'; win: number; count: number }
  | { kind: 's'; win: number; cur: number; prev: number }
  | { kind: 't'; tokens: number; ts: number };

type Evaluation = {
  allowed: boolean;
  /** Capacity left before this request (may be fractional for the token bucket). */
  left: number;
  resetMs: (consumed: boolean) => number;
  retryMs: number;
  next: State;
};

function evaluate(policy: LimitPolicy, state: State | undefined, now: number): Evaluation {
  const w = windowMs(policy);
  const limit = policy.limit;
  switch (policy.algorithm) {
    case 'fixed-window': {
      const win = Math.floor(now / w);
      const count = state?.kind === 'f' && state.win === win ? state.count : 0;
      const toEnd = (win + 1) * w - now;
      return { allowed: count < limit, left: limit - count, resetMs: () => toEnd, retryMs: toEnd, next: { kind: 'f', win, count: count + 1 } };
    }
    case 'sliding-window': {
      const win = Math.floor(now / w);
      const start = win * w;
      let cur = 0;
      let prev = 0;
      if (state?.kind === 's' && state.win === win) ({ cur, prev } = state);
      else if (state?.kind === 's' && state.win === win - 1) prev = state.cur;
      const left = limit - cur - Math.floor(prev * (w - (now - start)) / w);
      const allowed = left >= 1;
      // Refused: the first ms at which the weighted previous window has decayed enough,
      // in this window or (when the current one alone is full) in the next.
      const retryMs = allowed ? 0
        : cur >= limit ? start + w + Math.floor(w * (cur - limit) / cur) + 1 - now
          : start + Math.floor(w * (prev - (limit - cur)) / prev) + 1 - now;
      const toEnd = start + w - now;
      return { allowed, left, resetMs: () => (allowed ? toEnd : retryMs), retryMs, next: { kind: 's', win, cur: cur + 1, prev } };
    }
    case 'token-bucket': {
      let tokens = limit;
      let ts = now;
      if (state?.kind === 't') ({ tokens, ts } = state);
      tokens = Math.min(limit, tokens + Math.max(0, now - ts) * limit / w);
      const full = (t: number) => Math.ceil((limit - t) * w / limit);
      return {
        allowed: tokens >= 1,
        left: tokens,
        resetMs: (consumed) => full(consumed ? tokens - 1 : tokens),
        retryMs: Math.ceil((1 - tokens) * w / limit),
        next: { kind: 't', tokens: tokens - 1, ts: now },
      };
    }
  }
}

/** In-process limiter, the fallback when Redis is unreachable; LRU-bounded. */
export class LocalLimiter {
  private readonly entries = new Map<string, State>();
  private readonly now: () => number;
  private readonly maxKeys: number;

  constructor(opts: { now?: () => number; maxKeys?: number } = {}) {
    this.now = opts.now ?? Date.now;
    this.maxKeys = opts.maxKeys ?? LOCAL_MAX_KEYS;
  }

  get size(): number { return this.entries.size; }

  check(key: string, policy: LimitPolicy): LimitDecision {
    return this.checkAll([{ key, policy }])[0]!;
  }

  /** All or nothing, like the Redis script: only a request every policy allows is counted. */
  checkAll(checks: LimitCheck[]): LimitDecision[] {
    for (const c of checks) validate(c.policy);
    const now = this.now();
    const evals = checks.map((c) => {
      const k = baseKey('', c);
      return { k, policy: c.policy, ev: evaluate(c.policy, this.entries.get(k), now) };
    });
    const consume = evals.every((e) => e.ev.allowed);
    if (consume) for (const e of evals) this.store(e.k, e.ev.next);
    return evals.map(({ policy, ev }) =>
      decision(policy, 'local', ev.allowed, consume ? ev.left - 1 : ev.left, ev.resetMs(consume), ev.retryMs));
  }

  private store(k: string, s: State): void {
    // Map keeps insertion order: re-inserting makes the key the most recent.
    this.entries.delete(k);
    this.entries.set(k, s);
    if (this.entries.size > this.maxKeys) this.entries.delete(this.entries.keys().next().value!);
  }
}

/**
 * KEYS: one base key per check; ARGV: the lease bounds (minimum spare, share), then per check
 * its algorithm code, limit, window ms and the extra tokens wanted for a lease. Returns per
 * check {allowed 0/1, remaining, reset ms, retry ms, extra tokens granted}. Phase one reads
 * every policy; only if all allow does phase two count the request, and each granted lease,
 * against each of them.
 */
const CHECK_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local minSpare, share = tonumber(ARGV[1]), tonumber(ARGV[2])
local checks = {}
local all = true
for i = 1, n do
  local a = 4 * i - 1
  local c = { base = KEYS[i], alg = ARGV[a], limit = tonumber(ARGV[a + 1]), w = tonumber(ARGV[a + 2]), want = tonumber(ARGV[a + 3]) }
  local limit, w = c.limit, c.w
  if c.alg == 'f' then
    local win = math.floor(now / w)
    c.key = c.base .. ':' .. win
    c.left = limit - (tonumber(redis.call('GET', c.key)) or 0)
    c.allowed = c.left >= 1
    c.reset = (win + 1) * w - now
    c.retry = c.reset
    c.ttl = c.reset + 1000
  elseif c.alg == 's' then
    local win = math.floor(now / w)
    local start = win * w
    c.key = c.base .. ':' .. win
    local v = redis.call('MGET', c.key, c.base .. ':' .. (win - 1))
    local cur, prev = tonumber(v[1]) or 0, tonumber(v[2]) or 0
    c.left = limit - cur - math.floor(prev * (w - (now - start)) / w)
    c.allowed = c.left >= 1
    if c.allowed then
      c.retry = 0
      c.reset = start + w - now
    else
      if cur >= limit then
        c.retry = start + w + math.floor(w * (cur - limit) / cur) + 1 - now
      else
        c.retry = start + math.floor(w * (prev - (limit - cur)) / prev) + 1 - now
      end
      c.reset = c.retry
    end
    c.ttl = start + 2 * w - now + 1000
  else
    local h = redis.call('HMGET', c.base, 'tokens', 'ts')
    local tokens = tonumber(h[1]) or limit
    local ts = tonumber(h[2]) or now
    local el = now - ts
    if el < 0 then el = 0 end
    tokens = math.min(limit, tokens + el * limit / w)
    c.left = tokens
    c.allowed = tokens >= 1
    c.retry = math.ceil((1 - tokens) * w / limit)
  end
  if not c.allowed then all = false end
  checks[i] = c
end
local out = {}
for i = 1, n do
  local c = checks[i]
  local left = c.left
  local extra = 0
  if all then
    left = left - 1
    if c.want > 0 and left >= minSpare then extra = math.min(c.want, math.floor(left / share)) end
    left = left - extra
    if c.alg == 't' then
      redis.call('HSET', c.base, 'tokens', string.format('%.17g', left), 'ts', string.format('%.17g', now))
      redis.call('PEXPIRE', c.base, math.ceil((c.limit - left) * c.w / c.limit) + 1000)
    elseif redis.call('INCRBY', c.key, 1 + extra) == 1 + extra then
      redis.call('PEXPIRE', c.key, c.ttl)
    end
  end
  if c.alg == 't' then c.reset = math.ceil((c.limit - left) * c.w / c.limit) end
  out[i] = { c.allowed and 1 or 0, math.floor(left), c.reset, c.allowed and 0 or c.retry, extra }
end
return out
`;

type ScriptReply = [number, number, number, number, number][];

/** Quota this instance took from Redis for one key and policy, spent locally. */
type Lease = {
  tokens: number;
  /** performance.now() after which the lease is void. */
  until: number;
  /** What Redis had left after granting it, and when the key's quota resets (performance.now() ms). */
  remaining: number;
  resetAt: number;
};
/** A key's traffic since its last trip to Redis, to size its next lease. */
type KeyRate = { hits: number; since: number; lease?: Lease };
type WithScript = Redis & { flowgateRateLimit(numKeys: number, ...args: (string | number)[]): Promise<ScriptReply> };

type Metrics = {
  duration: prom.Histogram<'source'>;
  decisions: prom.Counter<'outcome' | 'source'>;
  up: prom.Gauge;
};

/** Shares a metric between limiters on one registry (prom-client refuses duplicates). */
function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export class RateLimiter {
  private readonly redis?: WithScript;
  private readonly local: LocalLimiter;
  private readonly logger: Logger;
  private readonly prefix: string;
  private readonly metrics?: Metrics;
  private state: 'unknown' | 'up' | 'down' = 'unknown';
  private closed = false;
  /** Traffic and lease per key and policy (LRU-bounded like the local limiter). */
  private readonly rates = new Map<string, KeyRate>();
  /** The Redis call fetching a key's next lease, for the requests that find it spent meanwhile. */
  private readonly inFlight = new Map<string, Promise<ScriptReply>>();

  constructor(opts: {
    redisUrl?: string;
    logger: Logger;
    registry?: Registry;
    keyPrefix?: string;
    /** Longest wait for Redis before deciding locally. */
    commandTimeoutMs?: number;
    local?: LocalLimiter;
  }) {
    this.logger = opts.logger;
    this.prefix = opts.keyPrefix ?? 'flowgate:rl:';
    this.local = opts.local ?? new LocalLimiter();
    const registry = opts.registry;
    if (registry) {
      this.metrics = {
        duration: metric(registry, 'rate_limit_check_duration_seconds', () => new prom.Histogram({
          name: 'rate_limit_check_duration_seconds', help: 'Time to decide one request, by where it was decided', labelNames: ['source'],
          buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1], registers: [registry],
        })),
        decisions: metric(registry, 'rate_limit_decisions_total', () => new prom.Counter({
          name: 'rate_limit_decisions_total', help: 'Requests checked (all their policies together), by outcome and where decided', labelNames: ['outcome', 'source'], registers: [registry],
        })),
        up: metric(registry, 'rate_limit_redis_up', () => new prom.Gauge({
          name: 'rate_limit_redis_up', help: '1 while rate limits are shared through Redis', registers: [registry],
        })),
      };
      this.metrics.up.set(0);
    }
    if (!opts.redisUrl) return;
    const redis = new Redis(opts.redisUrl, {
      enableAutoPipelining: true,
      // Fail fast, never queue: a request waiting on a dead Redis is worse than a local decision.
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      commandTimeout: opts.commandTimeoutMs ?? COMMAND_TIMEOUT_MS,
      connectTimeout: 1000,
      retryStrategy: (times) => Math.min(times * 100, 1000),
    }) as WithScript;
    redis.defineCommand('flowgateRateLimit', { lua: CHECK_SCRIPT });
    redis.on('ready', () => this.markUp());
    redis.on('error', (err: Error) => this.markDown(err));
    redis.on('close', () => this.markDown(new Error('connection closed')));
    this.redis = redis;
  }

  get redisHealthy(): boolean { return this.state === 'up'; }

  /** Counts one request against `key` (e.g. `ws:acme:route:orders:consumer:c1`) under `policy`. */
  async check(key: string, policy: LimitPolicy): Promise<LimitDecision> {
    return (await this.checkAll([{ key, policy }]))[0]!;
  }

  /**
   * Checks several policies for one request, refused if any refuses. A refused request is
   * counted against none of them; each decision still says whether its own policy allowed.
   * Synchronous when leases decide (no promise to wait for on the hot path).
   */
  checkAll(checks: LimitCheck[]): LimitDecision[] | Promise<LimitDecision[]> {
    if (checks.length === 0) return [];
    for (const c of checks) validate(c.policy);
    const started = performance.now();
    const leased = this.fromLeases(checks, started);
    if (leased) return this.done(leased, started);
    return this.decideShared(checks, started);
  }

  private async decideShared(checks: LimitCheck[], started: number): Promise<LimitDecision[]> {
    let decisions: LimitDecision[] | undefined;
    if (this.redis?.status === 'ready' && this.mayAskRedis()) {
      // Requests that find the lease spent while another is fetching the next one wait for it.
      const flight = checks.length === 1 ? this.inFlight.get(this.leaseKey(checks[0]!)) : undefined;
      if (flight) {
        await flight.catch(() => undefined);
        const leased = this.fromLeases(checks, performance.now(), false);
        if (leased) return this.done(leased, started);
      }
      try {
        decisions = await this.checkRedis(this.redis, checks);
        this.failing = false;
        this.markUp();
        // Refused while this instance holds leased tokens (a lease that came back with a request
        // sent alongside this one): they are counted in Redis already and a refusal counted
        // nothing, so spend them rather than refuse and leave them unspent.
        if (decisions.some((d) => !d.allowed)) decisions = this.fromLeases(checks, performance.now(), false) ?? decisions;
      } catch (err) {
        this.markDown(err as Error);
        this.failed(err as Error);
      } finally {
        this.probing = false;
      }
    }
    decisions ??= this.local.checkAll(checks);
    return this.done(decisions, started);
  }

  private done(decisions: LimitDecision[], started: number): LimitDecision[] {
    if (this.metrics) {
      const source = decisions[0]!.source;
      this.metrics.duration.observe({ source }, (performance.now() - started) / 1000);
      this.metrics.decisions.inc({ outcome: decisions.every((d) => d.allowed) ? 'allowed' : 'refused', source });
    }
    return decisions;
  }

  private leaseKey(c: LimitCheck): string {
    return `${c.key}\n${c.policy.name}\n${c.policy.algorithm}\n${c.policy.limit}\n${c.policy.windowSeconds}`;
  }

  private rateOf(k: string, now: number): KeyRate {
    let r = this.rates.get(k);
    if (!r) {
      if (this.rates.size >= LOCAL_MAX_KEYS) this.rates.delete(this.rates.keys().next().value!);
      r = { hits: 0, since: now };
      this.rates.set(k, r);
    }
    return r;
  }

  /** Every check spends one token of a live lease, or none does and undefined says Redis must decide. */
  private fromLeases(checks: LimitCheck[], now: number, count = true): LimitDecision[] | undefined {
    const rates: KeyRate[] = [];
    for (const c of checks) {
      const r = this.rateOf(this.leaseKey(c), now);
      if (count) r.hits += 1;
      rates.push(r);
    }
    for (const r of rates) if (!r.lease || r.lease.tokens < 1 || r.lease.until <= now) return undefined;
    return checks.map((c, i) => {
      const lease = rates[i]!.lease!;
      lease.tokens -= 1;
      return decision(c.policy, 'lease', true, lease.remaining + lease.tokens, Math.max(0, lease.resetAt - now), 0);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    if (!this.redis) return;
    try {
      await this.redis.quit();
    } catch {
      this.redis.disconnect();
    }
  }

  private async checkRedis(redis: WithScript, all: LimitCheck[]): Promise<LimitDecision[]> {
    const now = performance.now();
    const allKeys = all.map((c) => this.leaseKey(c));
    // A policy whose lease still has tokens is not asked again: Redis counted those tokens when it
    // leased them. Redis decides the others; if they allow, the leased ones spend a token each.
    // A token of each live lease is reserved now, before the call: a request sent alongside must not
    // count on the same token. Given back if the request is not admitted. Held here: the map may
    // drop an entry while Redis answers. A lease live when the request came decides for its
    // policy, even if it ends during the call (as a lease decides on arrival).
    const held = allKeys.map((k) => {
      const l = this.rates.get(k)?.lease;
      return l !== undefined && l.tokens >= 1 && l.until > now ? l : undefined;
    });
    // Reached only after fromLeases found a policy without a live lease: at least one is asked.
    for (const l of held) if (l) l.tokens -= 1;
    const giveBack = () => { for (const l of held) if (l) l.tokens += 1; };
    const ask = all.map((_, i) => i).filter((i) => held[i] === undefined);
    const checks = ask.map((i) => all[i]!);
    const keys = checks.map((c) => baseKey(this.prefix, c));
    const leaseKeys = ask.map((i) => allKeys[i]!);
    // A lease for each key asked (none has a live one), sized to its recent traffic.
    const wants = leaseKeys.map((k) => {
      const r = this.rateOf(k, now);
      const want = Math.min(LEASE_MAX, Math.floor((r.hits * LEASE_SPAN_MS) / Math.max(LEASE_SPAN_MS, now - r.since)));
      r.hits = 0;
      r.since = now;
      return want;
    });
    const args = checks.flatMap(({ policy }, i) => [ALG_CODE[policy.algorithm], policy.limit, windowMs(policy), wants[i]!]);
    const call = redis.flowgateRateLimit(keys.length, ...keys, LEASE_MIN_SPARE, LEASE_SHARE, ...args);
    if (checks.length === 1 && wants[0]! > 0) {
      const k = leaseKeys[0]!;
      this.inFlight.set(k, call);
      void call.catch(() => undefined).finally(() => { if (this.inFlight.get(k) === call) this.inFlight.delete(k); });
    }
    let reply: ScriptReply;
    try {
      reply = await call;
    } catch (err) {
      giveBack();
      throw err;
    }
    const at = performance.now();
    const asked = new Map<number, LimitDecision>();
    checks.forEach(({ policy }, j) => {
      const [allowed, remaining, resetMs, retryMs, extra] = reply[j]!;
      if (extra > 0) {
        const r = this.rateOf(leaseKeys[j]!, at);
        // A bucket's reset is when it is full again, no bound on spending what was taken from it.
        const ttl = policy.algorithm === 'token-bucket' ? LEASE_TTL_MS : Math.min(LEASE_TTL_MS, resetMs);
        // Timed from the call's send, not its answer: Redis measured resetMs after the send, so a
        // lease never outlives the window that counted its tokens, however late the answer.
        const fresh = { until: now + ttl, remaining, resetAt: now + resetMs };
        // Tokens of a lease still live (one that came back with a request sent alongside) are
        // counted in Redis already: kept, not replaced; in the same object, which a request
        // waiting on Redis may hold and spend from. But only within one window: tokens a window
        // counted are not spent in the next (its lease starts afresh; the old tokens are lost to
        // their window, as any unspent lease's are).
        const sameWindow = policy.algorithm === 'token-bucket' || (r.lease !== undefined && Math.abs(r.lease.resetAt - fresh.resetAt) < windowMs(policy) / 2);
        if (r.lease && r.lease.until > at && sameWindow) Object.assign(r.lease, fresh, { tokens: r.lease.tokens + extra });
        else r.lease = { ...fresh, tokens: extra };
      }
      asked.set(ask[j]!, decision(policy, 'redis', allowed === 1, remaining + extra, resetMs, retryMs));
    });
    const admitted = [...asked.values()].every((d) => d.allowed);
    // Not asked: a token of its live lease was reserved; a refused request counts against none.
    if (!admitted) giveBack();
    return all.map((c, i) => {
      const d = asked.get(i);
      if (d) return d;
      const lease = held[i]!;
      return decision(c.policy, 'lease', true, lease.remaining + lease.tokens, Math.max(0, lease.resetAt - at), 0);
    });
  }

  /**
   * Redis that answers nothing (paused, a stuck host, packets dropped) keeps its connection
   * `ready`: after a call timed out, requests are decided locally for REDIS_COOL_DOWN_MS, then one
   * request at a time asks Redis again until one is answered, instead of each waiting out the
   * timeout.
   */
  private mayAskRedis(): boolean {
    if (!this.failing) return true;
    if (Date.now() < this.coolUntil || this.probing) return false;
    this.probing = true;
    return true;
  }

  /** The last call to Redis failed, and none has been answered since. */
  private failing = false;
  private coolUntil = 0;
  private probing = false;

  /**
   * A call failed: requests are decided locally for a while. One that timed out is still queued
   * in Redis, and would count its request once Redis resumes although it was decided locally: the
   * connection is dropped (and made again), which drops what it had sent and not yet run.
   */
  private failed(err: Error): void {
    this.failing = true;
    this.coolUntil = Date.now() + REDIS_COOL_DOWN_MS;
    if (/timed? ?out/i.test(err.message) && this.redis && !this.closed) this.redis.disconnect(true);
  }

  private markUp(): void {
    if (this.closed || this.state === 'up') return;
    if (this.state === 'down') this.logger.info('rate limits: redis is back, limits are shared again');
    this.state = 'up';
    this.metrics?.up.set(1);
  }

  private markDown(err: Error): void {
    if (this.closed || this.state === 'down') return;
    this.logger.warn({ err: err.message }, 'rate limits: redis unavailable, each gateway instance enforces them locally until it is back');
    this.state = 'down';
    this.metrics?.up.set(0);
  }
}

/** The response headers for the most restrictive decision (IETF draft RateLimit headers). */
export function rateLimitHeaders(decisions: LimitDecision[]): Record<string, string> {
  if (decisions.length === 0) return {};
  // Fewest remaining; among equals a refusal, then the longest wait.
  const tightest = [...decisions].sort((a, b) =>
    a.remaining - b.remaining || Number(a.allowed) - Number(b.allowed) || b.resetSeconds - a.resetSeconds)[0]!;
  const headers: Record<string, string> = {
    'RateLimit-Limit': String(tightest.limit),
    'RateLimit-Remaining': String(tightest.remaining),
    'RateLimit-Reset': String(tightest.resetSeconds),
    'RateLimit-Policy': decisions.map((d) => (d.windowSeconds === undefined ? String(d.limit) : `${d.limit};w=${d.windowSeconds}`)).join(', '),
  };
  const refused = decisions.filter((d) => !d.allowed);
  if (refused.length) headers['Retry-After'] = String(Math.max(...refused.map((d) => d.retryAfterSeconds ?? 1)));
  return headers;
}
