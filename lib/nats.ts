import {
  connect,
  RetentionPolicy,
  StorageType,
  DiscardPolicy,
  type JetStreamClient,
  type KV,
  type NatsConnection,
  type StreamConfig,
  nanos,
} from 'nats';

/** NATS subjects (DESIGN.md, "Contracts"). */
export const subjects = {
  trigger: (tenant: string) => `workflow.triggers.${tenant}`,
  signal: (tenant: string) => `workflow.signals.${tenant}`,
  deadLetter: (kind: 'triggers' | 'signals', tenant: string) => `workflow.dead-letters.${kind}.${tenant}`,
  configInvalidations: 'config.invalidations',
  heartbeats: 'health.heartbeats',
} as const;

export const STREAMS = {
  triggers: 'FLOWGATE_TRIGGERS',
  signals: 'FLOWGATE_SIGNALS',
  deadLetters: 'FLOWGATE_DEAD_LETTERS',
} as const;

/** Retries of one trigger within this window are dropped by JetStream (Nats-Msg-Id). */
export const TRIGGER_DEDUP_WINDOW_MS = 10 * 60_000;

const streamConfigs: Partial<StreamConfig>[] = [
  {
    name: STREAMS.triggers,
    subjects: ['workflow.triggers.*'],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: nanos(TRIGGER_DEDUP_WINDOW_MS),
    discard: DiscardPolicy.New,
    max_bytes: 1024 * 1024 * 1024,
  },
  {
    name: STREAMS.signals,
    subjects: ['workflow.signals.*'],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: nanos(TRIGGER_DEDUP_WINDOW_MS),
    discard: DiscardPolicy.New,
  },
  {
    name: STREAMS.deadLetters,
    subjects: ['workflow.dead-letters.>'],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(14 * 24 * 3600_000),
  },
];

export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  const nc = await connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 500, waitOnFirstConnect: false });
  trackConnection(nc);
  return nc;
}

/**
 * Flowgate's NATS KV buckets, each a JetStream stream (`KV_<name>`): opened with these options
 * wherever they are used, and made by provisioning with the streams' replica count.
 */
export const KV_BUCKETS = {
  /** The gateway's Idempotency-Key entries (gateway/triggering.ts), kept 24 hours. */
  idempotency: { name: 'flowgate_idempotency', ttl: 24 * 3600_000, history: 1 },
  /** The trigger consumers' delivery ledger (lib/jetstream-worker.ts), kept a week. */
  deliveries: { name: 'flowgate_deliveries', ttl: 7 * 24 * 3600_000, history: 1 },
  /** The database topology, one key per cluster (lib/db-topology.ts). */
  platform: { name: 'flowgate_platform', history: 10 },
} as const;

/**
 * Opens (creating if needed) one of KV_BUCKETS, under another `name` if given (a test's own);
 * `replicas` only matters to a bucket that does not exist yet.
 */
export function openBucket(js: JetStreamClient, bucket: (typeof KV_BUCKETS)[keyof typeof KV_BUCKETS], at: { name?: string; replicas?: number } = {}): Promise<KV> {
  const { name, ...opts } = bucket;
  return js.views.kv(at.name ?? name, { ...opts, ...(at.replicas ? { replicas: at.replicas } : {}) });
}

/**
 * Creates or updates Flowgate's JetStream streams; safe to call from every process. `replicas`
 * (provisioning's FLOWGATE_NATS_STREAM_REPLICAS; 3 on a cluster) sets the replica count, and with
 * it the KV buckets are made (and scaled) too; without it a stream keeps the count it has (a
 * process starting must never scale a stream down) and each process opens its own buckets.
 */
export async function ensureStreams(nc: NatsConnection, replicas?: number): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const cfg of streamConfigs) {
    let existing;
    try {
      existing = await jsm.streams.info(cfg.name!);
    } catch (err) {
      if (!String((err as Error).message).includes('stream not found')) throw err;
      await jsm.streams.add({ ...cfg, num_replicas: replicas ?? 1 });
      continue;
    }
    await jsm.streams.update(cfg.name!, { ...cfg, num_replicas: replicas ?? existing.config.num_replicas });
  }
  // The buckets are made here only with a replica count (provisioning); a process opens its own.
  if (!replicas) return;
  for (const bucket of Object.values(KV_BUCKETS)) {
    await openBucket(nc.jetstream(), bucket, { replicas });
    // A bucket a process made before (with one replica) is scaled like the streams.
    const stream = `KV_${bucket.name}`;
    const info = await jsm.streams.info(stream);
    if (info.config.num_replicas !== replicas) await jsm.streams.update(stream, { ...info.config, num_replicas: replicas });
  }
}

const connectedState = new WeakMap<NatsConnection, { connected: boolean }>();

/** Follows the connection's status events, so callers can fail fast while it is down. */
function trackConnection(nc: NatsConnection): { connected: boolean } {
  let state = connectedState.get(nc);
  if (state) return state;
  const s = { connected: true };
  state = s;
  connectedState.set(nc, s);
  void (async () => {
    for await (const ev of nc.status()) {
      if (ev.type === 'disconnect' || ev.type === 'error') s.connected = false;
      if (ev.type === 'reconnect') s.connected = true;
    }
  })();
  return s;
}

/** False while the connection is down or reconnecting (no round trip; cheap on a hot path). */
export function natsConnected(nc: NatsConnection): boolean {
  return !nc.isClosed() && trackConnection(nc).connected;
}

/** True when the server answers a round trip (false while disconnected or reconnecting). */
export async function natsHealthy(nc: NatsConnection): Promise<boolean> {
  if (!natsConnected(nc)) return false;
  await nc.rtt();
  return true;
}
