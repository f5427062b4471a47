import { Kafka, logLevel, type ITopicConfig } from 'kafkajs';

/** Kafka topics (DESIGN.md, "Contracts"); every record is keyed by tenant. */
export const TOPICS = {
  auditTrail: 'api.audit-trail',
  events: 'api.events',
  thirdParty: 'third-party.interactions',
  configChanges: 'api.config-changes',
  workflowEvents: 'workflow.events',
} as const;

const TWO_YEARS_MS = String(2 * 365 * 24 * 3600_000);

const topicConfigs: ITopicConfig[] = [
  // The audit trail is append-only history: delete-by-age, never compacted on the tenant key.
  { topic: TOPICS.auditTrail, numPartitions: 6, configEntries: [{ name: 'cleanup.policy', value: 'delete' }, { name: 'retention.ms', value: TWO_YEARS_MS }] },
  { topic: TOPICS.events, numPartitions: 6 },
  { topic: TOPICS.thirdParty, numPartitions: 6 },
  { topic: TOPICS.configChanges, numPartitions: 3, configEntries: [{ name: 'retention.ms', value: TWO_YEARS_MS }] },
  { topic: TOPICS.workflowEvents, numPartitions: 6 },
];

export function createKafka(brokers: string[], clientId: string): Kafka {
  return new Kafka({ clientId, brokers, logLevel: logLevel.NOTHING, retry: { retries: 5, initialRetryTime: 200 } });
}

/** Creates the contract topics that are missing; existing ones are left as they are. */
export async function ensureTopics(kafka: Kafka, replicationFactor = 1): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const existing = new Set(await admin.listTopics());
    const missing = topicConfigs.filter((t) => !existing.has(t.topic)).map((t) => ({ ...t, replicationFactor }));
    if (missing.length) await admin.createTopics({ topics: missing, waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}
