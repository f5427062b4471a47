import type { Client, WorkflowExecutionInfo } from '@temporalio/client';
import type { Pool } from 'pg';
import type { Registry } from 'prom-client';
import type { Logger } from '../lib/logger';
import { prom } from '../lib/metrics';
import type { ExecutionMemo } from '../lib/trigger-message';
import { pollLoop } from '../lib/poll-loop';
import { recordWebhook } from '../lib/webhook-deliveries';
import { webhookEvent, type WebhookEvent, type WebhookStatus } from '../lib/workflow-webhooks';

/** Visibility is eventually consistent: each look goes back this far behind the last one. */
const OVERLAP_MS = 60_000;
/** How far back a worker looks when it starts (runs that ended while no worker looked). */
const LOOK_BACK_MS = 86_400_000;

/** Temporal's status names of the runs whose code does not send their webhook. */
const ENDED = new Set<string>(['TERMINATED', 'TIMED_OUT'] satisfies WebhookStatus[]);

/** The webhook of a run that ended without its own code running again, or undefined when it has no callback. */
export function closureEvent(w: Pick<WorkflowExecutionInfo, 'workflowId' | 'type' | 'status' | 'closeTime' | 'memo'>): { url: string; event: WebhookEvent } | undefined {
  const memo = w.memo as Partial<ExecutionMemo> | undefined;
  if (!ENDED.has(w.status.name) || !memo?.callback_url || !memo.tenant) return undefined;
  const status = w.status.name as WebhookStatus;
  return { url: memo.callback_url, event: webhookEvent({ workflowId: w.workflowId, workflowType: w.type, memo }, status, w.closeTime ?? new Date()) };
}

/**
 * Terminated and timed-out runs end without their code running again, so they cannot send
 * their webhook as the others do (workflows/interceptors.ts). Every worker looks for them in
 * Temporal's visibility every `pollMs` (a day back at first) and hands each one with a callback
 * URL to the webhook retrier's table, keyed by its event id: a run found twice, or by two
 * workers, is queued once. The looks overlap; what this worker wrote already is not written again.
 */
export function startClosureWebhooks(deps: { temporal: Client; pool: Pool; logger: Logger; registry: Registry; pollMs: number }): () => Promise<void> {
  const { temporal, pool, logger } = deps;
  const queued = new prom.Counter({ name: 'webhook_closures_queued_total', help: 'Webhooks of terminated and timed-out runs handed to the retrier', registers: [deps.registry] });
  let since = Date.now() - LOOK_BACK_MS;
  /** Event ids written, with their run's close time: kept while a look can still find them. */
  const written = new Map<string, number>();

  const runOnce = async () => {
    const started = Date.now();
    const from = since - OVERLAP_MS;
    for (const [id, closedAt] of written) if (closedAt < from) written.delete(id);
    const query = `ExecutionStatus IN ('Terminated', 'TimedOut') AND CloseTime >= '${new Date(from).toISOString()}'`;
    for await (const w of temporal.workflow.list({ query })) {
      if (loop.stopped()) return;
      const found = closureEvent(w);
      if (!found || written.has(found.event.id)) continue;
      const added = await recordWebhook(pool, {
        tenant: found.event.tenant, url: found.url, eventId: found.event.id, payload: found.event, state: 'pending', attempts: 0, error: 'not sent yet', firstRetryMs: 0,
      });
      written.set(found.event.id, Date.parse(found.event.occurred_at));
      if (added) queued.inc();
    }
    since = started;
  };

  const loop = pollLoop(deps.pollMs, runOnce, (err) => logger.warn({ err: (err as Error).message }, 'closure webhooks: visibility look failed; trying again'));
  return loop.stop;
}
