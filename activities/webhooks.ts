import { ApplicationFailure } from '@temporalio/activity';
import type { Pool } from 'pg';
import { inWorkspace } from '../lib/postgres';
import { signWebhook, WEBHOOK_HEADERS } from '../lib/webhook-signature';

export type WebhookEvent = {
  id: string;
  type: 'workflow.completed' | 'workflow.failed' | 'workflow.canceled';
  execution_id: string;
  workflow_type: string;
  tenant: string;
  status: 'COMPLETED' | 'FAILED' | 'CANCELED';
  occurred_at: string;
  correlation_id?: string;
  result?: unknown;
  error?: { message: string; type?: string };
};

/**
 * Posts one signed webhook for `tenant`. Network errors, timeouts, 408, 429 and 5xx are retried
 * by Temporal (the activity's retry policy); any other 4xx means the receiver refuses it, so we stop.
 */
export async function postSignedWebhook(pool: Pool, tenant: string, url: string, id: string, payload: unknown): Promise<{ status: number }> {
  // Signed with the workspace's newest secret (rotation: add a new one, then delete the old).
  const secret = await inWorkspace(pool, tenant, async (db) =>
    (await db.query<{ secret: string }>('SELECT secret FROM webhook_secrets ORDER BY created_at DESC, id LIMIT 1')).rows[0]?.secret);
  if (!secret) throw ApplicationFailure.nonRetryable(`no webhook secret for tenant ${tenant}`, 'WebhookSecretMissing');
  const body = JSON.stringify(payload);
  const timestamp = Math.floor(Date.now() / 1000);
  const answer = await fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      'user-agent': 'Flowgate-Webhooks/1',
      [WEBHOOK_HEADERS.id]: id,
      [WEBHOOK_HEADERS.timestamp]: String(timestamp),
      [WEBHOOK_HEADERS.signature]: signWebhook(secret, timestamp, body),
    },
    body,
    redirect: 'manual',
    signal: AbortSignal.timeout(10_000),
  });
  await answer.arrayBuffer().catch(() => undefined);
  if (answer.ok) return { status: answer.status };
  const retryable = answer.status >= 500 || answer.status === 408 || answer.status === 429;
  if (!retryable) throw ApplicationFailure.nonRetryable(`receiver refused the webhook with ${answer.status}`, 'WebhookRefused');
  throw ApplicationFailure.retryable(`receiver answered ${answer.status}`, 'WebhookReceiverError');
}

/** The webhook every workflow started with a callback URL sends when it ends (workflows/interceptors.ts). */
export function webhookActivities(deps: { pool: Pool }) {
  return {
    deliverWebhook: (url: string, event: WebhookEvent): Promise<{ status: number }> => postSignedWebhook(deps.pool, event.tenant, url, event.id, event),
  };
}
