import type { Client } from '@temporalio/client';
import { WorkflowNotFoundError } from '@temporalio/common';
import { DependencyUnavailableError, PoisonMessageError } from '../lib/jetstream-worker';
import { isUnavailable } from './starter';
import type { SignalMessage } from '../lib/trigger-message';
import { SA } from '../lib/workflow-search-attributes';

/** Delivers one signal from `workflow.signals.{tenant}`, only to a workflow of that tenant. */
export async function deliverSignal(client: Client, msg: SignalMessage): Promise<void> {
  const handle = client.workflow.getHandle(msg.execution_id);
  try {
    const d = await handle.describe();
    if (d.typedSearchAttributes.get(SA.tenant) !== msg.tenant) throw new PoisonMessageError('execution belongs to another tenant');
    if (d.status.name !== 'RUNNING') throw new PoisonMessageError(`execution is ${d.status.name}`);
    // The caller as the gateway authenticated it, after the payload: approvals check it is not the requester.
    await handle.signal(msg.signal, ...(msg.sent_by ? [msg.payload, msg.sent_by] : [msg.payload]));
  } catch (err) {
    if (err instanceof WorkflowNotFoundError) throw new PoisonMessageError('execution not found');
    if (isUnavailable(err)) throw new DependencyUnavailableError(`temporal unavailable: ${(err as Error).message}`);
    throw err;
  }
}
