import { createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { LoggerOptions } from 'pino';
import { z } from 'zod';
import { closeConnectionsOnShutdown } from '../../lib/http-shutdown';
import { REDACT_PATHS } from '../../lib/logger';

export type PaymentSandboxOptions = {
  logger?: boolean | LoggerOptions;
  /** Milliseconds since the epoch; injectable so tests can move past key expiry. */
  now?: () => number;
};

type ErrorType = 'authentication_error' | 'invalid_request_error' | 'card_error' | 'idempotency_error' | 'api_error';
type ErrorExtra = { param?: string; decline_code?: string; charge?: string };
export type ErrorBody = { error: { type: ErrorType; code: string; message: string } & ErrorExtra };

export type ApiKey = { id: string; hash: string; last4: string; createdMs: number; expiresAtMs: number | null; revokedAtMs: number | null };

export type Charge = {
  id: string;
  object: 'charge';
  amount: number;
  currency: string;
  source: string;
  status: 'succeeded' | 'failed';
  captured: boolean;
  refunded: boolean;
  amount_refunded: number;
  failure_code: string | null;
  description: string | null;
  metadata: Record<string, string>;
  created: number;
  idempotency_key: string | null;
  api_key_id: string;
  tenant: string | null;
};

export type Refund = {
  id: string;
  object: 'refund';
  charge: string;
  amount: number;
  currency: string;
  status: 'succeeded';
  created: number;
  idempotency_key: string | null;
  api_key_id: string;
  tenant: string | null;
};

export type RequestLogEntry = {
  method: string;
  path: string;
  status: number | null;
  tenant: string | null;
  idempotency_key: string | null;
  api_key_id: string | null;
  replayed: boolean;
  received_at: number;
  answered_at: number | null;
};

const faultsSchema = z.strictObject({
  tenant: z.string().min(1).optional(),
  latency_ms: z.number().int().min(0).max(120_000).default(0),
  /** A slow provider: a charge or refund is made this long after its request arrived (the client may have given up by then). */
  commit_delay_ms: z.number().int().min(0).max(120_000).default(0),
  error_rate: z.number().min(0).max(1).default(0),
  error_status: z.union([z.literal(500), z.literal(502), z.literal(503)]).default(503),
  fail_next: z.number().int().min(0).default(0),
  decline_rate: z.number().min(0).max(1).default(0),
  fail_after_commit_next: z.number().int().min(0).default(0),
  /** The next N requests are refused 401 as if the API key had been revoked (other tenants' are not). */
  reject_key_next: z.number().int().min(0).default(0),
});
export type Faults = Omit<z.output<typeof faultsSchema>, 'tenant'>;

type Answer = { status: number; body: unknown };
type IdempotencyRecord = { fingerprint: string; answer: Answer; storedAtMs: number };

export type PaymentSandboxState = {
  keys: Map<string, ApiKey>;
  keysByHash: Map<string, ApiKey>;
  /** Insertion order is creation order. */
  charges: Map<string, Charge>;
  refunds: Map<string, Refund>;
  /** By `<endpoint> <Idempotency-Key>`. */
  idempotency: Map<string, IdempotencyRecord>;
  faults: { global: Faults | null; tenants: Map<string, Faults> };
  /** Oldest first, at most REQUEST_LOG_SIZE. */
  requests: RequestLogEntry[];
};

/** Per /v1 request: what the hooks learnt before the handler runs. */
type RequestContext = { tenant: string | null; faults: Faults | null; idempotencyKey: string | null; entry: RequestLogEntry; apiKey: ApiKey | null };

const REQUEST_LOG_SIZE = 1000;
/** Stripe keeps idempotency keys for 24 hours. */
const IDEMPOTENCY_TTL_MS = 24 * 3600_000;
const MAX_AMOUNT = 99_999_999;

// A Map, not an object literal: a source named "constructor" must not match anything.
const DECLINING_SOURCES = new Map([
  ['pm_card_declined', { decline_code: 'generic_decline', message: 'Your card was declined.' }],
  ['pm_card_insufficient_funds', { decline_code: 'insufficient_funds', message: 'Your card has insufficient funds.' }],
]);

class SandboxError extends Error {
  constructor(
    readonly status: number,
    readonly type: ErrorType,
    readonly code: string,
    message: string,
    readonly extra: ErrorExtra = {},
  ) {
    super(message);
  }
}

function errorBody(type: ErrorType, code: string, message: string, extra: ErrorExtra = {}): ErrorBody {
  return { error: { type, code, message, ...extra } };
}

const newId = (prefix: string) => `${prefix}_${randomBytes(12).toString('hex')}`;
const hashSecret = (secret: string) => createHash('sha256').update(secret).digest('hex');

/** JSON with object keys sorted, so equal parameters compare equal whatever their order. */
function canonical(value: unknown): string {
  return JSON.stringify(value ?? {}, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v,
  );
}

function parse<S extends z.ZodType>(schema: S, input: unknown): z.output<S> {
  const result = schema.safeParse(input ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  if (!issue) throw new SandboxError(400, 'invalid_request_error', 'parameter_invalid', 'invalid request');
  if (issue.code === 'unrecognized_keys') {
    const param = [...issue.path.map(String), issue.keys[0] ?? ''].join('.');
    throw new SandboxError(400, 'invalid_request_error', 'parameter_unknown', `Received unknown parameter: ${param}`, { param });
  }
  if (issue.path.length === 0) throw new SandboxError(400, 'invalid_request_error', 'parameter_invalid', 'The parameters must be a JSON object.');
  const param = issue.path.map(String).join('.');
  let value: unknown = input;
  for (const part of issue.path) value = value !== null && typeof value === 'object' ? (value as Record<PropertyKey, unknown>)[part] : undefined;
  const missing = value === undefined;
  throw new SandboxError(400, 'invalid_request_error', missing ? 'parameter_missing' : 'parameter_invalid',
    missing ? `Missing required param: ${param}.` : `Invalid ${param}: ${issue.message}`, { param });
}

function header(req: FastifyRequest, name: string): string | null {
  const value = req.headers[name];
  return typeof value === 'string' && value !== '' ? value : null;
}

function queryParams(req: FastifyRequest): Map<string, string> {
  const params = new Map<string, string>();
  for (const [k, v] of Object.entries((req.query ?? {}) as Record<string, unknown>)) {
    if (typeof v !== 'string') throw new SandboxError(400, 'invalid_request_error', 'parameter_invalid', `Query parameter ${k} given more than once.`, { param: k });
    params.set(k, v);
  }
  return params;
}

const chargeParams = z.strictObject({
  amount: z.number().int().positive().max(MAX_AMOUNT),
  currency: z.string().regex(/^[A-Za-z]{3}$/, 'expected a 3-letter ISO currency code').transform((c) => c.toLowerCase()),
  source: z.string().min(1),
  description: z.string().max(1000).nullable().optional(),
  metadata: z.record(z.string(), z.string()).optional(),
});
const refundParams = z.strictObject({ charge: z.string().min(1), amount: z.number().int().positive().optional() });
const rollParams = z.strictObject({ expires_in_seconds: z.number().int().min(0).default(0) });
const chargeListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(10),
  idempotency_key: z.string().optional(),
});
const refundListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(100).default(10),
  charge: z.string().optional(),
});

function loggerOption(logger: PaymentSandboxOptions['logger']): false | LoggerOptions {
  if (!logger) return false;
  const given = logger === true ? {} : logger;
  const paths = Array.isArray(given.redact) ? given.redact : (given.redact?.paths ?? []);
  // Secrets are redacted whatever the caller passed.
  return { ...given, redact: { paths: [...REDACT_PATHS, ...paths], censor: '[redacted]' } };
}

/** The payment sandbox as a Fastify instance: tests drive it with inject, main.ts listens. */
export function buildPaymentSandbox(opts: PaymentSandboxOptions = {}): { app: FastifyInstance; state: PaymentSandboxState } {
  const now = opts.now ?? Date.now;
  const seconds = () => Math.floor(now() / 1000);
  const state: PaymentSandboxState = {
    keys: new Map(),
    keysByHash: new Map(),
    charges: new Map(),
    refunds: new Map(),
    idempotency: new Map(),
    faults: { global: null, tenants: new Map() },
    requests: [],
  };
  const contexts = new WeakMap<FastifyRequest, RequestContext>();

  const app = Fastify({
    logger: loggerOption(opts.logger),
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: () => newId('req'),
  });
  closeConnectionsOnShutdown(app);

  // Clients often POST with a JSON content type and no body (create, roll); that means no parameters.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (body === '') done(null, undefined);
    else json(req, body as string, done);
  });

  app.setErrorHandler((err: FastifyError | SandboxError, req, reply) => {
    if (err instanceof SandboxError) return reply.code(err.status).send(errorBody(err.type, err.code, err.message, err.extra));
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) {
      return reply.code(err.statusCode).send(errorBody('invalid_request_error', 'invalid_request', err.message));
    }
    req.log.error({ err }, 'unhandled error');
    return reply.code(500).send(errorBody('api_error', 'internal_error', 'An internal error occurred.'));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(errorBody('invalid_request_error', 'unrecognized_request_url', `Unrecognized request URL (${req.method}: ${req.url.split('?', 1)[0]}).`)),
  );
  app.addHook('onSend', async (req, reply) => {
    reply.header('Request-Id', req.id);
  });

  function issueKey() {
    const secret = `sk_test_${randomBytes(24).toString('base64url')}`;
    const key: ApiKey = { id: newId('key'), hash: hashSecret(secret), last4: secret.slice(-4), createdMs: now(), expiresAtMs: null, revokedAtMs: null };
    state.keys.set(key.id, key);
    state.keysByHash.set(key.hash, key);
    return { id: key.id, object: 'api_key' as const, secret, created: Math.floor(key.createdMs / 1000), expires_at: null };
  }
  const usable = (key: ApiKey) => key.revokedAtMs === null && (key.expiresAtMs === null || now() < key.expiresAtMs);
  const toSeconds = (ms: number | null) => (ms === null ? null : Math.floor(ms / 1000));
  const keyView = (key: ApiKey) => ({
    id: key.id, object: 'api_key' as const, created: toSeconds(key.createdMs), expires_at: toSeconds(key.expiresAtMs), revoked_at: toSeconds(key.revokedAtMs), last4: key.last4,
  });
  function keyById(id: string): ApiKey {
    const key = state.keys.get(id);
    if (!key) throw new SandboxError(404, 'invalid_request_error', 'resource_missing', `No such API key: '${id}'`, { param: 'id' });
    return key;
  }

  function contextOf(req: FastifyRequest): RequestContext & { apiKey: ApiKey } {
    const ctx = contexts.get(req);
    if (!ctx?.apiKey) throw new Error('v1 handler reached without an authenticated context');
    return ctx as RequestContext & { apiKey: ApiKey };
  }

  /**
   * Runs a charge or refund under the Idempotency-Key rules: an answer is stored only once
   * something was committed, so a retry after a validation error or an injected 5xx runs anew.
   */
  async function mutation(endpoint: string, req: FastifyRequest, reply: FastifyReply, execute: (ctx: RequestContext & { apiKey: ApiKey }) => Answer) {
    const ctx = contextOf(req);
    // commit_delay_ms: a slow provider makes the charge or refund only after it (whether the client waits or not).
    if (ctx.faults && ctx.faults.commit_delay_ms > 0) await sleep(ctx.faults.commit_delay_ms);
    const key = ctx.idempotencyKey;
    const fingerprint = canonical(req.body);
    const slot = `${endpoint} ${key}`;
    if (key !== null) {
      if (key.length > 255) throw new SandboxError(400, 'invalid_request_error', 'parameter_invalid', 'Idempotency-Key is longer than 255 characters.', { param: 'Idempotency-Key' });
      const record = state.idempotency.get(slot);
      if (record && now() - record.storedAtMs < IDEMPOTENCY_TTL_MS) {
        if (record.fingerprint !== fingerprint) {
          throw new SandboxError(400, 'idempotency_error', 'idempotency_key_in_use',
            'Keys for idempotent requests can only be used with the same parameters they were first used with.', { param: 'Idempotency-Key' });
        }
        ctx.entry.replayed = true;
        return reply.code(record.answer.status).header('Idempotent-Replayed', 'true').send(record.answer.body);
      }
    }
    const answer = execute(ctx);
    if (key !== null) state.idempotency.set(slot, { fingerprint, answer: { status: answer.status, body: structuredClone(answer.body) }, storedAtMs: now() });
    if (ctx.faults && ctx.faults.fail_after_commit_next > 0) {
      ctx.faults.fail_after_commit_next -= 1;
      return reply.code(500).send(errorBody('api_error', 'internal_error', 'An internal error occurred.'));
    }
    return reply.code(answer.status).send(answer.body);
  }

  app.register(async (v1) => {
    v1.addHook('onRequest', async (req, reply) => {
      const tenant = header(req, 'x-tenant-id');
      const faults = (tenant !== null ? state.faults.tenants.get(tenant) : undefined) ?? state.faults.global;
      const entry: RequestLogEntry = {
        method: req.method, path: req.url.split('?', 1)[0] ?? req.url, status: null, tenant,
        idempotency_key: header(req, 'idempotency-key'), api_key_id: null, replayed: false, received_at: now(), answered_at: null,
      };
      state.requests.push(entry);
      if (state.requests.length > REQUEST_LOG_SIZE) state.requests.shift();
      const ctx: RequestContext = { tenant, faults, idempotencyKey: entry.idempotency_key, entry, apiKey: null };
      contexts.set(req, ctx);

      // Before authentication: an outage answers before the provider looks at anything.
      if (faults && (faults.fail_next > 0 || (faults.error_rate > 0 && Math.random() < faults.error_rate))) {
        if (faults.fail_next > 0) faults.fail_next -= 1;
        return reply.code(faults.error_status).send(errorBody('api_error', 'service_unavailable', 'The payment provider is temporarily unavailable.'));
      }
      const auth = /^Bearer (\S+)$/i.exec(header(req, 'authorization') ?? '');
      const key = auth?.[1] ? state.keysByHash.get(hashSecret(auth[1])) : undefined;
      const rejected = !!faults && faults.reject_key_next > 0;
      if (faults && rejected) faults.reject_key_next -= 1;
      if (!key || !usable(key) || rejected) {
        const message = auth ? 'Invalid API key provided.' : 'No API key provided; send Authorization: Bearer <secret>.';
        return reply.code(401).header('WWW-Authenticate', 'Bearer realm="payment-sandbox"').send(errorBody('authentication_error', 'invalid_api_key', message));
      }
      ctx.apiKey = key;
      entry.api_key_id = key.id;
    });

    // The answer is held back, never the commit: a client that times out still leaves the charge behind.
    v1.addHook('onSend', async (req, reply, payload) => {
      const ctx = contexts.get(req);
      if (!ctx) return payload;
      if (ctx.faults && ctx.faults.latency_ms > 0) await sleep(ctx.faults.latency_ms);
      ctx.entry.status = reply.statusCode;
      ctx.entry.answered_at = now();
      req.log.info({ entry: ctx.entry }, 'answered');
      return payload;
    });

    v1.get('/account', async (req) => ({ id: 'acct_sandbox', object: 'account', api_key_id: contextOf(req).apiKey.id }));

    v1.post('/api_keys', async () => issueKey());
    v1.get('/api_keys', async () => ({ object: 'list', data: [...state.keys.values()].reverse().map(keyView) }));
    v1.post<{ Params: { id: string } }>('/api_keys/:id/roll', async (req) => {
      const { expires_in_seconds } = parse(rollParams, req.body);
      const old = keyById(req.params.id);
      if (!usable(old)) throw new SandboxError(400, 'invalid_request_error', 'api_key_expired', `API key ${old.id} is already expired or revoked.`, { param: 'id' });
      const created = issueKey();
      const expiresAt = now() + expires_in_seconds * 1000;
      old.expiresAtMs = old.expiresAtMs === null ? expiresAt : Math.min(old.expiresAtMs, expiresAt);
      return created;
    });
    v1.delete<{ Params: { id: string } }>('/api_keys/:id', async (req) => {
      const key = keyById(req.params.id);
      key.revokedAtMs ??= now();
      return { id: key.id, revoked: true };
    });

    v1.post('/charges', async (req, reply) =>
      mutation('POST /v1/charges', req, reply, (ctx) => {
        const params = parse(chargeParams, req.body);
        const decline = DECLINING_SOURCES.get(params.source)
          ?? (ctx.faults && ctx.faults.decline_rate > 0 && Math.random() < ctx.faults.decline_rate ? DECLINING_SOURCES.get('pm_card_declined') : undefined);
        const charge: Charge = {
          id: newId('ch'), object: 'charge', amount: params.amount, currency: params.currency, source: params.source,
          status: decline ? 'failed' : 'succeeded', captured: !decline, refunded: false, amount_refunded: 0,
          failure_code: decline ? 'card_declined' : null, description: params.description ?? null, metadata: params.metadata ?? {},
          created: seconds(), idempotency_key: ctx.idempotencyKey, api_key_id: ctx.apiKey.id, tenant: ctx.tenant,
        };
        state.charges.set(charge.id, charge);
        if (!decline) return { status: 200, body: charge };
        return { status: 402, body: errorBody('card_error', 'card_declined', decline.message, { decline_code: decline.decline_code, charge: charge.id }) };
      }),
    );
    v1.get<{ Params: { id: string } }>('/charges/:id', async (req) => {
      const charge = state.charges.get(req.params.id);
      if (!charge) throw new SandboxError(404, 'invalid_request_error', 'resource_missing', `No such charge: '${req.params.id}'`, { param: 'id' });
      return charge;
    });
    v1.get('/charges', async (req) => {
      const { limit, idempotency_key } = parse(chargeListQuery, req.query);
      const matching = [...state.charges.values()].reverse().filter((c) => idempotency_key === undefined || c.idempotency_key === idempotency_key);
      return { object: 'list', data: matching.slice(0, limit), has_more: matching.length > limit };
    });

    v1.get('/refunds', async (req) => {
      const { limit, charge } = parse(refundListQuery, req.query);
      const matching = [...state.refunds.values()].reverse().filter((r) => charge === undefined || r.charge === charge);
      return { object: 'list', data: matching.slice(0, limit), has_more: matching.length > limit };
    });
    v1.post('/refunds', async (req, reply) =>
      mutation('POST /v1/refunds', req, reply, (ctx) => {
        const params = parse(refundParams, req.body);
        const charge = state.charges.get(params.charge);
        if (!charge) throw new SandboxError(404, 'invalid_request_error', 'resource_missing', `No such charge: '${params.charge}'`, { param: 'charge' });
        const remaining = charge.amount - charge.amount_refunded;
        if (charge.status === 'failed' || remaining === 0) {
          const why = charge.status === 'failed' ? 'failed, so there is nothing to refund' : 'has already been refunded';
          throw new SandboxError(400, 'invalid_request_error', 'charge_already_refunded', `Charge ${charge.id} ${why}.`, { param: 'charge' });
        }
        const amount = params.amount ?? remaining;
        if (amount > remaining) {
          throw new SandboxError(400, 'invalid_request_error', 'amount_too_large', `Refund amount ${amount} is greater than what remains to refund (${remaining}).`, { param: 'amount' });
        }
        const refund: Refund = {
          id: newId('re'), object: 'refund', charge: charge.id, amount, currency: charge.currency, status: 'succeeded',
          created: seconds(), idempotency_key: ctx.idempotencyKey, api_key_id: ctx.apiKey.id, tenant: ctx.tenant,
        };
        state.refunds.set(refund.id, refund);
        charge.amount_refunded += amount;
        charge.refunded = charge.amount_refunded === charge.amount;
        return { status: 200, body: refund };
      }),
    );
  }, { prefix: '/v1' });

  app.register(async (sandbox) => {
    const faultsView = (tenant: string | null) => ({ tenant, faults: (tenant === null ? state.faults.global : state.faults.tenants.get(tenant)) ?? null });
    sandbox.put('/faults', async (req) => {
      const { tenant, ...faults } = parse(faultsSchema, req.body);
      if (tenant === undefined) state.faults.global = faults;
      else state.faults.tenants.set(tenant, faults);
      return faultsView(tenant ?? null);
    });
    sandbox.get('/faults', async (req) => faultsView(queryParams(req).get('tenant') ?? null));
    sandbox.delete('/faults', async (req) => {
      const tenant = queryParams(req).get('tenant');
      if (tenant === undefined) {
        state.faults.global = null;
        state.faults.tenants.clear();
      } else {
        state.faults.tenants.delete(tenant);
      }
      return { ok: true };
    });

    sandbox.post('/api-keys', async () => issueKey());

    sandbox.get('/charges', async (req) => {
      const q = queryParams(req);
      const tenant = q.get('tenant');
      const metadata = [...q].filter(([k]) => k.startsWith('metadata.')).map(([k, v]) => [k.slice('metadata.'.length), v] as const);
      const data = [...state.charges.values()].reverse()
        .filter((c) => (tenant === undefined || c.tenant === tenant) && metadata.every(([k, v]) => Object.hasOwn(c.metadata, k) && c.metadata[k] === v));
      return { data };
    });
    sandbox.get('/refunds', async (req) => {
      const q = queryParams(req);
      const tenant = q.get('tenant');
      const charge = q.get('charge');
      const data = [...state.refunds.values()].reverse()
        .filter((r) => (tenant === undefined || r.tenant === tenant) && (charge === undefined || r.charge === charge));
      return { data };
    });
    sandbox.get('/requests', async (req) => {
      const q = queryParams(req);
      const tenant = q.get('tenant');
      const path = q.get('path');
      const data = [...state.requests].reverse().filter((r) => (tenant === undefined || r.tenant === tenant) && (path === undefined || r.path === path));
      return { data };
    });

    // What the provider forgets after IDEMPOTENCY_TTL_MS (24 h), at once: the idempotency keys
    // starting with `prefix` (a slot is `METHOD /path key`).
    sandbox.delete('/idempotency', async (req) => {
      const prefix = queryParams(req).get('prefix') ?? '';
      let forgotten = 0;
      for (const slot of [...state.idempotency.keys()]) {
        if (slot.split(' ').slice(2).join(' ').startsWith(prefix)) {
          state.idempotency.delete(slot);
          forgotten += 1;
        }
      }
      return { forgotten };
    });
    sandbox.post('/reset', async () => {
      state.charges.clear();
      state.refunds.clear();
      state.idempotency.clear();
      state.faults.global = null;
      state.faults.tenants.clear();
      state.requests.length = 0;
      return { ok: true };
    });
    sandbox.get('/health', async () => ({ ok: true }));
  }, { prefix: '/_sandbox' });

  return { app, state };
}
