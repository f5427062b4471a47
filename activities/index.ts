import type { Pool } from 'pg';
import type { Registry } from 'prom-client';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import type { Logger } from '../lib/logger';
import type { ThirdPartyClient } from '../lib/third-party/client';
import { composeGreeting } from './greeting';
import { paymentActivities } from './payments';
import { thirdPartyActivities } from './third-party';
import { webhookActivities } from './webhooks';

/** The clients activities share; created once by the worker, never per call. */
export type ActivityDeps = {
  logger: Logger;
  pool: Pool;
  thirdParty: ThirdPartyClient;
  /** Kafka `workflow.events` and other records, batched. */
  events: KafkaBatcher;
  registry?: Registry;
};

/** Every activity the worker registers, closed over its clients. */
export function createActivities(deps: ActivityDeps) {
  return {
    composeGreeting,
    noop: async (): Promise<void> => undefined,
    ...webhookActivities(deps),
    ...thirdPartyActivities(deps),
    ...paymentActivities(deps),
  };
}
