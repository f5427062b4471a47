import { ServiceError, type Client } from '@temporalio/client';
import { DependencyUnavailableError } from '../lib/jetstream-worker';
import { startWorkflow } from '../lib/start-workflow';
import type { TriggerMessage } from '../lib/trigger-message';
import { findWorkflowType } from '../lib/workflow-registry';

export type StartOutcome = 'started' | 'already_started';

const START_DEADLINE_MS = 5_000;
/** gRPC UNAVAILABLE (14) and DEADLINE_EXCEEDED (4): Temporal is away, not the request at fault. */
const OUTAGE_CODES = new Set([4, 14]);

export function isUnavailable(err: unknown): boolean {
  const e = err as { code?: number; cause?: { code?: number } };
  return (err instanceof ServiceError && OUTAGE_CODES.has(e.cause?.code ?? -1)) || OUTAGE_CODES.has(e.code ?? -1);
}

/** A trigger that can never start (unknown type, invalid input): dead-letter it at once. */
export class PoisonTriggerError extends Error {}

/**
 * Starts the workflow of one trigger with workflow id = execution id, so a redelivered trigger
 * never starts a second run.
 */
export async function startFromTrigger(client: Client, taskQueue: string, msg: TriggerMessage): Promise<StartOutcome> {
  const def = findWorkflowType(msg.workflow_type);
  if (!def) throw new PoisonTriggerError(`unknown workflow type ${msg.workflow_type}`);
  const parsed = def.input.safeParse(msg.input);
  if (!parsed.success) throw new PoisonTriggerError(`input not valid for ${def.name}: ${parsed.error.message}`);
  try {
    const { started } = await startWorkflow(client, {
      def, executionId: msg.execution_id, tenant: msg.tenant, correlationId: msg.correlation_id, acceptedAt: msg.accepted_at,
      input: parsed.data, taskQueue, callbackUrl: msg.callback_url, requestedBy: msg.requested_by, deadlineMs: START_DEADLINE_MS,
    });
    return started ? 'started' : 'already_started';
  } catch (err) {
    if (isUnavailable(err)) throw new DependencyUnavailableError(`temporal unavailable: ${(err as Error).message}`);
    throw err;
  }
}
