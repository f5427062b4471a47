import { z } from 'zod';

/** A payment's states, after seed 002's order state machine; reported as `state` by the status API. */
export const PAYMENT_STATES = ['PENDING', 'AWAITING_APPROVAL', 'PAYMENT_PROCESSING', 'CONFIRMED', 'PAYMENT_FAILED', 'CANCELLED', 'REFUNDED'] as const;
export type PaymentState = (typeof PAYMENT_STATES)[number];

/** `process-payment`'s input. Amounts are integers in the currency's minor unit (cents). */
export const paymentInput = z
  .object({
    amount: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
    currency: z.string().regex(/^[A-Z]{3}$/, 'an ISO 4217 code in capitals, e.g. EUR'),
    payer: z.object({ id: z.string().min(1).max(200), email: z.email().optional() }).strict(),
    payment_method: z.string().min(1).max(200),
    description: z.string().max(500).optional(),
    /** The business's key: two payments with the same key (per tenant) charge once. */
    idempotency_key: z.string().min(1).max(200).optional(),
    /** Who asked for it; they may not approve it themselves (defaults to the payer). */
    requested_by: z.string().min(1).max(200).optional(),
    approval_timeout_seconds: z.number().int().min(1).max(30 * 86_400).optional(),
  })
  .strict();
export type PaymentInput = z.infer<typeof paymentInput>;

/** Who a payment's activities act for; passed to every one of them. */
export type PaymentContext = { tenant: string; payment_id: string; correlation_id: string };

export type PaymentResult = {
  state: PaymentState;
  payment_id: string;
  amount: number;
  currency: string;
  charge_id?: string;
  refund_id?: string;
  /** Why a payment ended without a charge: `declined`, `invalid`, `rejected`, `approval_expired`. */
  reason?: string;
  decline_code?: string;
  approved_by?: string;
  field?: string;
};

/** The provider's idempotency key of a payment's charge: the same business key never charges twice. */
export const chargeKeyOf = (ctx: PaymentContext, input: Pick<PaymentInput, 'idempotency_key'>) =>
  `fg:${ctx.tenant}:${input.idempotency_key ? `key:${input.idempotency_key}` : `run:${ctx.payment_id}`}`;

/** A record on Kafka `workflow.events`, keyed by tenant; `id` lets consumers drop repeats. */
export type WorkflowEvent = {
  id: string;
  type: string;
  tenant: string;
  workflow_id: string;
  workflow_type: string;
  correlation_id: string;
  occurred_at: string;
  data: Record<string, unknown>;
};
