import {
  connect,
  RetentionPolicy,
  StorageType,
  DiscardPolicy,
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
  return connect({ servers: url, name, maxReconnectAttempts: -1, reconnectTimeWait: 500, waitOnFirstConnect: false });
}

/** Creates or updates Flowgate's JetStream streams; safe to call from every process. */
export async function ensureStreams(nc: NatsConnection): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const cfg of streamConfigs) {
    try {
      await jsm.streams.info(cfg.name!);
      await jsm.streams.update(cfg.name!, cfg);
    } catch (err) {
      if (!String((err as Error).message).includes('stream not found')) throw err;
      await jsm.streams.add(cfg);
    }
  }
}

/** True when the server answers a round trip (false while disconnected or reconnecting). */
export async function natsHealthy(nc: NatsConnection): Promise<boolean> {
  if (nc.isClosed()) return false;
  await nc.rtt();
  return true;
}
