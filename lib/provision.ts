import { Connection, ScheduleNotFoundError, ScheduleOverlapPolicy } from '@temporalio/client';
import { temporal as proto } from '@temporalio/proto';
import { findRunbook, PLATFORM_TENANT } from './runbooks';
import { SECRETS } from './secrets';
import { connectTemporal } from './temporal';
import type { RunbookInput } from './workflow-runbooks';
import type { Config } from './config';
import { createKafka, ensureTopics } from './kafka';
import { connectNats, ensureStreams } from './nats';
import { createPool, migrate } from './postgres';
import { createVault, ensureKvMount } from './vault';
import { SA } from './workflow-search-attributes';

const IndexedValueType = proto.api.enums.v1.IndexedValueType;
/** Temporal's indexed value type for each of our search attribute types. */
export const SA_INDEXED_TYPES: Record<string, number> = {
  KEYWORD: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  INT: IndexedValueType.INDEXED_VALUE_TYPE_INT,
};

/** Registers Flowgate's search attributes on a Temporal namespace, if missing. */
export async function ensureSearchAttributes(address: string, namespace: string): Promise<void> {
  const connection = await Connection.connect({ address });
  try {
    const existing = await connection.operatorService.listSearchAttributes({ namespace });
    const known = new Set(Object.keys(existing.customAttributes ?? {}));
    const missing = Object.values(SA).filter((k) => !known.has(k.name));
    if (missing.length) {
      await connection.operatorService.addSearchAttributes({
        namespace,
        searchAttributes: Object.fromEntries(missing.map((k) => [k.name, SA_INDEXED_TYPES[k.type]!])),
      });
    }
  } finally {
    await connection.close();
  }
}

/**
 * Everything the platform needs to exist before its processes serve, idempotently: database
 * migrations, JetStream streams, Kafka topics, the Vault KV v2 mount, Temporal search attributes.
 */
export async function provisionPlatform(config: Config, say: (msg: string) => void = () => undefined): Promise<void> {
  const pool = createPool(config.FLOWGATE_DATABASE_OWNER_URL ?? config.FLOWGATE_DATABASE_URL, 2);
  const appRole = new URL(config.FLOWGATE_DATABASE_URL).username;
  const ownerRole = new URL(config.FLOWGATE_DATABASE_OWNER_URL ?? config.FLOWGATE_DATABASE_URL).username;
  try {
    const applied = await migrate(pool, appRole !== ownerRole ? decodeURIComponent(appRole) : undefined);
    say(`postgres migrations: ${applied.length ? applied.join(', ') : 'up to date'}`);
  } finally {
    await pool.end();
  }
  const nc = await connectNats(config.FLOWGATE_NATS_URL, 'flowgate-provision');
  try {
    await ensureStreams(nc, config.FLOWGATE_NATS_STREAM_REPLICAS);
  } finally {
    await nc.close();
  }
  say('jetstream streams ready');
  await ensureTopics(createKafka(config.FLOWGATE_KAFKA_BROKERS, 'flowgate-provision'), config.FLOWGATE_KAFKA_REPLICATION_FACTOR);
  say('kafka topics ready');
  await ensureKvMount(createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN));
  say('vault kv v2 mount ready');
  await ensureSearchAttributes(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE);
  say('temporal search attributes ready');
  say(`rotation schedules: ${(await ensureRotationSchedules(config)).join(', ') || 'up to date'}`);
}

/**
 * A Temporal Schedule per rotatable secret (lib/secrets.ts: every 30 to 90 days), starting the
 * rotate-secret runbook as the operators' API does. A run the schedule starts while another
 * rotation of the secret is open fails at once on the secret's pending label (one at a time).
 */
export async function ensureRotationSchedules(config: Config): Promise<string[]> {
  const client = await connectTemporal(config.FLOWGATE_TEMPORAL_ADDRESS, config.FLOWGATE_TEMPORAL_NAMESPACE);
  const created: string[] = [];
  try {
    const def = findRunbook('rotate-secret')!;
    for (const secret of SECRETS) {
      const params = def.params.parse({ secret: secret.path });
      const scheduleId = `rb-${def.name}-${def.exclusiveKey!(params)}`;
      try {
        await client.schedule.getHandle(scheduleId).describe();
        continue;
      } catch (err) {
        if (!(err instanceof ScheduleNotFoundError)) throw err;
      }
      const input: RunbookInput = { params, requested_by: 'schedule', dry_run: false };
      await client.schedule.create({
        scheduleId,
        spec: { intervals: [{ every: `${secret.rotateEveryDays} days` }] },
        action: {
          type: 'startWorkflow', workflowType: def.workflow, workflowId: scheduleId, taskQueue: config.FLOWGATE_TASK_QUEUE, args: [input],
          memo: { tenant: PLATFORM_TENANT, workflow_type: def.name, correlation_id: scheduleId, accepted_at: new Date().toISOString() },
          typedSearchAttributes: [{ key: SA.tenant, value: PLATFORM_TENANT }],
        },
        policies: { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 day' },
      });
      created.push(scheduleId);
    }
  } finally {
    await client.connection.close();
  }
  return created;
}
