import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { executionInfoFromRaw } from '@temporalio/client/lib/helpers';
import { z } from 'zod';
import { ApiError, notFound, validationError } from '../../lib/errors';
import { inWorkspace } from '../../lib/postgres';
import { natsConnected, subjects } from '../../lib/nats';
import { TemporalAway, withinDeadline } from '../../lib/temporal';
import { describeWorkflowTypes, findWorkflowType } from '../../lib/workflow-registry';
import type { SignalMessage } from '../../lib/trigger-message';
import { accepted, describeExecution, summarize, tenantOf, type ExecutionStatus } from '../status';
import type { GatewayContext } from '../app';
import { callerOf, createTriggering } from '../triggering';
import { assertBodyWithinLimit } from '../raw-body';

const executionParams = z.object({ id: z.string().min(1).max(200) });
const listQuery = z.object({
  status: z.enum(['RUNNING', 'COMPLETED', 'FAILED', 'CANCELED', 'TERMINATED', 'TIMED_OUT']).optional(),
  type: z.string().max(100).optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(4000).optional(),
}).strict();
const resultQuery = z.object({ wait: z.coerce.number().min(0).max(60).default(0) }).strict();

const VISIBILITY_STATUS: Record<string, string> = {
  RUNNING: 'Running', COMPLETED: 'Completed', FAILED: 'Failed', CANCELED: 'Canceled', TERMINATED: 'Terminated', TIMED_OUT: 'TimedOut',
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const closedExecution = (s: ExecutionStatus) => new ApiError(409, 'execution_closed', `the workflow is ${s.status}`);

function parse<T extends z.ZodType>(schema: T, value: unknown, where: 'body' | 'query' | 'params' | 'signal'): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) throw validationError(r.error, where);
  return r.data;
}

export function registerWorkflowRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  const { ids, auth, temporal, metrics } = ctx;

  const { accept } = createTriggering(ctx);

  /** A dead-lettered trigger's status, or undefined (DB-less gateways have no dead-letter table to look in). */
  const deadLettered = async (id: string, tenant: string): Promise<ExecutionStatus | undefined> => {
    const row = ctx.pool
      ? await inWorkspace(ctx.pool, tenant, async (db) => (await db.query<{ reason: string; at: Date; workflow_type: string | null }>(
        "SELECT reason, at, workflow_type FROM dead_letters WHERE execution_id = $1 AND kind = 'trigger'", [id])).rows[0])
      : undefined;
    return row && {
      ...accepted(id, null), workflow_type: row.workflow_type, status: 'FAILED', last_update: row.at.toISOString(),
      error: { message: row.reason, type: 'TriggerDeadLettered' },
    };
  };

  /**
   * What an id unknown to Temporal means. Dead-lettered: FAILED. While any trigger of the tenant
   * waits in JetStream (or that cannot be read): ACCEPTED, never 404 for an id we accepted. With
   * none waiting, every trigger accepted before that read has been started (Temporal has it) or
   * dead-lettered (the consumer acks only after either), so Temporal and the dead letters are
   * asked again: an id neither knows is gone (Temporal's retention has passed): null, 404.
   */
  const notStarted = (id: string, tenant: string) => async (): Promise<ExecutionStatus | null> => {
    // PostgreSQL away (its dead letters unread): the id may still wait in JetStream, so ACCEPTED.
    const unread = (err: unknown) => {
      ctx.logger.warn({ err, execution_id: id }, 'status: dead letters not read');
      return accepted(id);
    };
    const dead = await deadLettered(id, tenant).catch(unread);
    if (dead) return dead;
    if (!ctx.pool) return accepted(id);
    const waiting = await ctx.backlog.waiting(tenant).catch((err: unknown) => {
      ctx.logger.warn({ err, execution_id: id }, 'status: trigger backlog not read');
      return undefined;
    });
    if (waiting !== 0) return accepted(id);
    return describeExecution(temporal, id, tenant, async () => (await deadLettered(id, tenant).catch(unread)) ?? null);
  };

  /** A call to Temporal for a waiting client, bounded (FLOWGATE_TEMPORAL_CALL_TIMEOUT_MS). */
  const callTemporal = <T>(call: string, fn: () => Promise<T>) => withinDeadline(temporal, ctx.config.FLOWGATE_TEMPORAL_CALL_TIMEOUT_MS, call, fn);

  // A completed execution's status is kept (bounded, oldest out first). Not a failed, cancelled,
  // terminated or timed-out one: a retry with its Idempotency-Key (ALLOW_DUPLICATE_FAILED_ONLY)
  // starts a new run under the same id, whose status must be read.
  const closed = new Map<string, ExecutionStatus>();
  const CLOSED_CACHE_MAX = 10_000;

  /**
   * The execution's status. Temporal away: ACCEPTED (waiting for `temporal-unavailable`) for a
   * caller that only reads it; with `mustReach`, 503 temporal_unavailable, for a caller about to act
   * on the run (signal, cancel), which would otherwise be told the run has not started.
   */
  async function statusOf(id: string, tenant: string, mustReach = false): Promise<ExecutionStatus> {
    if (!ids.belongsTo(id, tenant)) throw notFound('execution');
    const hit = closed.get(id);
    if (hit) return hit;
    let s: ExecutionStatus | null;
    try {
      s = await callTemporal('describe', () => describeExecution(temporal, id, tenant, notStarted(id, tenant)));
    } catch (err) {
      if (!(err instanceof TemporalAway) || mustReach) throw err;
      // Temporal unreachable: the trigger is durable in JetStream and will start once it is back.
      ctx.logger.warn({ err: err.cause, execution_id: id }, 'status: temporal unavailable');
      return accepted(id, { kind: 'start', name: 'temporal-unavailable' });
    }
    if (!s) throw notFound('execution');
    if (s.status === 'COMPLETED') {
      if (closed.size >= CLOSED_CACHE_MAX) closed.delete(closed.keys().next().value!);
      closed.set(id, s);
    }
    return s;
  }

  app.get('/api/workflow-types', async () => ({ workflow_types: describeWorkflowTypes() }));

  app.post('/api/workflows/:workflowType', async (req, reply) => {
    const principal = await auth.authenticate(req);
    const { tenant } = principal;
    const { workflowType } = req.params as { workflowType: string };
    const def = findWorkflowType(workflowType);
    if (!def) {
      metrics.triggers.inc({ tenant, workflow: 'unknown', outcome: 'unknown_type' });
      throw new ApiError(404, 'unknown_workflow_type', `no workflow type named ${workflowType}`, [{ field: 'params.workflowType', message: 'see GET /api/workflow-types' }]);
    }
    assertBodyWithinLimit(req);
    const r = def.input.safeParse(req.body ?? undefined);
    if (!r.success) {
      metrics.triggers.inc({ tenant, workflow: def.name, outcome: 'invalid' });
      throw validationError(r.error, 'body');
    }
    const accepted = await accept(req, def, principal, r.data, 'api');
    return reply.code(202).headers(accepted.headers).send(accepted.body);
  });

  app.get('/api/workflows/:id', async (req) => {
    const end = metrics.statusLatency.startTimer({ route: 'status' });
    try {
      const { tenant } = await auth.authenticate(req);
      const { id } = parse(executionParams, req.params, 'params');
      return await statusOf(id, tenant);
    } finally {
      end();
    }
  });

  app.get('/api/workflows/:id/result', async (req, reply) => {
    const { tenant } = await auth.authenticate(req);
    const { id } = parse(executionParams, req.params, 'params');
    const { wait } = parse(resultQuery, req.query, 'query');
    const deadline = Date.now() + wait * 1000;
    let pause = 100;
    for (;;) {
      const s = await statusOf(id, tenant);
      const open = s.status === 'ACCEPTED' || s.status === 'RUNNING';
      if (!open) return s;
      const remaining = deadline - Date.now();
      if (remaining <= 0) return reply.code(202).header('Retry-After', '1').send(s);
      await sleep(Math.min(pause, remaining));
      pause = Math.min(pause * 2, 1000);
    }
  });

  app.post('/api/workflows/:id/signals/:name', async (req, reply) => {
    const principal = await auth.authenticate(req);
    const { tenant } = principal;
    const { id, name } = parse(z.object({ id: z.string().min(1).max(200), name: z.string().min(1).max(100) }), req.params, 'params');
    assertBodyWithinLimit(req); // before any call to Temporal
    const s = await statusOf(id, tenant, true);
    if (s.status === 'ACCEPTED') throw new ApiError(409, 'execution_not_started', 'the workflow has not started yet', undefined, { 'Retry-After': '1' });
    // A trigger dead-lettered before its start (its type retired, say) has no run to signal.
    if (s.error?.type === 'TriggerDeadLettered') throw closedExecution(s);
    const def = findWorkflowType(s.workflow_type ?? '');
    const schema = def && Object.hasOwn(def.signals, name) ? def.signals[name] : undefined;
    if (!schema) throw new ApiError(400, 'unknown_signal', `${s.workflow_type} has no signal named ${name}`, [{ field: 'params.name', message: `one of: ${Object.keys(def?.signals ?? {}).join(', ') || '(none)'}` }]);
    if (s.status !== 'RUNNING') throw closedExecution(s);
    const payload = parse(schema, req.body ?? undefined, 'signal');
    const msg: SignalMessage = { execution_id: id, tenant, signal: name, payload, correlation_id: req.id, sent_by: callerOf(principal) };
    try {
      if (!natsConnected(ctx.nc)) throw new Error('nats disconnected');
      // Deduplicated on what the signal says and who sent it, not on the caller's X-Request-ID (one
      // correlation id may carry a whole flow: A's approve then B's); a resend of the same signal by
      // the same caller within JetStream's window is stored once.
      const digest = createHash('sha256').update(`${principal.consumerId}\n${JSON.stringify(payload ?? null)}`).digest('base64url').slice(0, 22);
      await ctx.js.publish(subjects.signal(tenant), JSON.stringify(msg), { msgID: `${id}:${name}:${digest}`, timeout: 3000 });
    } catch (err) {
      ctx.logger.warn({ err, execution_id: id }, 'signal publish failed');
      throw new ApiError(503, 'signal_unavailable', 'the signal could not be stored durably; retry', undefined, { 'Retry-After': '2' });
    }
    return reply.code(202).send({ execution_id: id, signal: name, status: 'ACCEPTED' });
  });

  app.post('/api/workflows/:id/cancel', async (req, reply) => {
    const { tenant } = await auth.authenticate(req);
    const { id } = parse(executionParams, req.params, 'params');
    const s = await statusOf(id, tenant, true);
    if (s.status === 'ACCEPTED') throw new ApiError(409, 'execution_not_started', 'the workflow has not started yet', undefined, { 'Retry-After': '1' });
    if (s.status !== 'RUNNING') throw closedExecution(s);
    await callTemporal('cancel', () => temporal.workflow.getHandle(id).cancel());
    return reply.code(202).send({ execution_id: id, status: 'CANCEL_REQUESTED' });
  });

  app.get('/api/workflows', async (req) => {
    const { tenant } = await auth.authenticate(req);
    const q = parse(listQuery, req.query, 'query');
    const clauses = [`FlowgateTenant = '${tenant}'`];
    if (q.status) clauses.push(`ExecutionStatus = '${VISIBILITY_STATUS[q.status]}'`);
    if (q.type) {
      const def = findWorkflowType(q.type);
      if (!def) throw new ApiError(400, 'validation_failed', 'unknown workflow type', [{ field: 'query.type', message: 'see GET /api/workflow-types' }]);
      clauses.push(`WorkflowType = '${def.workflow}'`);
    }
    const pageToken = q.cursor === undefined ? undefined : ids.openCursor(tenant, q.cursor);
    if (q.cursor !== undefined && !pageToken) throw new ApiError(400, 'validation_failed', 'invalid cursor', [{ field: 'query.cursor', message: 'a next_cursor from an earlier page' }]);
    const res = await callTemporal('list', () => temporal.workflowService.listWorkflowExecutions({
      namespace: temporal.options.namespace,
      query: clauses.join(' AND '),
      pageSize: q.limit,
      nextPageToken: pageToken,
    }));
    const rows = await Promise.all((res.executions ?? []).map(async (raw) => {
      const info = await executionInfoFromRaw(raw, temporal.options.loadedDataConverter, raw, temporal.options.namespace);
      return tenantOf(info) === tenant ? summarize(info) : null;
    }));
    const token = res.nextPageToken && res.nextPageToken.length ? ids.sealCursor(tenant, res.nextPageToken) : null;
    return { executions: rows.filter((r) => r !== null), next_cursor: token };
  });
}
