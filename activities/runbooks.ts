import type { Registry } from 'prom-client';
import { TOPICS } from '../lib/kafka';
import { prom } from '../lib/metrics';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import { PLATFORM_TENANT } from '../lib/runbooks';

/** What runbook workflows say outside their steps (an approval about to expire) on `workflow.events`. */
export function runbookActivities(deps: { events: KafkaBatcher; registry?: Registry }) {
  // Labelled by event type only (a handful), never by run.
  const published = deps.registry
    ? new prom.Counter({ name: 'runbook_events_total', help: 'Runbook events published (runbook.approval_expiring: an approval is about to expire)', labelNames: ['type'], registers: [deps.registry] })
    : undefined;
  return {
    async publishRunbookEvent(e: { run_id: string; type: string; data: Record<string, unknown> }): Promise<void> {
      published?.inc({ type: e.type });
      await deps.events.sendWithin(2000, TOPICS.workflowEvents, PLATFORM_TENANT, {
        id: `${e.run_id}:${e.type}`, type: e.type, tenant: PLATFORM_TENANT, workflow_id: e.run_id, occurred_at: new Date().toISOString(), data: e.data,
      });
    },
  };
}
