import type { Pool } from 'pg';
import { fetch } from 'undici';
import type { Registry } from 'prom-client';
import type { Logger } from './logger';
import { prom } from './metrics';
import { pollLoop } from './poll-loop';
import { asPlatform, inWorkspace } from './postgres';
import { signWebhook, WEBHOOK_HEADERS } from './webhook-signature';
import { NonPublicTargetError, nonPublicHost, publicOnlyDispatcher } from './webhook-targets';

/**
 * Signed webhooks, and the ones a receiver did not take in time. A workflow tries its webhook a
 * few times while it ends (activities/webhooks.ts); after that it hands the event to the
 * `webhook_deliveries` table and ends, and the worker's retrier below keeps posting it with a
 * growing pause until the receiver takes it (2xx), refuses it (a 4xx other than 408 and 429),
 * or the retry window is over (3 days by default, as Stripe retries). Each attempt is signed
 * afresh, with the workspace's newest secret and the attempt's timestamp.
 */

export type SendOutcome =
  | { ok: true; status: number }
  | { ok: false; refused: boolean; status?: number; error: string };

/** Where webhooks may go: public addresses only unless `allowNonPublic` (FLOWGATE_WEBHOOK_ALLOW_PRIVATE). */
export type WebhookTargets = { allowNonPublic: boolean };

let publicOnly: ReturnType<typeof publicOnlyDispatcher> | undefined;

/** One signed POST of `payload` for `tenant`. Never throws for what the receiver or the network did. */
export async function sendSignedWebhook(pool: Pool, targets: WebhookTargets, tenant: string, url: string, id: string, payload: unknown): Promise<SendOutcome> {
  const named = targets.allowNonPublic ? undefined : nonPublicHost(url);
  if (named) return { ok: false, refused: true, error: `the callback URL names ${named}, not a public address` };
  // Signed with the workspace's newest secret (rotation: add a new one, then delete the old).
  const secret = await inWorkspace(pool, tenant, async (db) =>
    (await db.query<{ secret: string }>('SELECT secret FROM webhook_secrets ORDER BY created_at DESC, id LIMIT 1')).rows[0]?.secret);
  if (!secret) return { ok: false, refused: false, error: `no webhook secret for tenant ${tenant}` };
  const body = JSON.stringify(payload);
  const timestamp = Math.floor(Date.now() / 1000);
  let answer: Awaited<ReturnType<typeof fetch>>;
  try {
    answer = await fetch(url, {
      dispatcher: targets.allowNonPublic ? undefined : (publicOnly ??= publicOnlyDispatcher()),
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
  } catch (err) {
    // The name resolved to a non-public address: refused for good, like a receiver's 4xx.
    const cause = (err as Error).cause;
    if (cause instanceof NonPublicTargetError) return { ok: false, refused: true, error: cause.message };
    return { ok: false, refused: false, error: (err as Error).message };
  }
  if (answer.ok) return { ok: true, status: answer.status };
  const retryable = answer.status >= 500 || answer.status === 408 || answer.status === 429;
  return { ok: false, refused: !retryable, status: answer.status, error: `receiver answered ${answer.status}` };
}

/** What a receiver's answers have made of a webhook handed to the retrier. */
export type DeliveryState = 'pending' | 'delivered' | 'refused' | 'abandoned';

/**
 * Hands a webhook the workflow could not deliver to the retrier (state `pending`, first retry
 * `firstRetryMs` from now), or records a refusal (`refused`). Idempotent by tenant and event id:
 * an activity retried after it wrote the row writes nothing more (false then).
 */
export async function recordWebhook(pool: Pool, w: {
  tenant: string; url: string; eventId: string; payload: unknown; state: 'pending' | 'refused'; attempts: number; status?: number; error: string; firstRetryMs: number;
}): Promise<boolean> {
  const res = await inWorkspace(pool, w.tenant, (db) => db.query(
    `INSERT INTO webhook_deliveries (workspace_id, event_id, url, payload, state, attempts, last_status, last_error, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + $9 * interval '1 millisecond')
     ON CONFLICT (workspace_id, event_id) DO NOTHING`,
    [w.tenant, w.eventId, w.url, JSON.stringify(w.payload), w.state, w.attempts, w.status ?? null, w.error, w.firstRetryMs],
  ));
  return res.rowCount === 1;
}

export type RetryPolicy = {
  /** The first pause (after the workflow handed the webhook over); later ones double, up to `maxMs`. */
  baseMs: number;
  maxMs: number;
  /** How long after the webhook was handed over the retrier keeps trying. */
  retryForMs: number;
  /** How often the retrier looks for webhooks that are due. */
  pollMs: number;
};

/** The pause before the next retry: as long as the webhook has been failing (so it doubles), within the policy's bounds. */
export const retryDelayMs = (policy: Pick<RetryPolicy, 'baseMs' | 'maxMs'>, failingMs: number): number =>
  Math.min(Math.max(policy.baseMs, failingMs), policy.maxMs);

type Due = { workspace_id: string; event_id: string; url: string; payload: unknown; attempts: number; failing_ms: number; expired: boolean; claimed_until: string };

/** Posts in flight at once, per worker. */
const MAX_IN_FLIGHT = 20;
/**
 * A tenant's posts taken per pass, and the in-flight count past which its rows wait: a tenant
 * whose receivers hang (each post waits out its 10 s) cannot hold every slot, so the others'
 * webhooks go out on the next pass.
 */
const PER_TENANT = 4;
/** While one retrier posts a row, no other one takes it: longer than a post can take. */
const CLAIM_MS = 30_000;

/**
 * Posts the pending webhooks that are due, forever, until the returned stop is called. Runs in
 * every worker; a row is claimed (its next attempt pushed past the post's timeout) in the same
 * statement that reads it, so two workers never post the same attempt. Posts run side by side
 * (MAX_IN_FLIGHT) and a pass does not wait for them; tenants share the slots (PER_TENANT).
 */
export function startWebhookRetrier(deps: { pool: Pool; logger: Logger; registry: Registry; policy: RetryPolicy; targets: WebhookTargets }): () => Promise<void> {
  const { pool, logger, policy, targets } = deps;
  const outcomes = new prom.Counter({ name: 'webhook_retries_total', help: 'Retries of webhooks the workflow could not deliver, by outcome', labelNames: ['outcome'], registers: [deps.registry] });
  const inFlight = new Set<Promise<void>>();
  const perTenant = new Map<string, number>();

  // Only while the claim is this retrier's (its next_attempt_at as claimed): a row another worker
  // took over after a stall is not settled twice, nor a delivered row set back to pending.
  const settle = async (row: Due, state: DeliveryState, status: number | null, error: string | null, nextInMs = 0): Promise<boolean> => {
    const res = await asPlatform(pool, (db) => db.query(
      `UPDATE webhook_deliveries SET state = $3, attempts = attempts + 1, last_status = $4, last_error = $5,
              next_attempt_at = now() + $6 * interval '1 millisecond', updated_at = now()
        WHERE workspace_id = $1 AND event_id = $2 AND state = 'pending' AND next_attempt_at = $7::timestamptz`,
      [row.workspace_id, row.event_id, state, status, error, nextInMs, row.claimed_until],
    ));
    if (res.rowCount === 1) return true;
    logger.warn({ tenant: row.workspace_id, event_id: row.event_id }, 'webhook claim lost to another retrier: this outcome not recorded');
    return false;
  };

  const post = async (row: Due): Promise<void> => {
    const r = await sendSignedWebhook(pool, targets, row.workspace_id, row.url, row.event_id, row.payload);
    if (r.ok) {
      if (!await settle(row, 'delivered', r.status, null)) return;
      outcomes.inc({ outcome: 'delivered' });
      logger.info({ tenant: row.workspace_id, event_id: row.event_id, attempts: row.attempts + 1 }, 'webhook delivered by the retrier');
    } else if (r.refused) {
      if (!await settle(row, 'refused', r.status ?? null, r.error)) return;
      outcomes.inc({ outcome: 'refused' });
      logger.warn({ tenant: row.workspace_id, event_id: row.event_id, status: r.status }, 'webhook refused by its receiver');
    } else if (row.expired) {
      if (!await settle(row, 'abandoned', r.status ?? null, r.error)) return;
      outcomes.inc({ outcome: 'abandoned' });
      logger.error({ tenant: row.workspace_id, event_id: row.event_id, attempts: row.attempts + 1, err: r.error }, 'webhook abandoned: the retry window is over');
    } else if (await settle(row, 'pending', r.status ?? null, r.error, retryDelayMs(policy, row.failing_ms))) {
      outcomes.inc({ outcome: 'retry' });
    }
  };

  const runOnce = async (): Promise<void> => {
    const free = MAX_IN_FLIGHT - inFlight.size;
    if (free <= 0) return;
    // A tenant gets what it has left of PER_TENANT; the row is locked only while still due (a
    // row another retrier claimed meanwhile is re-checked on the locked version and skipped).
    const tenants = [...perTenant.keys()];
    const due = (await asPlatform(pool, (db) => db.query<Due>(
      `UPDATE webhook_deliveries d SET next_attempt_at = now() + $1 * interval '1 millisecond', updated_at = now()
         FROM (SELECT workspace_id, event_id FROM webhook_deliveries
                WHERE (workspace_id, event_id) IN (
                        SELECT workspace_id, event_id FROM (
                          SELECT w.workspace_id, w.event_id, w.next_attempt_at, f.n AS in_flight,
                                 row_number() OVER (PARTITION BY w.workspace_id ORDER BY w.next_attempt_at) AS nth
                            FROM webhook_deliveries w
                            LEFT JOIN unnest($4::text[], $6::int[]) AS f(workspace_id, n) ON f.workspace_id = w.workspace_id
                           WHERE w.state = 'pending' AND w.next_attempt_at <= now()) c
                         WHERE nth <= $5 - coalesce(in_flight, 0) ORDER BY next_attempt_at LIMIT $2)
                  AND state = 'pending' AND next_attempt_at <= now()
                FOR UPDATE SKIP LOCKED) due
        WHERE d.workspace_id = due.workspace_id AND d.event_id = due.event_id
      RETURNING d.workspace_id, d.event_id, d.url, d.payload, d.attempts, d.next_attempt_at::text AS claimed_until,
                (extract(epoch FROM now() - d.created_at) * 1000)::float8 AS failing_ms,
                d.created_at < now() - $3 * interval '1 millisecond' AS expired`,
      [CLAIM_MS, free, policy.retryForMs, tenants, PER_TENANT, tenants.map((t) => perTenant.get(t)!)],
    ))).rows;
    for (const row of due) {
      perTenant.set(row.workspace_id, (perTenant.get(row.workspace_id) ?? 0) + 1);
      const p: Promise<void> = post(row)
        .catch((err: unknown) => logger.warn({ tenant: row.workspace_id, event_id: row.event_id, err: (err as Error).message }, 'webhook retry not recorded; the claim runs out and it is retried'))
        .finally(() => {
          inFlight.delete(p);
          const n = (perTenant.get(row.workspace_id) ?? 1) - 1;
          if (n > 0) perTenant.set(row.workspace_id, n);
          else perTenant.delete(row.workspace_id);
        });
      inFlight.add(p);
    }
  };

  const loop = pollLoop(policy.pollMs, runOnce, (err) => logger.warn({ err: (err as Error).message }, 'webhook retrier pass failed; trying again'));
  return async () => {
    await loop.stop();
    await Promise.all(inFlight); // each post ends within its 10 s timeout
  };
}
