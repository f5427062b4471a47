import { ApplicationFailure, Context } from '@temporalio/activity';
import type { NatsConnection } from 'nats';
import pg from 'pg';
import {
  databaseClients, lsnBytes, nodeAddress, readTopology, topologyBucket, writeTopology, type DbNode, type DbTopology,
} from '../lib/db-topology';
import type { Logger } from '../lib/logger';
import { DB_APP_SECRET, DB_DR_SECRET } from '../lib/secrets';
import { readCurrentSecretData } from '../lib/third-party/credentials';
import type { VaultClient } from '../lib/vault';
import { whileBeating } from './heartbeating';

export type FailoverDeps = { vault: VaultClient; nats?: NatsConnection; logger: Logger; databaseUrl: string };
type DbLogin = { username: string; password: string };

export type FailoverPlan = { cluster: string; epoch: number; primary: DbNode; standby: DbNode };
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The database failover's steps: each reads the topology first, so a retried step finds its work done. */
export function failoverActivities(deps: FailoverDeps) {
  const kvOf = async () => {
    if (!deps.nats) throw ApplicationFailure.nonRetryable('this worker has no NATS connection', 'NoTopology');
    return topologyBucket(deps.nats);
  };
  const topologyOf = async (cluster: string) => {
    const kv = await kvOf();
    const t = await readTopology(kv, cluster);
    if (!t) throw ApplicationFailure.nonRetryable(`no database topology for ${cluster} in NATS`, 'NoTopology');
    return { kv, ...t };
  };
  const login = async (path: string) => (await readCurrentSecretData<DbLogin>(deps.vault, path)).data;
  /** A connection to one server as the DR login (or another), failing within `timeoutMs`. */
  const connectTo = async (node: DbNode, opts: { secret?: string; database?: string; timeoutMs?: number; as?: DbLogin } = {}) => {
    const { username, password } = opts.as ?? await login(opts.secret ?? DB_DR_SECRET);
    const c = new pg.Client({ host: node.host, port: node.port, database: opts.database ?? 'flowgate', user: username, password, connectionTimeoutMillis: opts.timeoutMs ?? 2000, query_timeout: 10_000 });
    c.on('error', () => undefined);
    await c.connect();
    return c;
  };
  /**
   * Whether `node` answers. The login is read from Vault first, outside the probe: Vault away is
   * not the database down (the error is retried), so it can never confirm a failover.
   */
  const probe = async (node: DbNode, timeoutMs: number): Promise<boolean> => {
    const as = await login(DB_DR_SECRET);
    try {
      const c = await connectTo(node, { timeoutMs, as });
      try {
        await c.query('SELECT 1');
        return true;
      } finally {
        await c.end().catch(() => undefined);
      }
    } catch {
      return false;
    }
  };

  return {
    /** Read-only: who is primary and standby, whether each answers, how far the standby is behind (dry runs). */
    async inspectDatabase(p: { cluster: string }): Promise<{ epoch: number; primary: string | null; primary_up: boolean; standby: string | null; standby_streaming: boolean; lag_bytes: number | null }> {
      const { topology } = await topologyOf(p.cluster);
      const standby = topology.standbys[0];
      let streaming = false;
      let lag: number | null = null;
      const primaryUp = topology.primary ? await probe(topology.primary, 2000) : false;
      if (standby) {
        try {
          const c = await connectTo(standby);
          try {
            const { rows } = await c.query<{ recovering: boolean; received: string | null; replayed: string | null; streaming: boolean }>(
              "SELECT pg_is_in_recovery() AS recovering, pg_last_wal_receive_lsn()::text AS received, pg_last_wal_replay_lsn()::text AS replayed, EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming') AS streaming");
            const r = rows[0]!;
            streaming = r.recovering && r.streaming;
            if (r.received && r.replayed) lag = Number(lsnBytes(r.received) - lsnBytes(r.replayed));
          } finally {
            await c.end().catch(() => undefined);
          }
        } catch { /* reported as not streaming */ }
      }
      return { epoch: topology.epoch, primary: nodeAddress(topology.primary), primary_up: primaryUp, standby: standby ? nodeAddress(standby) : null, standby_streaming: streaming, lag_bytes: lag };
    },

    /** Probes the primary `probes` times; fails (PrimaryHealthy) if it answers once. */
    async detectPrimaryDown(p: { cluster: string; probes: number; interval_ms: number; expected_epoch?: number }): Promise<FailoverPlan & { down_since: string; failed_probes: number }> {
      const { topology } = await topologyOf(p.cluster);
      if (p.expected_epoch !== undefined && topology.epoch !== p.expected_epoch) {
        throw ApplicationFailure.nonRetryable(`the topology moved on (epoch ${topology.epoch}, expected ${p.expected_epoch}): somebody failed over already`, 'TopologyChanged');
      }
      if (!topology.primary) throw ApplicationFailure.nonRetryable(`a failover of ${p.cluster} is already in progress (epoch ${topology.epoch})`, 'FailoverInProgress');
      const standby = topology.standbys[0];
      if (!standby) throw ApplicationFailure.nonRetryable(`${p.cluster} has no standby to promote`, 'NoStandby');
      let downSince: string | undefined;
      for (let i = 0; i < p.probes; i++) {
        Context.current().heartbeat({ probe: i + 1 });
        const at = new Date().toISOString();
        if (await probe(topology.primary, Math.min(p.interval_ms, 2000))) {
          throw ApplicationFailure.nonRetryable(`the primary ${nodeAddress(topology.primary)} answers: nothing to fail over`, 'PrimaryHealthy');
        }
        downSince ??= at;
        if (i < p.probes - 1) await sleep(p.interval_ms);
      }
      return { cluster: p.cluster, epoch: topology.epoch, primary: topology.primary, standby, down_since: downSince!, failed_probes: p.probes };
    },

    /**
     * Fences the old primary: the topology names no primary from here on (every pool drops its
     * connections to it), and if it still answers it is made read-only and its sessions ended.
     * `recheck` (a run that waited for an approval, minutes or hours after its detection): a
     * primary that answers again is not fenced (PrimaryHealthy).
     */
    async fencePrimary(plan: FailoverPlan & { recheck?: boolean }): Promise<{ epoch: number; old_primary: string }> {
      const { kv, topology, revision } = await topologyOf(plan.cluster);
      let epoch = topology.epoch;
      const fencedAlready = !topology.primary && topology.fenced.some((n) => nodeAddress(n) === nodeAddress(plan.primary));
      if (!fencedAlready) {
        if (topology.epoch !== plan.epoch) throw ApplicationFailure.nonRetryable(`the topology moved on (epoch ${topology.epoch}, planned on ${plan.epoch})`, 'TopologyChanged');
        if (plan.recheck && (await probe(plan.primary, 2000))) {
          throw ApplicationFailure.nonRetryable(`the primary ${nodeAddress(plan.primary)} answers again: nothing to fail over`, 'PrimaryHealthy');
        }
        epoch = (await writeTopology(kv, { ...topology, primary: null, fenced: [...topology.fenced, plan.primary], changed_by: 'database-failover' }, revision)).topology.epoch;
      }
      let oldPrimary = 'unreachable: fenced in the topology';
      try {
        const c = await connectTo(plan.primary, { timeoutMs: 1000 });
        try {
          await c.query('ALTER SYSTEM SET default_transaction_read_only = on');
          await c.query('SELECT pg_reload_conf()');
          const ended = await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND usename NOT IN ('postgres', current_user)");
          oldPrimary = `reachable: made read-only, ${ended.rowCount} sessions ended`;
        } finally {
          await c.end().catch(() => undefined);
        }
      } catch { /* down, as detected */ }
      return { epoch, old_primary: oldPrimary };
    },

    /** Promotes the standby (waits until it takes writes); what it had received is the RPO's measure. */
    async promoteStandby(plan: FailoverPlan & { last_primary_lsn?: string }): Promise<{ received_lsn: string | null; replayed_lsn: string | null; lost_wal_bytes: number | null; already_promoted: boolean; promote_ms: number }> {
      const c = await connectTo(plan.standby);
      try {
        const t0 = Date.now();
        const { rows } = await c.query<{ recovering: boolean; received: string | null; replayed: string | null }>(
          'SELECT pg_is_in_recovery() AS recovering, pg_last_wal_receive_lsn()::text AS received, pg_last_wal_replay_lsn()::text AS replayed');
        const r = rows[0]!;
        if (r.recovering) {
          // Heartbeats go on while PostgreSQL promotes (the activity's heartbeat timeout is 20 s).
          const promoted = await whileBeating(() => c.query<{ ok: boolean }>('SELECT pg_promote(true, 60) AS ok'));
          if (!promoted.rows[0]!.ok) throw new Error(`${nodeAddress(plan.standby)} did not finish promotion within 60 s`);
        }
        // It was cloned from a primary that waited for a synchronous standby; it has none.
        await c.query("ALTER SYSTEM SET synchronous_standby_names = ''");
        await c.query('SELECT pg_reload_conf()');
        return { received_lsn: r.received, replayed_lsn: r.replayed, lost_wal_bytes: lostWalBytes(plan.last_primary_lsn, r.received), already_promoted: !r.recovering, promote_ms: Date.now() - t0 };
      } finally {
        await c.end().catch(() => undefined);
      }
    },

    /** Names the promoted standby primary; waits until every process's pool follows it. */
    async repointPlatform(plan: FailoverPlan & { wait_ms: number }): Promise<{ epoch: number; processes: number; repointed: number }> {
      const { kv, topology, revision } = await topologyOf(plan.cluster);
      let current: DbTopology = topology;
      if (nodeAddress(topology.primary) !== nodeAddress(plan.standby)) {
        if (topology.primary) throw ApplicationFailure.nonRetryable(`the topology names ${nodeAddress(topology.primary)} primary; expected none during the failover`, 'TopologyChanged');
        current = (await writeTopology(kv, {
          ...topology, primary: plan.standby, standbys: topology.standbys.filter((n) => nodeAddress(n) !== nodeAddress(plan.standby)), changed_by: 'database-failover',
        }, revision)).topology;
      }
      const deadline = Date.now() + plan.wait_ms;
      for (;;) {
        Context.current().heartbeat();
        const clients = await databaseClients(deps.nats!);
        const repointed = clients.filter((c) => c.epoch >= current.epoch).length;
        if (repointed === clients.length || Date.now() > deadline) return { epoch: current.epoch, processes: clients.length, repointed };
        await sleep(200);
      }
    },

    /** A write and its read-back on the new primary with the processes' own login. */
    async verifyWrites(p: { cluster: string; run_id: string }): Promise<{ verified_at: string; primary: string }> {
      const { topology } = await topologyOf(p.cluster);
      if (!topology.primary) throw new Error('no primary in the topology yet');
      const c = await connectTo(topology.primary, { secret: DB_APP_SECRET });
      try {
        const { rows } = await c.query<{ id: string }>('INSERT INTO dr_write_checks (run_id) VALUES ($1) RETURNING id', [p.run_id]);
        const back = await c.query('SELECT 1 FROM dr_write_checks WHERE id = $1', [rows[0]!.id]);
        if (!back.rowCount) throw new Error('the write was not read back');
        return { verified_at: new Date().toISOString(), primary: nodeAddress(topology.primary)! };
      } finally {
        await c.end().catch(() => undefined);
      }
    },
  };
}

/** WAL the promoted standby never received: the RPO in bytes (null when the primary's last position is unknown). */
function lostWalBytes(lastPrimaryLsn: string | undefined, receivedLsn: string | null): number | null {
  if (!lastPrimaryLsn || !receivedLsn) return null;
  const d = lsnBytes(lastPrimaryLsn) - lsnBytes(receivedLsn);
  return Number(d > 0n ? d : 0n);
}
