import { createHash } from 'node:crypto';
import type { Span } from '@opentelemetry/api';
import type { FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ApiError } from '../lib/errors';
import { natsConnected, subjects } from '../lib/nats';
import { traceHeaders } from '../lib/tracing';
import { callbackRefusal } from '../lib/webhook-targets';
import type { Caller, TriggerMessage } from '../lib/trigger-message';
import type { WorkflowTypeDef } from '../lib/workflow-registry';
import type { GatewayContext } from './app';
import type { Principal } from './auth';

const idempotencyKey = z.string().min(1).max(255).regex(/^[\x21-\x7e]+$/);
const callbackUrl = z.url({ protocol: /^https?$/ }).max(2000);

/** Fingerprint of what a request asks for; a reused Idempotency-Key must come with the same one. */
const fingerprint = (type: string, input: unknown) => createHash('sha256').update(`${type}\n${JSON.stringify(input)}`).digest('hex');

/** The request's Idempotency-Key header, checked (400 naming the header when malformed). */
export function idempotencyKeyOf(req: FastifyRequest): string | undefined {
  const header = req.headers['idempotency-key'];
  if (header === undefined) return undefined;
  const r = idempotencyKey.safeParse(header);
  if (!r.success) throw new ApiError(400, 'validation_failed', 'invalid Idempotency-Key', [{ field: 'headers.idempotency-key', message: 'printable ASCII, 1 to 255 characters' }]);
  // The platform derives its own executions' ids from keys with these prefixes (an event rule's
  // `event:<rule>:<event>`, the outbound proxy's `outbound:<key>`): a client's key must not name one of them.
  if (RESERVED_KEY_PREFIXES.some((p) => r.data.startsWith(p))) {
    throw new ApiError(400, 'validation_failed', 'invalid Idempotency-Key', [{ field: 'headers.idempotency-key', message: `must not start with ${RESERVED_KEY_PREFIXES.join(' or ')}` }]);
  }
  return r.data;
}

const RESERVED_KEY_PREFIXES = ['event:', 'outbound:'];

/** The caller a trigger or a signal carries: the consumer the gateway authenticated. */
export const callerOf = (p: Principal): Caller => ({ consumer_id: p.consumerId, username: p.username });

/**
 * The X-Callback-URL header, checked: an http(s) URL that, unless `allowNonPublic`, does not name
 * a non-public address (400 naming the header). The addresses a name resolves to are checked
 * where the webhook is sent (lib/webhook-targets.ts).
 */
export function callbackUrlOf(header: unknown, allowNonPublic: boolean): string {
  const invalid = (message: string) => new ApiError(400, 'validation_failed', 'invalid X-Callback-URL', [{ field: 'headers.x-callback-url', message }]);
  const r = callbackUrl.safeParse(header);
  if (!r.success) throw invalid('must be an http(s) URL');
  const refused = callbackRefusal(r.data, allowNonPublic);
  if (refused) throw invalid(refused);
  return r.data;
}

/** The headers and body of a 202 for an execution. */
export function acceptedAnswer(executionId: string): Omit<Accepted, 'executionId'> {
  const statusUrl = `/api/workflows/${executionId}`;
  return {
    headers: { 'X-Workflow-Execution-ID': executionId, 'X-Workflow-Status-Endpoint': statusUrl, Location: statusUrl },
    body: { execution_id: executionId, status_url: statusUrl, status: 'ACCEPTED' },
  };
}

export type Accepted = {
  executionId: string;
  headers: Record<'X-Workflow-Execution-ID' | 'X-Workflow-Status-Endpoint' | 'Location', string>;
  body: { execution_id: string; status_url: string; status: 'ACCEPTED' };
};

/**
 * The accept path shared by POST /api/workflows/{type} and rule-bound routes: mint the id,
 * check the Idempotency-Key, and answer only once JetStream has the trigger.
 */
export function createTriggering(ctx: GatewayContext) {
  const { ids, metrics } = ctx;

  /** Publishes a trigger and waits for JetStream's ack: only then may the client hear 2xx. */
  async function publishTrigger(msg: TriggerMessage, span?: Span): Promise<void> {
    const end = metrics.publishLatency.startTimer();
    try {
      if (!natsConnected(ctx.nc)) throw new Error('nats disconnected');
      await ctx.js.publish(subjects.trigger(msg.tenant), JSON.stringify(msg), {
        msgID: msg.execution_id,
        timeout: 3000,
        // The trace goes on with the message: the consumer's span is the request span's child.
        headers: ctx.natsHeaders({ 'X-Request-ID': msg.correlation_id, 'X-Tenant-ID': msg.tenant, ...(span ? traceHeaders(span) : {}) }),
      });
      end({ outcome: 'acked' });
    } catch (err) {
      end({ outcome: 'failed' });
      ctx.logger.warn({ err, execution_id: msg.execution_id }, 'trigger publish failed');
      throw new ApiError(503, 'trigger_unavailable', 'the trigger could not be stored durably; retry with the same Idempotency-Key', undefined, { 'Retry-After': '2' });
    }
  }

  const storeUnavailable = (err: unknown) => {
    ctx.logger.warn({ err }, 'idempotency store unavailable');
    return new ApiError(503, 'trigger_unavailable', 'the trigger could not be stored durably; retry with the same Idempotency-Key', undefined, { 'Retry-After': '2' });
  };

  /**
   * Remembers an Idempotency-Key with its request's fingerprint for 24 hours (JetStream KV, first
   * writer wins) and returns the execution id to answer with: the one stored with the key, which is
   * `executionId` unless the key was first used under an older way of deriving ids. A reused key
   * whose request differs is refused (422). Once the key is forgotten, the id, derived from the key
   * and the fingerprint, still names the first execution for the same request and a new one for
   * another: a reused key is never answered with an execution that dropped its request.
   */
  async function checkIdempotency(tenant: string, key: string, print: string, executionId: string): Promise<string> {
    if (!natsConnected(ctx.nc)) throw storeUnavailable(new Error('nats disconnected'));
    const kv = await ctx.idempotencyKv().catch((err) => { throw storeUnavailable(err); });
    const entryKey = `${tenant}.${createHash('sha256').update(key).digest('hex')}`;
    try {
      await kv.create(entryKey, JSON.stringify({ fingerprint: print, execution_id: executionId }));
      return executionId;
    } catch (createErr) {
      const existing = await kv.get(entryKey).catch(() => null);
      if (!existing) throw storeUnavailable(createErr);
      const stored = existing.json<{ fingerprint: string; execution_id: string }>();
      if (stored.fingerprint !== print) {
        throw new ApiError(422, 'idempotency_key_reused', 'this Idempotency-Key was used with a different request', [{ field: 'headers.idempotency-key', message: 'already used with another body or workflow type' }]);
      }
      return stored.execution_id;
    }
  }

  /** Accepts a start: validate, mint the id, make the trigger durable, answer 202. */
  async function accept(req: FastifyRequest, def: WorkflowTypeDef, caller: Principal, input: unknown, source: TriggerMessage['source'], ruleCallback?: string | null): Promise<Accepted> {
    const { tenant } = caller;
    const key = idempotencyKeyOf(req);
    const cbHeader = req.headers['x-callback-url'];
    const callback = cbHeader === undefined ? ruleCallback ?? undefined : callbackUrlOf(cbHeader, ctx.config.FLOWGATE_WEBHOOK_ALLOW_PRIVATE);
    // Pushed back (429) while the tenant's, or everyone's, triggers waiting to start are at their bound.
    ctx.backlog.admit(tenant);
    const executionId = key === undefined ? ids.mint(tenant) : await idempotentId(tenant, key, def.name, input);
    await publishTrigger({
      execution_id: executionId,
      tenant,
      workflow_type: def.name,
      input,
      correlation_id: req.id,
      accepted_at: new Date().toISOString(),
      callback_url: callback,
      source,
      requested_by: callerOf(caller),
    }, req.flowgate?.span);
    ctx.backlog.accepted(tenant);
    metrics.triggers.inc({ tenant, workflow: def.name, outcome: 'accepted' });
    req.log.debug({ execution_id: executionId, workflow_type: def.name, trace_id: req.flowgate?.span?.spanContext().traceId }, 'trigger accepted');
    return { executionId, ...acceptedAnswer(executionId) };
  }

  /** The execution id for a request with this Idempotency-Key (see checkIdempotency). */
  async function idempotentId(tenant: string, key: string, type: string, input: unknown): Promise<string> {
    const print = fingerprint(type, input);
    return checkIdempotency(tenant, key, print, ids.mint(tenant, key, print));
  }

  return { accept, idempotentId };
}
