import type { KV, NatsConnection } from 'nats';
import type pg from 'pg';
import type { Logger } from './logger';
import { KV_BUCKETS, openBucket } from './nats';
import { poolOptions, retireConnections } from './pg-pool-internals';

/**
 * Where the platform's PostgreSQL primary is, kept in a NATS JetStream key-value bucket (the role
 * etcd plays for Patroni): the failover runbook changes it with check-and-set, every process's pool
 * follows it. The epoch grows with each change, so a late writer cannot undo a newer one.
 */
export const topologyKey = (cluster: string) => `database.${cluster}`;
/** Every process answers this request with the topology epoch and primary its pool uses. */
export const DATABASE_CLIENTS_SUBJECT = 'database.clients';

/** The application name a standby connects with, which the primary's synchronous_standby_names waits for. */
export const STANDBY_APPLICATION_NAME = 'flowgate_standby';

export type DbNode = { name: string; host: string; port: number };
export type DbTopology = {
  cluster: string;
  epoch: number;
  /** null between the fence and the promotion of a failover: nobody may write. */
  primary: DbNode | null;
  standbys: DbNode[];
  /** Former primaries that must not take writes until rebuilt as standbys. */
  fenced: DbNode[];
  changed_at: string;
  changed_by: string;
};
export type DatabaseClient = { process: string; instance: string; epoch: number; primary: string | null };

export const nodeAddress = (n: DbNode | null) => (n ? `${n.host}:${n.port}` : null);

export async function topologyBucket(nc: NatsConnection): Promise<KV> {
  return openBucket(nc.jetstream(), KV_BUCKETS.platform);
}

export async function readTopology(kv: KV, cluster: string): Promise<{ topology: DbTopology; revision: number } | undefined> {
  const e = await kv.get(topologyKey(cluster));
  if (!e || e.operation !== 'PUT' || e.value.length === 0) return undefined;
  return { topology: e.json<DbTopology>(), revision: e.revision };
}

export class TopologyConflict extends Error {}

/**
 * Writes a new topology if the stored one is still at `revision` (0: none yet); epoch + 1.
 * Fails with TopologyConflict when somebody changed it in between.
 */
export async function writeTopology(kv: KV, next: Omit<DbTopology, 'epoch' | 'changed_at'> & { epoch?: number }, revision: number): Promise<{ topology: DbTopology; revision: number }> {
  const current = revision ? await readTopology(kv, next.cluster) : undefined;
  const topology: DbTopology = { ...next, epoch: (current?.topology.epoch ?? 0) + 1, changed_at: new Date().toISOString() };
  try {
    const rev = revision ? await kv.update(topologyKey(next.cluster), JSON.stringify(topology), revision) : await kv.create(topologyKey(next.cluster), JSON.stringify(topology));
    return { topology, revision: rev };
  } catch (err) {
    throw new TopologyConflict(`the topology of ${next.cluster} changed meanwhile (${(err as Error).message})`);
  }
}

/**
 * Points a pool at the topology's primary and follows its changes: new connections go to the new
 * primary, old ones are retired (idle ones now, busy ones when released). With no primary (a
 * failover in progress) every connection is retired and new ones fail until the promotion.
 * Answers DATABASE_CLIENTS_SUBJECT so a failover can see every process has moved.
 */
export async function followTopology(pool: pg.Pool, nc: NatsConnection, cluster: string, who: { process: string; instance: string; logger?: Logger }): Promise<{ stop: () => void; epoch: () => number } | undefined> {
  const kv = await topologyBucket(nc);
  const first = await readTopology(kv, cluster);
  if (!first) return undefined;
  const options = poolOptions(pool);
  let current = first.topology;
  const apply = (t: DbTopology) => {
    if (t.epoch < current.epoch) return;
    const moved = nodeAddress(t.primary) !== `${options.host}:${options.port}`;
    current = t;
    if (t.primary) {
      options.host = t.primary.host;
      options.port = t.primary.port;
    } else {
      // Nowhere to write: connections fail fast instead of reaching a fenced primary.
      options.host = '127.0.0.1';
      options.port = 1;
    }
    if (moved) {
      retireConnections(pool, (c) => (c as unknown as { host?: string; port?: number }).host === options.host && (c as unknown as { port?: number }).port === options.port);
      who.logger?.warn({ cluster, epoch: t.epoch, primary: nodeAddress(t.primary) }, 'database primary changed; connections repointed');
    }
  };
  apply(first.topology);
  const watch = await kv.watch({ key: topologyKey(cluster) });
  void (async () => {
    for await (const e of watch) {
      if (e.operation === 'PUT' && e.value.length) apply(e.json<DbTopology>());
    }
  })().catch((err: unknown) => who.logger?.error({ err }, 'topology watch ended'));
  const sub = nc.subscribe(DATABASE_CLIENTS_SUBJECT, {
    callback: (_e, m) => m.respond(JSON.stringify({ process: who.process, instance: who.instance, epoch: current.epoch, primary: nodeAddress(current.primary) } satisfies DatabaseClient)),
  });
  return { stop: () => { watch.stop(); sub.unsubscribe(); }, epoch: () => current.epoch };
}

/** Every process that answers within `waitMs`, with the epoch its pool follows. */
export async function databaseClients(nc: NatsConnection, waitMs = 750): Promise<DatabaseClient[]> {
  const out: DatabaseClient[] = [];
  for await (const m of await nc.requestMany(DATABASE_CLIENTS_SUBJECT, '', { maxWait: waitMs })) out.push(m.json<DatabaseClient>());
  return out;
}

/**
 * The topology names no primary now (a failover between its fence and its repoint): retry later.
 * A plain error, so an activity that meets it is retried (no retry policy lists it as final).
 */
export class NoPrimaryError extends Error {
  override name = 'NoPrimaryError';
}

/**
 * The primary's address: the topology's when there is one, else the URL's. A topology without a
 * primary throws NoPrimaryError: the URL's host is then usually the fenced old primary.
 */
export async function primaryAddress(nc: NatsConnection | undefined, cluster: string, url: string): Promise<{ host: string; port: number }> {
  const t = nc ? await readTopology(await topologyBucket(nc), cluster) : undefined;
  if (t) {
    if (!t.topology.primary) throw new NoPrimaryError(`the database topology of ${cluster} names no primary now (a failover is under way, epoch ${t.topology.epoch}); retry once it is repointed`);
    return { host: t.topology.primary.host, port: t.topology.primary.port };
  }
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432) };
}

/** A PostgreSQL LSN ("16/B374D848") as a byte position, to subtract two of them. */
export const lsnBytes = (lsn: string): bigint => {
  const [hi, lo] = lsn.split('/');
  return (BigInt(`0x${hi}`) << 32n) + BigInt(`0x${lo}`);
};
