import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, WorkflowUpdateFailedError, type Client, type WorkflowExecutionDescription, type WorkflowExecutionInfo } from '@temporalio/client';
import { z } from 'zod';
import { writeAudit } from '../lib/audit';
import { TOPICS } from '../lib/kafka';
import { ApiError } from '../lib/errors';
import { asPlatform } from '../lib/postgres';
import { findRunbook, PLATFORM_TENANT, runbookOfWorkflow, runbooks } from '../lib/runbooks';
import { runIdOf, startRunbookRun } from '../lib/runbook-runs';
import { withinDeadline } from '../lib/temporal';
import { RUNBOOK_MEMO_KEY, type RunRecord, type StepDecision } from '../lib/workflow-runbooks';
import { SA } from '../lib/workflow-search-attributes';
import type { AdminDeps } from './app';
import type { AdminApi } from './endpoint';
import type { AdminPrincipal } from './auth';

/** `rb-…`; a scheduled run's id ends with the time Temporal appends (`-2026-01-01T00:00:00Z`). */
const RUN_ID = /^rb-[A-Za-z0-9_.:-]{1,200}$/;
const runParams = z.object({ id: z.string().regex(RUN_ID, 'a run id (rb-…)') }).strict();
const stepParams = runParams.extend({ step: z.string().min(1).max(100) }).strict();
const decisionBody = z.object({ comment: z.string().max(2000).optional(), payload: z.record(z.string(), z.unknown()).optional() }).strict();
const startBody = z.object({ params: z.record(z.string(), z.unknown()).default({}), dry_run: z.boolean().default(false) }).strict();


const STATUS: Record<string, string> = { RUNNING: 'RUNNING', COMPLETED: 'COMPLETED', FAILED: 'FAILED', CANCELLED: 'CANCELED', TERMINATED: 'TERMINATED', TIMED_OUT: 'TIMED_OUT' };

function runView(d: Omit<WorkflowExecutionInfo, 'raw'>, live?: WorkflowExecutionDescription) {
  const record = d.memo?.[RUNBOOK_MEMO_KEY] as RunRecord | undefined;
  const steps = (record?.steps ?? []).map((s) => {
    // A running step's attempt is its activity's, read from Temporal.
    const pending = s.state === 'running' ? live?.raw.pendingActivities?.[0] : undefined;
    return pending ? { ...s, attempt: Math.max(s.attempt, pending.attempt ?? 1), last_failure: pending.lastFailure?.message ?? undefined } : s;
  });
  return {
    id: d.workflowId,
    runbook: runbookOfWorkflow(d.type)?.name ?? d.type,
    status: STATUS[d.status.name] ?? d.status.name,
    state: record?.state ?? null,
    requested_by: record?.requested_by ?? null,
    dry_run: record?.dry_run ?? false,
    started_at: d.startTime.toISOString(),
    closed_at: d.closeTime?.toISOString() ?? null,
    steps,
    figures: record?.figures ?? {},
    error: record?.error ?? null,
    last_update: record?.last_update ?? null,
  };
}

/** Runbooks and their runs: list, start (with a dry run), read as a timeline, approve or reject a gate, pause, resume, abort. */
export function registerRunbooks(api: AdminApi, deps: AdminDeps & { temporal: Client }): void {
  const { temporal, pool } = deps;
  // Temporal unreachable: 503 temporal_unavailable within the limit, not a 500 after the SDK's ~20 s
  // of retries. An approval (an update the run's worker must take) is not bounded here.
  const bounded = <T>(call: string, fn: () => Promise<T>) => withinDeadline(temporal, deps.config.FLOWGATE_TEMPORAL_CALL_TIMEOUT_MS, call, fn);
  const described = runbooks().map((r) => ({
    name: r.name, description: r.description, params: z.toJSONSchema(r.params, { io: 'input' }), steps: r.steps, approver_roles: r.approverRoles,
    approval_payload: z.toJSONSchema(r.approvalPayload, { io: 'input' }),
  }));

  const describe = async (id: string) => {
    try {
      const d = await bounded('describe', () => temporal.workflow.getHandle(id).describe());
      if (d.typedSearchAttributes.get(SA.tenant) !== PLATFORM_TENANT || !runbookOfWorkflow(d.type)) throw new ApiError(404, 'not_found', 'run not found');
      return d;
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new ApiError(404, 'not_found', 'run not found');
      throw err;
    }
  };
  // While PostgreSQL is unreachable (a failover waiting for its approval) the record goes to Kafka
  // api.audit-trail directly; the decision itself is in the run's Temporal history either way.
  const audit = async (who: AdminPrincipal, action: string, id: string, after: unknown, correlationId: string) => {
    const entry = { workspace: null, actor: `token:${who.name}`, action, entityType: 'runbook_run', entityId: id, after, correlationId };
    try {
      await asPlatform(pool, (db) => writeAudit(db, entry));
    } catch (err) {
      if (!deps.auditFallback) throw err;
      await deps.auditFallback.sendWithin(5000, TOPICS.auditTrail, PLATFORM_TENANT, {
        workspace_id: null, actor: entry.actor, action, entity_type: entry.entityType, entity_id: id, after, correlation_id: correlationId,
        at: new Date().toISOString(), written_to: 'kafka (PostgreSQL unreachable)',
      });
      deps.logger.warn({ action, run: id }, 'PostgreSQL unreachable: runbook audit record sent to Kafka directly');
    }
  };

  api.add({
    method: 'GET', url: '/runbooks', summary: 'The runbooks, with their parameters (JSON Schema), steps and approver roles', tag: 'runbooks', resource: 'runbooks', action: 'write', scoped: false, platform: true,
    handler: async () => ({ data: described }),
  });

  api.add({
    method: 'POST', url: '/runbooks/:name/runs', summary: 'Start a run (dry_run: plan the steps, run only read-only checks)', tag: 'runbooks', resource: 'runbooks', action: 'write', scoped: false, platform: true,
    params: z.object({ name: z.string().min(1) }).strict(), body: startBody, responses: { 201: '{id, status_url}', 409: 'a run of this runbook for the same target is in progress' },
    handler: async ({ who, params, body, req, reply }) => {
      const def = findRunbook(params.name);
      if (!def) throw new ApiError(404, 'not_found', `no runbook named ${params.name}`, [{ field: 'params.name', message: 'see GET /runbooks' }]);
      const parsed = def.params.safeParse(body.params);
      if (!parsed.success) {
        throw new ApiError(400, 'validation_failed', 'invalid params', parsed.error.issues.map((i) => ({ field: ['body', 'params', ...i.path.map(String)].join('.'), message: i.message })));
      }
      const skip = body.dry_run ? undefined : def.skipsApproval?.(parsed.data);
      if (skip && who.role !== 'admin') {
        throw new ApiError(403, 'forbidden', `only an admin may start ${def.name} without its approval`, [{ field: `body.params.${skip}`, message: 'an admin only' }]);
      }
      let id: string;
      try {
        id = await bounded('start', () => startRunbookRun(temporal, deps.config.FLOWGATE_TASK_QUEUE, def, parsed.data, { requestedBy: who.name, dryRun: body.dry_run, correlationId: req.id }));
      } catch (err) {
        if (err instanceof WorkflowExecutionAlreadyStartedError) {
          const id = runIdOf(def, parsed.data, body.dry_run);
          throw new ApiError(409, 'run_in_progress', `a ${def.name} run for this target is in progress: ${id}`, [{ field: 'body.params', message: id }]);
        }
        throw err;
      }
      await audit(who, 'start', id, { runbook: def.name, params: parsed.data, dry_run: body.dry_run }, req.id);
      return reply.code(201).header('Location', `/runs/${id}`).send({ id, runbook: def.name, status_url: `/runs/${id}`, dry_run: body.dry_run });
    },
  });

  api.add({
    method: 'GET', url: '/runbooks/:name/runs', summary: "A runbook's runs, newest first", tag: 'runbooks', resource: 'runbooks', action: 'write', scoped: false, platform: true,
    params: z.object({ name: z.string().min(1) }).strict(), query: z.object({ limit: z.coerce.number().int().min(1).max(100).default(20) }).strict(),
    handler: async ({ params, query }) => {
      const def = findRunbook(params.name);
      if (!def) throw new ApiError(404, 'not_found', `no runbook named ${params.name}`);
      const data = await bounded('list', async () => {
        const runs = [];
        for await (const d of temporal.workflow.list({ query: `WorkflowType = '${def.workflow}' AND FlowgateTenant = '${PLATFORM_TENANT}'` })) {
          runs.push(runView(d));
          if (runs.length >= query.limit) break;
        }
        return runs;
      });
      return { data };
    },
  });

  api.add({
    method: 'GET', url: '/runs/:id', summary: 'A run as a timeline: each step with its state, start, end, attempt, output and approver', tag: 'runbooks', resource: 'runbooks', action: 'write', scoped: false, platform: true, params: runParams,
    handler: async ({ params }) => { const d = await describe(params.id); return runView(d, d); },
  });

  const decide = (kind: 'approve' | 'reject') => api.add({
    method: 'POST', url: `/runs/:id/steps/:step/${kind}`, summary: `${kind === 'approve' ? 'Approve' : 'Reject'} a gated step (not your own run; an allowed role; before the expiry)`,
    tag: 'runbooks', resource: 'runbooks', action: 'write', scoped: false, platform: true, params: stepParams, body: decisionBody, responses: { 200: 'the step', 409: 'refused, with the reason' },
    handler: async ({ who, params, body, req }) => {
      const d = await describe(params.id);
      const def = runbookOfWorkflow(d.type)!;
      if (kind === 'approve') {
        const payload = def.approvalPayload.safeParse(body.payload ?? {});
        if (!payload.success) {
          throw new ApiError(400, 'validation_failed', 'invalid approval payload', payload.error.issues.map((i) => ({ field: ['body', 'payload', ...i.path.map(String)].join('.'), message: i.message })));
        }
      }
      const decision: StepDecision = { step: params.step, approver: who.name, role: who.role, comment: body.comment, payload: body.payload };
      try {
        const step = await temporal.workflow.getHandle(params.id).executeUpdate(kind === 'approve' ? 'approveStep' : 'rejectStep', { args: [decision] });
        await audit(who, kind, params.id, { step: params.step, role: who.role, comment: body.comment ?? null }, req.id);
        return step;
      } catch (err) {
        if (err instanceof WorkflowUpdateFailedError) {
          await audit(who, `${kind}_refused`, params.id, { step: params.step, role: who.role, reason: err.cause?.message ?? err.message }, req.id);
          throw new ApiError(409, 'approval_refused', err.cause?.message ?? err.message, [{ field: 'params.step', message: err.cause?.message ?? err.message }]);
        }
        if ((err as Error).name === 'WorkflowNotFoundError') throw new ApiError(409, 'approval_refused', 'the run has ended');
        throw err;
      }
    },
  });
  decide('approve');
  decide('reject');

  for (const action of ['pause', 'resume', 'abort'] as const) {
    api.add({
      method: 'POST', url: `/runs/:id/${action}`, summary: action === 'abort' ? 'Abort a run (it undoes what it can)' : `${action[0]!.toUpperCase()}${action.slice(1)} a run between steps`,
      tag: 'runbooks', resource: 'runbooks', action: 'write', scoped: false, platform: true, params: runParams, responses: { 202: 'accepted' },
      handler: async ({ who, params, req, reply }) => {
        const d = await describe(params.id);
        if (d.status.name !== 'RUNNING') throw new ApiError(409, 'run_closed', `the run is ${d.status.name}`);
        const handle = temporal.workflow.getHandle(params.id);
        await bounded(action, async () => { if (action === 'abort') await handle.cancel(); else await handle.signal(action); });
        await audit(who, action, params.id, {}, req.id);
        return reply.code(202).send({ id: params.id, action });
      },
    });
  }
}
