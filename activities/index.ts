import type { NatsConnection } from 'nats';
import type { Pool } from 'pg';
import type { Registry } from 'prom-client';
import type { KafkaBatcher } from '../lib/kafka-batcher';
import type { Logger } from '../lib/logger';
import type { WebhookTargets } from '../lib/webhook-deliveries';
import type { ThirdPartyClient } from '../lib/third-party/client';
import type { ThirdPartyService } from '../lib/third-party/services';
import type { VaultClient } from '../lib/vault';
import { backupActivities } from './backup-drill';
import { failoverActivities } from './database-failover';
import { composeGreeting } from './greeting';
import { instanceLossActivities } from './instance-loss';
import { paymentActivities } from './payments';
import { rolloutActivities } from './rollout';
import { runbookActivities } from './runbooks';
import { secretActivities } from './secrets';
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
  vault: VaultClient;
  nats?: NatsConnection;
  /** PostgreSQL's address for runbooks that act on it (the login comes from Vault). */
  databaseUrl: string;
  databaseCluster?: string;
  /** PostgreSQL's programs (pg_dump, pg_restore, initdb, postgres), for the backup drill. */
  pgBin?: string;
  /** Where the backup drill's dumps and scratch instances go. */
  backupDir?: string;
  services: ThirdPartyService[];
  /** When the webhook retrier first retries a webhook the workflow could not deliver. */
  webhookFirstRetryMs?: number;
  /** Where webhooks may go (FLOWGATE_WEBHOOK_ALLOW_PRIVATE). */
  webhookTargets: WebhookTargets;
};

/** Every activity the worker registers, closed over its clients. */
export function createActivities(deps: ActivityDeps) {
  return {
    composeGreeting,
    noop: async (): Promise<void> => undefined,
    ...webhookActivities(deps),
    ...thirdPartyActivities(deps),
    ...paymentActivities(deps),
    ...secretActivities(deps),
    ...runbookActivities(deps),
    ...rolloutActivities(deps),
    ...failoverActivities(deps),
    ...backupActivities(deps),
    ...instanceLossActivities(deps),
  };
}
