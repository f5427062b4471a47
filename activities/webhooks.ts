import { ApplicationFailure, Context } from '@temporalio/activity';
import type { Pool } from 'pg';
import { recordWebhook, sendSignedWebhook, type WebhookTargets } from '../lib/webhook-deliveries';
import type { WebhookEvent } from '../lib/workflow-webhooks';

/** Attempts made while the workflow ends (Temporal retries the activity); after them the webhook goes to the retrier. */
export const IN_WORKFLOW_ATTEMPTS = 3;

/** When the retrier makes its first attempt after the workflow handed a webhook over (FLOWGATE_WEBHOOK_RETRY_BASE_MS). */
export type WebhookDeps = { pool: Pool; webhookFirstRetryMs?: number; webhookTargets: WebhookTargets };

/**
 * Posts one signed webhook for `tenant`. Network errors, timeouts, 408, 429 and 5xx are retried
 * by Temporal (the activity's retry policy) for IN_WORKFLOW_ATTEMPTS attempts; then the webhook is
 * handed to the worker's retrier (lib/webhook-deliveries.ts), which keeps trying for days, and
 * the activity completes (`queued`), so the workflow does not wait for a receiver that is down.
 * Any other 4xx means the receiver refuses it: recorded, and not retried.
 */
export async function postSignedWebhook(deps: WebhookDeps, tenant: string, url: string, id: string, payload: unknown): Promise<{ status: number; queued?: true }> {
  const r = await sendSignedWebhook(deps.pool, deps.webhookTargets, tenant, url, id, payload);
  if (r.ok) return { status: r.status };
  const { attempt } = Context.current().info;
  const row = { tenant, url, eventId: id, payload, attempts: attempt, status: r.status, error: r.error, firstRetryMs: deps.webhookFirstRetryMs ?? 60_000 };
  if (r.refused) {
    await recordWebhook(deps.pool, { ...row, state: 'refused' });
    throw ApplicationFailure.nonRetryable(r.status ? `receiver refused the webhook with ${r.status}` : r.error, 'WebhookRefused');
  }
  if (attempt < IN_WORKFLOW_ATTEMPTS) throw ApplicationFailure.retryable(r.error, 'WebhookReceiverError');
  await recordWebhook(deps.pool, { ...row, state: 'pending' });
  return { status: r.status ?? 0, queued: true };
}

/** The webhook every workflow started with a callback URL sends when it ends (workflows/interceptors.ts). */
export function webhookActivities(deps: WebhookDeps) {
  return {
    deliverWebhook: (url: string, event: WebhookEvent): Promise<{ status: number; queued?: true }> => postSignedWebhook(deps, event.tenant, url, event.id, event),
  };
}
