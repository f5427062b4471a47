import { TOPICS } from '../lib/kafka';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import { PLATFORM_TENANT } from '../lib/runbooks';

/** What runbook workflows say outside their steps (an approval about to expire) on `workflow.events`. */
export function runbookActivities(deps: { events: KafkaBatcher }) {
  return {
    async publishRunbookEvent(e: { run_id: string; type: string; data: Record<string, unknown> }): Promise<void> {
      await deps.events.sendWithin(2000, TOPICS.workflowEvents, PLATFORM_TENANT, {
        id: `${e.run_id}:${e.type}`, type: e.type, tenant: PLATFORM_TENANT, workflow_id: e.run_id, occurred_at: new Date().toISOString(), data: e.data,
      });
    },
  };
}
