import { connect } from 'nats';
import pg from 'pg';
import { nodeAddress, readTopology, STANDBY_APPLICATION_NAME, topologyBucket, writeTopology, type DbNode, type DbTopology } from '../lib/db-topology';
import { cloneStandby, PG_SERVERS, pgPort, pgSuperuserUrl, type PgServer, type StackLayout } from './servers';
import { saveDbPrimary, serverSpec, StackError, startServer, stopServer } from './stack';

const CLUSTER = 'main';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const nodeOf = (l: StackLayout, name: PgServer): DbNode => ({ name, host: '127.0.0.1', port: pgPort(l, name) });
const otherThan = (name: PgServer): PgServer => (name === 'postgres' ? 'postgres-replica' : 'postgres');

async function withSuperuser<T>(l: StackLayout, server: PgServer, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: pgSuperuserUrl(l, 'postgres', server), connectionTimeoutMillis: 3000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * The local stack's part of the database topology (what Patroni's agent does for a node): the
 * server the topology in NATS names primary stays primary; the other one is (re)built as its
 * streaming standby — after a failover, that is the fenced former primary, whose data may have
 * diverged. Then the primary waits for that standby at each commit (synchronous replication, so
 * a failover loses no acknowledged write), and the stack's state file records which is which.
 */
export async function reconcileDatabase(l: StackLayout & { executionIdSecret: string }, say: (msg: string) => void): Promise<void> {
  const nc = await connect({ servers: `nats://127.0.0.1:${l.ports.nats}`, name: 'flowgate-stack' });
  try {
    const kv = await topologyBucket(nc);
    const stored = await readTopology(kv, CLUSTER);
    if (stored && !stored.topology.primary) {
      throw new StackError(`a database failover is in progress (epoch ${stored.topology.epoch}): let the database-failover run finish, then run stack up again`);
    }
    const primary = (stored?.topology.primary?.name as PgServer | undefined) ?? l.dbPrimary ?? 'postgres';
    if (!PG_SERVERS.includes(primary)) throw new StackError(`the database topology names ${primary}, which this stack does not run`);
    const standby = otherThan(primary);
    if (await needsRebuild(l, standby, primary)) {
      say(`rebuilding ${standby} as a standby of ${primary}`);
      await stopServer(l, standby);
      await cloneStandby(l, standby, primary);
      await startServer(l, serverSpec(standby));
    }
    await awaitStreaming(l, primary);
    await withSuperuser(l, primary, async (c) => {
      await c.query(`ALTER SYSTEM SET synchronous_standby_names = '${STANDBY_APPLICATION_NAME}'`);
      await c.query('SELECT pg_reload_conf()');
    });
    const want: Omit<DbTopology, 'epoch' | 'changed_at'> = { cluster: CLUSTER, primary: nodeOf(l, primary), standbys: [nodeOf(l, standby)], fenced: [], changed_by: 'stack' };
    const same = stored && nodeAddress(stored.topology.primary) === nodeAddress(want.primary)
      && stored.topology.standbys.map(nodeAddress).join() === want.standbys.map(nodeAddress).join() && stored.topology.fenced.length === 0;
    if (!same) await writeTopology(kv, want, stored?.revision ?? 0);
    if (l.dbPrimary !== primary) {
      l.dbPrimary = primary;
      await saveDbPrimary(l);
    }
    say(`database: ${primary} primary, ${standby} streaming standby (synchronous)`);
  } finally {
    await nc.close();
  }
}

/** A standby must be in recovery and streaming from the primary; a former primary is not. */
async function needsRebuild(l: StackLayout, standby: PgServer, primary: PgServer): Promise<boolean> {
  return withSuperuser(l, standby, async (c) => {
    const { rows } = await c.query<{ recovering: boolean; conninfo: string }>("SELECT pg_is_in_recovery() AS recovering, current_setting('primary_conninfo') AS conninfo");
    return !rows[0]!.recovering || !rows[0]!.conninfo.includes(`port=${pgPort(l, primary)}`);
  });
}

async function awaitStreaming(l: StackLayout, primary: PgServer): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const streaming = await withSuperuser(l, primary, async (c) => (await c.query(
      "SELECT 1 FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming'", [STANDBY_APPLICATION_NAME])).rowCount);
    if (streaming) return;
    await sleep(200);
  }
  throw new StackError(`the standby is not streaming from ${primary} after 30 s`);
}
