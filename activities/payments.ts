import { ApplicationFailure } from '@temporalio/activity';
import type { Registry } from 'prom-client';
import { TOPICS } from '../lib/kafka';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import type { Logger } from '../lib/logger';
import { prom } from '../lib/metrics';
import { chargeKeyOf, type PaymentContext, type PaymentInput, type WorkflowEvent } from '../lib/payments';
import { inWorkspace } from '../lib/postgres';
import type { ThirdPartyClient } from '../lib/third-party/client';
import { PAYMENTS_SERVICE } from '../lib/third-party/services';
import { callFromActivity } from './third-party';
import { postSignedWebhook, type WebhookDeps } from './webhooks';

export type PaymentDeps = WebhookDeps & { thirdParty: ThirdPartyClient; events: KafkaBatcher; logger: Logger; registry?: Registry };

/** Defaults for a tenant without a payment_settings row (minor units). */
const DEFAULT_SETTINGS = { approval_threshold: 100_000, max_amount: 10_000_000, currencies: null as string[] | null };
const ISO_4217 = new Set(Intl.supportedValuesOf('currency'));
/** A permanent provider answer: refused, never retried. */
const REFUSED = 'PaymentRejected';
const EVENT_WAIT_MS = 2000;

type Charge = { id: string; status: string; amount: number; amount_refunded: number; refunded: boolean; currency: string; metadata?: Record<string, string> };
type Refund = { id: string; amount: number };
type ProviderError = { error?: { type?: string; code?: string; decline_code?: string; charge?: string; param?: string } };

const invalid = (field: string, code: string, message: string) => ApplicationFailure.nonRetryable(message, 'PaymentInvalid', { field, code });

/** The steps of `processPayment` (workflows/payment.ts); each writes its event to `workflow.events`. */
export function paymentActivities(deps: PaymentDeps) {
  const outcomes = deps.registry
    ? new prom.Counter({ name: 'payment_outcomes_total', help: 'Payments by final outcome', labelNames: ['outcome'], registers: [deps.registry] })
    : undefined;
  const alerts = deps.registry
    ? new prom.Counter({ name: 'payment_alerts_total', help: 'Payments that failed for good and need an operator', labelNames: ['reason'], registers: [deps.registry] })
    : undefined;

  const event = async (ctx: PaymentContext, type: string, data: Record<string, unknown> = {}): Promise<void> => {
    const record: WorkflowEvent = {
      id: `${ctx.payment_id}:${type}`, type, tenant: ctx.tenant, workflow_id: ctx.payment_id, workflow_type: 'process-payment',
      correlation_id: ctx.correlation_id, occurred_at: new Date().toISOString(), data,
    };
    if (!(await deps.events.sendWithin(EVENT_WAIT_MS, TOPICS.workflowEvents, ctx.tenant, record))) {
      deps.logger.warn({ event: type, payment_id: ctx.payment_id }, 'workflow event queued: kafka slow or down');
    }
  };

  // A charge or refund (POST) is waited for even when the payment is cancelled meanwhile: a charge
  // abandoned while the provider makes it would land after the refund looked for it.
  const provider = (ctx: PaymentContext, method: 'GET' | 'POST', path: string, body?: unknown, idempotencyKey?: string) =>
    callFromActivity(deps.thirdParty, { tenant: ctx.tenant, service: PAYMENTS_SERVICE, method, path, body, correlationId: ctx.correlation_id, idempotencyKey }, { untilAnswered: method === 'POST' });

  /** The provider's charges made under an idempotency key. */
  const chargesUnder = async (ctx: PaymentContext, key: string): Promise<Charge[]> => {
    const found = await provider(ctx, 'GET', `/v1/charges?idempotency_key=${encodeURIComponent(key)}`);
    if (found.status >= 400) throw refusal(found.status, found.body, 'the charge lookup');
    return (found.body as { data?: Charge[] }).data ?? [];
  };

  /** 401/403 may be a rotation in progress (the client already re-read the key once): retry later. */
  const refusal = (status: number, body: unknown, what: string) => {
    const e = (body as ProviderError)?.error;
    if (status === 401 || status === 403) return ApplicationFailure.retryable(`provider refused the credential for ${what} (${status})`, 'ThirdPartyAuth');
    if (status === 409 || status === 429) return ApplicationFailure.retryable(`provider asked to retry ${what} (${status})`, 'ProviderBusy');
    return ApplicationFailure.nonRetryable(`provider refused ${what}: ${status} ${e?.code ?? ''}`.trim(), REFUSED, { status, code: e?.code, param: e?.param });
  };

  return {
    /** Amount, currency and the tenant's limits; says whether the amount needs an approval. */
    async validatePayment(ctx: PaymentContext, input: PaymentInput): Promise<{ approval_required: boolean; approval_threshold: number }> {
      if (!Number.isSafeInteger(input.amount) || input.amount <= 0) throw invalid('amount', 'not_positive', 'amount must be a positive integer in minor units');
      if (!ISO_4217.has(input.currency)) throw invalid('currency', 'unknown_currency', `${input.currency} is not an ISO 4217 currency`);
      const row = await inWorkspace(deps.pool, ctx.tenant, async (db) =>
        (await db.query<{ approval_threshold: string; max_amount: string; currencies: string[] | null }>(
          'SELECT approval_threshold, max_amount, currencies FROM payment_settings WHERE workspace_id = $1', [ctx.tenant])).rows[0]);
      const limits = row ? { approval_threshold: Number(row.approval_threshold), max_amount: Number(row.max_amount), currencies: row.currencies } : DEFAULT_SETTINGS;
      if (limits.currencies && !limits.currencies.includes(input.currency)) throw invalid('currency', 'currency_not_allowed', `${input.currency} is not enabled for this tenant`);
      if (input.amount > limits.max_amount) throw invalid('amount', 'over_limit', `amount is over the tenant's limit of ${limits.max_amount}`);
      const approval_required = input.amount > limits.approval_threshold;
      await event(ctx, 'payment.validated', { amount: input.amount, currency: input.currency, approval_required });
      return { approval_required, approval_threshold: limits.approval_threshold };
    },

    /**
     * Charges through the provider with an idempotency key derived from the tenant and the
     * business key (or the execution): a retry, a crashed worker or a second run with the same
     * key gets the first charge back instead of a new one. A decline is a typed business failure.
     */
    async chargePayment(ctx: PaymentContext, input: PaymentInput): Promise<{ charge_id: string }> {
      // The provider forgets a key after a day: the key's owner, and a charge this payment already
      // booked, are kept here for good. Claimed before the call, so a crash after it changes nothing;
      // given back when the provider charged nothing for good (a decline, a refusal), so the key can
      // be paid with later, as the provider itself would allow.
      const key = chargeKeyOf(ctx, input);
      const { owner, booked } = await inWorkspace(deps.pool, ctx.tenant, async (db) => (await db.query<{ owner: string; booked: string | null }>(
        `WITH claim AS (
           INSERT INTO payment_keys (workspace_id, charge_key, payment_id) VALUES ($1, $2, $3)
           ON CONFLICT (workspace_id, charge_key) DO UPDATE SET charge_key = EXCLUDED.charge_key RETURNING payment_id)
         SELECT c.payment_id AS owner, p.charge_id AS booked FROM claim c LEFT JOIN payments p ON p.workspace_id = $1 AND p.payment_id = c.payment_id`,
        [ctx.tenant, key, ctx.payment_id])).rows[0]!);
      if (owner !== ctx.payment_id) {
        const charge = booked ?? (await chargesUnder(ctx, key).catch(() => []))[0]?.id;
        throw ApplicationFailure.nonRetryable(`idempotency key already used by payment ${owner}`, 'PaymentDuplicate', { charge_id: charge, payment_id: owner });
      }
      // Booked already (this execution id ran before, past the provider's memory): that charge stands.
      if (booked) return { charge_id: booked };
      const release = () => inWorkspace(deps.pool, ctx.tenant, (db) => db.query('DELETE FROM payment_keys WHERE workspace_id = $1 AND charge_key = $2 AND payment_id = $3', [ctx.tenant, key, ctx.payment_id]));
      const res = await provider(ctx, 'POST', '/v1/charges', {
        amount: input.amount, currency: input.currency.toLowerCase(), source: input.payment_method, description: input.description,
        metadata: { payment_id: ctx.payment_id, tenant: ctx.tenant, payer: input.payer.id },
      }, key);
      if (res.status === 402) {
        await release();
        const e = (res.body as ProviderError).error;
        outcomes?.inc({ outcome: 'declined' });
        await event(ctx, 'payment.declined', { decline_code: e?.decline_code ?? e?.code, charge_id: e?.charge });
        throw ApplicationFailure.nonRetryable(`card declined: ${e?.decline_code ?? e?.code ?? 'declined'}`, 'PaymentDeclined', { decline_code: e?.decline_code ?? e?.code, charge_id: e?.charge });
      }
      if (res.status === 400 && (res.body as ProviderError).error?.code === 'idempotency_key_in_use') {
        // The business key charged another payment already (its parameters differ from ours).
        await release();
        const original = (await chargesUnder(ctx, key))[0];
        throw ApplicationFailure.nonRetryable(`idempotency key already used by payment ${original?.metadata?.payment_id ?? 'unknown'}`, 'PaymentDuplicate', {
          charge_id: original?.id, payment_id: original?.metadata?.payment_id,
        });
      }
      if (res.status >= 400) {
        const refused = refusal(res.status, res.body, 'the charge');
        if (refused.nonRetryable) await release();
        throw refused;
      }
      const charge = res.body as Charge;
      if (charge.metadata?.payment_id !== ctx.payment_id) {
        // The business key was used by another payment already: its charge is not ours to book.
        await release();
        throw ApplicationFailure.nonRetryable(`idempotency key already used by payment ${charge.metadata?.payment_id}`, 'PaymentDuplicate', { charge_id: charge.id, payment_id: charge.metadata?.payment_id });
      }
      await event(ctx, 'payment.charged', { charge_id: charge.id, amount: charge.amount, currency: charge.currency, attempts: res.attempts });
      return { charge_id: charge.id };
    },

    /** Compensation of the charge: refunds whatever the provider charged under the payment's key (nothing when it charged nothing). */
    async refundPayment(ctx: PaymentContext, input: PaymentInput): Promise<{ refunded: boolean; refund_id?: string }> {
      const key = chargeKeyOf(ctx, input);
      const charge = (await chargesUnder(ctx, key)).find((c) => c.status === 'succeeded' && c.metadata?.payment_id === ctx.payment_id);
      if (!charge) return { refunded: false };
      // The event has the same id whoever sends it, so consumers see one.
      const refunded = async (refund: Refund) => {
        await event(ctx, 'payment.refunded', { charge_id: charge.id, refund_id: refund.id, amount: refund.amount });
        return { refunded: true, refund_id: refund.id };
      };
      if (charge.refunded) {
        // Refunded by an earlier attempt whose answer was lost (or the provider forgot its key): that refund is the answer.
        const found = await provider(ctx, 'GET', `/v1/refunds?charge=${encodeURIComponent(charge.id)}`);
        if (found.status >= 400) throw refusal(found.status, found.body, 'the refund lookup');
        const refund = (found.body as { data?: Refund[] }).data?.[0];
        return refund ? refunded(refund) : { refunded: true };
      }
      const res = await provider(ctx, 'POST', '/v1/refunds', { charge: charge.id }, `${key}:refund`);
      if (res.status >= 400) throw refusal(res.status, res.body, 'the refund');
      return refunded(res.body as Refund);
    },

    /** Books the charge: one payments row and a balanced debit/credit pair, idempotent per payment. */
    async recordLedger(ctx: PaymentContext, input: PaymentInput, chargeId: string): Promise<{ entries: number }> {
      try {
        const entries = await inWorkspace(deps.pool, ctx.tenant, async (db) => {
          await db.query(
            `INSERT INTO payments (workspace_id, payment_id, charge_id, amount, currency, payer, description)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
            [ctx.tenant, ctx.payment_id, chargeId, input.amount, input.currency, input.payer.id, input.description ?? null]);
          const r = await db.query(
            `INSERT INTO ledger_entries (workspace_id, payment_id, kind, side, account, amount, currency)
             VALUES ($1, $2, 'charge', 'debit', $3, $4, $5), ($1, $2, 'charge', 'credit', 'revenue', $4, $5) ON CONFLICT DO NOTHING`,
            [ctx.tenant, ctx.payment_id, `provider:${PAYMENTS_SERVICE}`, input.amount, input.currency]);
          return r.rowCount ?? 0;
        });
        await event(ctx, 'payment.ledger_recorded', { charge_id: chargeId, entries: 2 });
        return { entries };
      } catch (err) {
        const code = (err as { code?: string }).code;
        // A constraint or a rule refusing the booking will refuse it again: no point retrying.
        if (code === '23514' || code === 'P0001' || code === '23503') {
          throw ApplicationFailure.nonRetryable(`ledger refused the payment: ${(err as Error).message}`, 'LedgerRejected', { sqlstate: code });
        }
        throw err;
      }
    },

    /** Compensation of the booking: the reverse pair, once, only if the charge was booked. */
    async reverseLedger(ctx: PaymentContext): Promise<{ entries: number }> {
      const entries = await inWorkspace(deps.pool, ctx.tenant, async (db) => {
        const r = await db.query(
          `INSERT INTO ledger_entries (workspace_id, payment_id, kind, side, account, amount, currency)
           SELECT workspace_id, payment_id, 'refund', CASE side WHEN 'debit' THEN 'credit' ELSE 'debit' END, account, amount, currency
             FROM ledger_entries WHERE workspace_id = $1 AND payment_id = $2 AND kind = 'charge'
           ON CONFLICT DO NOTHING`, [ctx.tenant, ctx.payment_id]);
        return r.rowCount ?? 0;
      });
      if (entries) await event(ctx, 'payment.ledger_reversed', { entries });
      return { entries };
    },

    /** Tells the client: a signed `payment.confirmed` webhook when it gave a callback URL, and the event. */
    async notifyPayment(ctx: PaymentContext, payment: { charge_id: string; amount: number; currency: string; callback_url?: string }): Promise<{ webhook: boolean }> {
      const data = { payment_id: ctx.payment_id, charge_id: payment.charge_id, amount: payment.amount, currency: payment.currency, state: 'CONFIRMED' };
      if (payment.callback_url) {
        await postSignedWebhook(deps, ctx.tenant, payment.callback_url, `${ctx.payment_id}:payment.confirmed`, {
          id: `${ctx.payment_id}:payment.confirmed`, type: 'payment.confirmed', tenant: ctx.tenant, execution_id: ctx.payment_id,
          correlation_id: ctx.correlation_id, occurred_at: new Date().toISOString(), data,
        });
      }
      outcomes?.inc({ outcome: 'confirmed' });
      await event(ctx, 'payment.confirmed', data);
      return { webhook: Boolean(payment.callback_url) };
    },

    /** A step of the workflow's own (approval, cancellation) on `workflow.events`. */
    async publishPaymentEvent(ctx: PaymentContext, type: string, data: Record<string, unknown>): Promise<void> {
      await event(ctx, type, data);
    },

    /** A payment that failed for good: a metric, an error log and a `payment.alert` event for the operator. */
    async raisePaymentAlert(ctx: PaymentContext, alert: { reason: string; state: string; error: string; refunded: boolean }): Promise<void> {
      alerts?.inc({ reason: alert.reason });
      outcomes?.inc({ outcome: 'failed' });
      deps.logger.error({ payment_id: ctx.payment_id, tenant: ctx.tenant, alert }, 'payment failed and needs an operator');
      await event(ctx, 'payment.alert', alert);
    },
  };
}
