import { z } from 'zod';

/** Who made a request, as the gateway authenticated it (a consumer of the workspace). */
export const callerSchema = z.object({ consumer_id: z.string().min(1), username: z.string() });
export type Caller = z.infer<typeof callerSchema>;

/**
 * What the gateway (or a Kafka event rule) publishes on `workflow.triggers.{tenant}`, with
 * Nats-Msg-Id = execution_id, and what the trigger consumers start workflows from.
 */
export const triggerMessageSchema = z.object({
  execution_id: z.string().min(1),
  tenant: z.string().min(1),
  workflow_type: z.string().min(1),
  input: z.unknown(),
  correlation_id: z.string().min(1),
  accepted_at: z.string(),
  callback_url: z.string().url().optional(),
  source: z.enum(['api', 'route', 'event']).default('api'),
  /** The authenticated caller of a start through the gateway (none for an event rule's). */
  requested_by: callerSchema.optional(),
});
export type TriggerMessage = z.infer<typeof triggerMessageSchema>;

/** What the gateway publishes on `workflow.signals.{tenant}`. */
export const signalMessageSchema = z.object({
  execution_id: z.string().min(1),
  tenant: z.string().min(1),
  signal: z.string().min(1),
  payload: z.unknown(),
  correlation_id: z.string().min(1),
  /** The authenticated caller; the workflow gets it as the signal's second argument. */
  sent_by: callerSchema.optional(),
});
export type SignalMessage = z.infer<typeof signalMessageSchema>;

/** The memo a workflow is started with, read back by the status API and by webhooks. */
export type ExecutionMemo = {
  tenant: string;
  workflow_type: string;
  correlation_id: string;
  accepted_at: string;
  callback_url?: string;
  /** Who started it through the gateway: an approval cannot come from them. */
  requested_by?: Caller;
};
