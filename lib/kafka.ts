import { Kafka, logLevel, type Admin, type ITopicConfig } from 'kafkajs';
import type { Registry } from 'prom-client';
import { prom } from './metrics';
import { commitOffsetsAsAdmin } from './kafka-platformatic';

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
    // Replicated: a write is acknowledged by two in-sync copies, so one broker lost loses nothing.
    const durability = replicationFactor >= 3 ? [{ name: 'min.insync.replicas', value: '2' }] : [];
    const missing = topicConfigs.filter((t) => !existing.has(t.topic))
      .map((t) => ({ ...t, replicationFactor, configEntries: [...(t.configEntries ?? []), ...durability] }));
    if (missing.length) await admin.createTopics({ topics: missing, waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }
}

/** A consumer group's lag on one topic: the sum over partitions of (high watermark − committed offset). */
export async function consumerGroupLag(admin: Admin, groupId: string, topic: string): Promise<number> {
  const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(topic), admin.fetchOffsets({ groupId, topics: [topic] })]);
  const done = new Map((committed.find((t) => t.topic === topic)?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
  let lag = 0;
  for (const p of ends) {
    const at = done.get(p.partition) ?? -1;
    // -1: the group has committed nothing there yet (it starts at the end, so nothing is behind).
    if (at >= 0) lag += Math.max(0, Number(p.high) - at);
  }
  return lag;
}

/**
 * Commits the current end of `topic` for each partition where `groupId` has committed nothing yet,
 * so that a consumer subscribing with `fromBeginning: false` starts there once and never again
 * "at the end". Without this, a partition that has not carried a record for the group since it
 * was created has no committed offset: a record landing there while no member runs (a crash, a
 * deploy) is skipped, because the next member starts at the end. Run it before the consumer joins.
 *
 * A group with members already running is left alone (they pinned it when they started): what it
 * returns says so. Returns the partitions it pinned.
 */
export async function pinUncommittedPartitions(kafka: Kafka, brokers: string[], groupId: string, topic: string): Promise<{ pinned: number[]; groupRunning: boolean }> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    // A broker that has just started answers NOT_COORDINATOR until its offsets topic is ready;
    // kafkajs's admin does not retry that here (its consumer does, when it joins).
    for (let attempt = 1; ; attempt++) {
      try {
        return await pin(admin, brokers, groupId, topic);
      } catch (err) {
        if (attempt >= 30 || (err as { retriable?: boolean }).retriable !== true) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  } finally {
    await admin.disconnect();
  }
}

async function pin(admin: Admin, brokers: string[], groupId: string, topic: string): Promise<{ pinned: number[]; groupRunning: boolean }> {
  const [committed] = await admin.fetchOffsets({ groupId, topics: [topic] });
  const done = new Set((committed?.partitions ?? []).filter((p) => Number(p.offset) >= 0).map((p) => p.partition));
  const ends = (await admin.fetchTopicOffsets(topic)).filter((p) => !done.has(p.partition));
  if (!ends.length) return { pinned: [], groupRunning: false };
  const { state } = await admin.describeGroups([groupId]).then((d) => d.groups[0] ?? { state: 'Dead' });
  if (state !== 'Empty' && state !== 'Dead') return { pinned: [], groupRunning: true };
  // The broker refuses this commit for a group that gained a member meanwhile; the caller's join
  // then proceeds as without the pin (a race only between replicas starting at the same moment).
  await commitOffsetsAsAdmin(brokers, groupId, topic, ends.map((p) => ({ partition: p.partition, offset: BigInt(p.high) })));
  return { pinned: ends.map((p) => p.partition).sort((a, b) => a - b), groupRunning: false };
}

/**
 * `kafka_consumer_group_lag{group,topic}`, read from the brokers when Prometheus scrapes (at most
 * every 5 s); an unreachable broker leaves the last value and says so in `kafka_consumer_group_lag_error`.
 */
export function registerConsumerLag(kafka: Kafka, registry: Registry, groupId: string, topic: string): { close(): Promise<void> } {
  let admin: Admin | undefined;
  let last: { at: number; lag: number; ok: boolean } | undefined;
  const read = async () => {
    if (last && Date.now() - last.at < 5000) return last;
    try {
      if (!admin) {
        admin = kafka.admin();
        await admin.connect();
      }
      last = { at: Date.now(), lag: await consumerGroupLag(admin, groupId, topic), ok: true };
    } catch {
      last = { at: Date.now(), lag: last?.lag ?? 0, ok: false };
    }
    return last;
  };
  new prom.Gauge({
    name: 'kafka_consumer_group_lag', help: 'Records the consumer group has not yet committed, summed over partitions', labelNames: ['group', 'topic'], registers: [registry],
    async collect() { this.set({ group: groupId, topic }, (await read()).lag); },
  });
  new prom.Gauge({
    name: 'kafka_consumer_group_lag_error', help: '1 when the last lag reading failed', labelNames: ['group', 'topic'], registers: [registry],
    async collect() { this.set({ group: groupId, topic }, (await read()).ok ? 0 : 1); },
  });
  return { close: async () => { await admin?.disconnect(); } };
}
