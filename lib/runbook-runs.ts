import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { WorkflowIdConflictPolicy, WorkflowIdReusePolicy } from '@temporalio/common';
import { PLATFORM_TENANT, type RunbookDef } from './runbooks';
import type { RunbookInput } from './workflow-runbooks';
import { SA } from './workflow-search-attributes';

/** A run's id: an exclusive runbook's names its target, so Temporal itself refuses a second run while one is open. */
export const runIdOf = (def: RunbookDef, params: Record<string, unknown>, dryRun: boolean) =>
  def.exclusiveKey && !dryRun ? `rb-${def.name}-${def.exclusiveKey(params)}` : `rb-${def.name}-${randomUUID()}`;

/**
 * Starts a run of a runbook with parameters its schema has already parsed. Throws
 * WorkflowExecutionAlreadyStartedError while a run for the same target is open.
 */
export async function startRunbookRun(temporal: Client, taskQueue: string, def: RunbookDef, params: Record<string, unknown>,
  opts: { requestedBy: string; dryRun: boolean; correlationId: string }): Promise<string> {
  const id = runIdOf(def, params, opts.dryRun);
  const input: RunbookInput = { params, requested_by: opts.requestedBy, dry_run: opts.dryRun };
  await temporal.workflow.start(def.workflow, {
    workflowId: id, taskQueue, args: [input],
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.FAIL, workflowIdReusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE,
    memo: { tenant: PLATFORM_TENANT, workflow_type: def.name, correlation_id: opts.correlationId, accepted_at: new Date().toISOString() },
    typedSearchAttributes: [{ key: SA.tenant, value: PLATFORM_TENANT }, { key: SA.correlationId, value: opts.correlationId }],
  });
  return id;
}
