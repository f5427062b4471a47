import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { NatsConnection } from 'nats';
import pg from 'pg';
import type { Registry } from 'prom-client';
import type { Config } from './config';
import { nodeAddress, readTopology, STANDBY_APPLICATION_NAME, topologyBucket, type DbNode } from './db-topology';
import type { Logger } from './logger';
import { prom } from './metrics';
import { startRunbookRun } from './runbook-runs';
import { findRunbook } from './runbooks';
import { DB_DR_SECRET } from './secrets';
import { readCurrentSecretData } from './third-party/credentials';
import type { VaultClient } from './vault';

/** How long the synchronous standby may be gone before commits stop waiting for it. */
const STANDBY_GRACE_MS = 5000;

/**
 * The worker's watch on the topology's primary (Patroni's loop, in small): a probe every
 * FLOWGATE_DB_PROBE_MS as the DR login, remembering the last WAL position it saw. After
 * FLOWGATE_DB_PROBE_FAILURES failed probes in a row it starts the database-failover runbook
 * (automatic, or waiting for an operator), with when the primary went and where its WAL was. Every
 * worker watches; the run's id names the cluster, so Temporal starts one. It also keeps the
 * platform writing when the standby goes: synchronous replication off after 5 s without it, on
 * again when it is back.
 */
/**
 * When failed probes start a failover, apart from the probing: `threshold` failures in a row
 * start one per topology epoch; an answer resets both the count and the epoch already started
 * for (the run may have ended finding the primary healthy, or been rejected), so a later outage
 * of the same epoch starts a run again. A probe that could not be made (its login unreadable in
 * Vault) is neither.
 */
export class FailoverTrigger {
  private failures = 0;
  private startedFor = -1;
  constructor(private readonly threshold: number) {}

  answered(): void {
    this.failures = 0;
    this.startedFor = -1;
  }

  /** One more failed probe; true when a failover for `epoch` is to start now. */
  failed(epoch: number): boolean {
    this.failures += 1;
    if (this.failures < this.threshold || this.startedFor === epoch) return false;
    this.startedFor = epoch;
    return true;
  }

  /** The start did not happen (not "another worker was first"): the next failure tries again. */
  startFailed(): void {
    this.startedFor = -1;
  }
}

export function startDbWatchdog(deps: { config: Config; nats: NatsConnection; vault: VaultClient; temporal: Client; logger: Logger; registry?: Registry }): () => Promise<void> {
  const { config, logger } = deps;
  const cluster = config.FLOWGATE_DATABASE_CLUSTER;
  const up = deps.registry ? new prom.Gauge({ name: 'database_primary_up', help: '1 when the primary answered the last probe', labelNames: ['cluster'], registers: [deps.registry] }) : undefined;
  let client: pg.Client | undefined;
  let clientFor: string | undefined;
  const trigger = new FailoverTrigger(config.FLOWGATE_DB_PROBE_FAILURES);
  let downSince: string | undefined;
  let lastLsn: string | undefined;
  let standbyGoneSince: number | undefined;
  let stopped = false;

  type Login = { username: string; password: string };
  const connect = async (node: DbNode, data: Login) => {
    const address = nodeAddress(node)!;
    if (client && clientFor === address) return client;
    await client?.end().catch(() => undefined);
    const c = new pg.Client({ host: node.host, port: node.port, database: 'flowgate', user: data.username, password: data.password, connectionTimeoutMillis: Math.min(2000, config.FLOWGATE_DB_PROBE_MS), query_timeout: 2000 });
    c.on('error', () => undefined);
    client = undefined;
    await c.connect();
    client = c;
    clientFor = address;
    return c;
  };

  // The bucket's handle is made once: each tick is then one key read.
  let bucket: ReturnType<typeof topologyBucket> | undefined;
  const tick = async () => {
    const kv = await (bucket ??= topologyBucket(deps.nats).catch((err: unknown) => { bucket = undefined; throw err; }));
    const stored = await readTopology(kv, cluster);
    const primary = stored?.topology.primary;
    if (!stored || !primary) return; // no topology, or a failover is under way
    // The probe's login, read before the probe: Vault away (sealed, unreachable, an expired token)
    // is not the database down, and must never count towards a failover.
    let login: Login | undefined;
    if (!client || clientFor !== nodeAddress(primary)) {
      try {
        login = (await readCurrentSecretData<Login>(deps.vault, DB_DR_SECRET)).data;
      } catch (err) {
        logger.warn({ err: (err as Error).message, cluster }, 'the probe login cannot be read from Vault: this probe is skipped, not counted');
        return;
      }
    }
    try {
      const c = await connect(primary, login!);
      const { rows } = await c.query<{ lsn: string; standbys: number; sync: string; recovering: boolean }>(
        "SELECT pg_current_wal_flush_lsn()::text AS lsn, (SELECT count(*) FROM pg_stat_replication WHERE application_name = $1 AND state = 'streaming')::int AS standbys, current_setting('synchronous_standby_names') AS sync, pg_is_in_recovery() AS recovering",
        [STANDBY_APPLICATION_NAME]);
      const r = rows[0]!;
      trigger.answered();
      downSince = undefined;
      lastLsn = r.lsn;
      up?.set({ cluster }, 1);
      await keepWritesFlowing(c, r.standbys, r.sync, stored.topology.standbys.length > 0);
    } catch {
      await client?.end().catch(() => undefined);
      client = undefined;
      downSince ??= new Date().toISOString();
      up?.set({ cluster }, 0);
      if (trigger.failed(stored.topology.epoch)) await startFailover(stored.topology.epoch);
    }
  };

  const keepWritesFlowing = async (c: pg.Client, standbys: number, sync: string, hasStandby: boolean) => {
    if (standbys > 0) standbyGoneSince = undefined;
    else standbyGoneSince ??= Date.now();
    if (sync !== '' && standbys === 0 && Date.now() - standbyGoneSince! > STANDBY_GRACE_MS) {
      await c.query("ALTER SYSTEM SET synchronous_standby_names = ''");
      await c.query('SELECT pg_reload_conf()');
      logger.error({ cluster }, 'the synchronous standby is gone: commits no longer wait for it (a failover now could lose writes)');
    } else if (sync === '' && standbys > 0 && hasStandby) {
      await c.query(`ALTER SYSTEM SET synchronous_standby_names = '${STANDBY_APPLICATION_NAME}'`);
      await c.query('SELECT pg_reload_conf()');
      logger.warn({ cluster }, 'the standby is streaming again: commits wait for it');
    }
  };

  const startFailover = async (epoch: number) => {
    const def = findRunbook('database-failover')!;
    try {
      // Parameters the runbook refuses are a start that failed, told as one, not a failed tick.
      const params = def.params.parse({
        cluster, automatic: config.FLOWGATE_DB_FAILOVER === 'automatic', probes: 1, probe_interval_ms: config.FLOWGATE_DB_PROBE_MS,
        down_since: downSince, last_primary_lsn: lastLsn, expected_epoch: epoch,
      });
      const id = await startRunbookRun(deps.temporal, config.FLOWGATE_TASK_QUEUE, def, params, { requestedBy: 'db-watchdog', dryRun: false, correlationId: `db-watchdog-${cluster}-${epoch}` });
      logger.error({ cluster, epoch, run: id, down_since: downSince, mode: config.FLOWGATE_DB_FAILOVER }, 'the database primary is down: failover started');
    } catch (err) {
      if (err instanceof WorkflowExecutionAlreadyStartedError) return; // another worker was first
      trigger.startFailed();
      logger.error({ err: (err as Error).message, cluster }, 'could not start the database failover');
    }
  };

  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const loop = () => {
    if (stopped) return;
    running = tick().catch((err: unknown) => logger.warn({ err: (err as Error).message }, 'database watchdog tick failed')).finally(() => {
      if (!stopped) timer = setTimeout(loop, config.FLOWGATE_DB_PROBE_MS);
    });
  };
  if (config.FLOWGATE_DB_FAILOVER !== 'off') loop();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await running;
    await client?.end().catch(() => undefined);
  };
}
