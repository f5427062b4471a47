import { z } from 'zod';

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
});
export type TriggerMessage = z.infer<typeof triggerMessageSchema>;

/** What the gateway publishes on `workflow.signals.{tenant}`. */
export const signalMessageSchema = z.object({
  execution_id: z.string().min(1),
  tenant: z.string().min(1),
  signal: z.string().min(1),
  payload: z.unknown(),
  correlation_id: z.string().min(1),
});
export type SignalMessage = z.infer<typeof signalMessageSchema>;

/** The memo a workflow is started with, read back by the status API and by webhooks. */
export type ExecutionMemo = {
  tenant: string;
  workflow_type: string;
  correlation_id: string;
  accepted_at: string;
  callback_url?: string;
};
