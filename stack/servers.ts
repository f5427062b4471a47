import { randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { appendFile, chown, mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import pg from 'pg';
import { stringify } from 'yaml';
import { STANDBY_APPLICATION_NAME } from '../lib/db-topology';
import { freshPgDir, pgAnswers, postgresUid } from '../lib/pg-server';

export { postgresUid };
import { DB_APP_SECRET } from '../lib/secrets';
import { PAYMENTS_SERVICE } from '../lib/third-party/services';
import { SA } from '../lib/workflow-search-attributes';
import { binaries, REPO_ROOT } from './paths';

/** Every port the stack binds, all on 127.0.0.1. */
export type StackPorts = {
  temporal: number; temporalUi: number; temporalHttp: number; temporalMetrics: number;
  nats: number; natsMonitor: number; postgres: number; postgresReplica: number; kafka: number; kafkaController: number;
  openbao: number; redis: number; paymentSandbox: number; prometheus: number;
  gateway: number; admin: number; gatewayStatus: number; adminStatus: number; triggersStatus: number; workerStatus: number;
};

export const DEFAULT_PORTS: StackPorts = {
  temporal: 7233, temporalUi: 8233, temporalHttp: 7243, temporalMetrics: 7244,
  nats: 4222, natsMonitor: 8222, postgres: 5432, postgresReplica: 5433, kafka: 9092, kafkaController: 9093,
  openbao: 8200, redis: 6379, paymentSandbox: 8300, prometheus: 9090,
  gateway: 8000, admin: 8001, gatewayStatus: 9400, adminStatus: 9401, triggersStatus: 9402, workerStatus: 9403,
};

/** Credentials of the local stack only (dev-mode servers on loopback); never used elsewhere. */
export const LOCAL_CREDENTIALS = {
  vaultRootToken: 'flowgate-local-root',
  pgSuperuserPassword: 'flowgate-local-superuser',
  pgOwnerPassword: 'flowgate',
  pgAppPassword: 'flowgate_app',
} as const;

export type StackLayout = {
  dir: string;
  ports: StackPorts;
  /** 'dev' keeps data between runs and serves the Temporal UI; 'test' trades durability for speed. */
  profile: 'dev' | 'test';
  /** Which of the two PostgreSQL servers is the primary (it changes with a failover; stack/database.ts). */
  dbPrimary?: PgServer;
};

export type PgServer = 'postgres' | 'postgres-replica';
export const PG_SERVERS: readonly PgServer[] = ['postgres', 'postgres-replica'];
export const pgPort = (l: StackLayout, name: PgServer) => (name === 'postgres' ? l.ports.postgres : l.ports.postgresReplica);


export type SpawnSpec = { command: string; args: string[]; env?: NodeJS.ProcessEnv; runAsPostgres?: boolean; cwd?: string };

export type ServerSpec = {
  name: string;
  kind: 'infra' | 'app';
  prepare?: (l: StackLayout) => Promise<void>;
  spawn: (l: StackLayout, env: NodeJS.ProcessEnv) => SpawnSpec;
  ready: (l: StackLayout) => Promise<boolean>;
  readyTimeoutMs: number;
  stopSignal?: NodeJS.Signals;
  /** Servers this one starts after (their start must have succeeded). */
  after?: string[];
  /** Where it answers HTTP, printed when it is ready. */
  url?: (l: StackLayout) => string;
};

export const dataDir = (l: StackLayout, name: string) => path.join(l.dir, 'data', name);

const localhost = '127.0.0.1';

async function httpOk(url: string): Promise<boolean> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1500) });
    await res.arrayBuffer();
    return res.ok;
  } catch {
    return false;
  }
}

function tcpSend(port: number, payload: string, expect: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: localhost });
    let buf = '';
    const done = (ok: boolean) => { sock.destroy(); resolve(ok); };
    sock.setTimeout(1500, () => done(false));
    sock.on('error', () => done(false));
    sock.on('connect', () => sock.write(payload));
    sock.on('data', (d) => { buf += d.toString(); if (buf.includes(expect)) done(true); });
  });
}

export const pgSuperuserUrl = (l: StackLayout, db = 'postgres', server: PgServer = l.dbPrimary ?? 'postgres') =>
  `postgres://postgres:${LOCAL_CREDENTIALS.pgSuperuserPassword}@${localhost}:${pgPort(l, server)}/${db}`;

function pgSpawn(l: StackLayout, name: PgServer): SpawnSpec {
  const args = ['-D', dataDir(l, name), '-p', String(pgPort(l, name)), '-c', `listen_addresses=${localhost}`,
    '-c', "unix_socket_directories=", '-c', 'max_connections=300', '-c', 'wal_level=replica', '-c', 'hot_standby=on',
    '-c', 'max_wal_senders=5', '-c', 'max_replication_slots=5', '-c', 'wal_keep_size=256MB'];
  if (l.profile === 'test') args.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off');
  return { command: path.join(binaries().pgBin, 'postgres'), args, runAsPostgres: true };
}

export const replicationSlot = (name: PgServer) => `flowgate_${name.replace(/-/g, '_')}`;

/**
 * Makes `name` a streaming standby of `from`: a base backup over the replication protocol, its
 * own replication slot (the primary keeps the WAL it has not received) and the application name
 * the primary waits for with synchronous replication.
 */
export async function cloneStandby(l: StackLayout, name: PgServer, from: PgServer): Promise<void> {
  const dir = dataDir(l, name);
  const slot = replicationSlot(name);
  const su = new pg.Client({ connectionString: pgSuperuserUrl(l, 'postgres', from) });
  await su.connect();
  try {
    await su.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active', [slot]);
  } finally {
    await su.end();
  }
  await freshPgDir(dir);
  execFileSync(path.join(binaries().pgBin, 'pg_basebackup'), [
    '-h', localhost, '-p', String(pgPort(l, from)), '-U', 'postgres', '-D', dir, '-X', 'stream', '-c', 'fast', '-C', '-S', slot,
  ], { stdio: 'pipe', env: { ...process.env, PGPASSWORD: LOCAL_CREDENTIALS.pgSuperuserPassword }, ...(postgresUid() ?? {}) });
  const conninfo = `host=${localhost} port=${pgPort(l, from)} user=postgres password=${LOCAL_CREDENTIALS.pgSuperuserPassword} application_name=${STANDBY_APPLICATION_NAME}`;
  await appendFile(path.join(dir, 'postgresql.auto.conf'), `primary_conninfo = '${conninfo}'\nprimary_slot_name = '${slot}'\n`);
  await writeFile(path.join(dir, 'standby.signal'), '');
  const owner = postgresUid();
  if (owner) for (const f of ['postgresql.auto.conf', 'standby.signal']) await chown(path.join(dir, f), owner.uid, owner.gid);
}

const postgres: ServerSpec = {
  name: 'postgres',
  kind: 'infra',
  readyTimeoutMs: 30_000,
  stopSignal: 'SIGINT', // PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit
  async prepare(l) {
    const dir = dataDir(l, 'postgres');
    if (existsSync(path.join(dir, 'PG_VERSION'))) return;
    await freshPgDir(dir);
    const pwfile = path.join(l.dir, 'run', 'pg-superuser.pw');
    await writeFile(pwfile, LOCAL_CREDENTIALS.pgSuperuserPassword, { mode: 0o644 });
    execFileSync(path.join(binaries().pgBin, 'initdb'), [
      '-D', dir, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C',
    ], { stdio: 'pipe', ...(postgresUid() ?? {}) });
  },
  spawn: (l) => pgSpawn(l, 'postgres'),
  ready: (l) => pgAnswers(pgSuperuserUrl(l, 'postgres', 'postgres')),
};

/** The streaming replica the database failover runbook promotes (stack/database.ts keeps the roles straight). */
const postgresReplica: ServerSpec = {
  name: 'postgres-replica',
  kind: 'infra',
  readyTimeoutMs: 60_000,
  stopSignal: 'SIGINT',
  after: ['postgres'],
  async prepare(l) {
    if (existsSync(path.join(dataDir(l, 'postgres-replica'), 'PG_VERSION'))) return;
    await cloneStandby(l, 'postgres-replica', 'postgres');
  },
  spawn: (l) => pgSpawn(l, 'postgres-replica'),
  ready: (l) => pgAnswers(pgSuperuserUrl(l, 'postgres', 'postgres-replica')),
};

const nats: ServerSpec = {
  name: 'nats',
  kind: 'infra',
  readyTimeoutMs: 20_000,
  async prepare(l) { await mkdir(dataDir(l, 'nats'), { recursive: true }); },
  spawn(l) {
    return {
      command: binaries().natsServer,
      args: ['-a', localhost, '-p', String(l.ports.nats), '-m', String(l.ports.natsMonitor), '-js', '-sd', dataDir(l, 'nats'), '-n', `flowgate-${l.profile}`],
    };
  },
  ready: (l) => httpOk(`http://${localhost}:${l.ports.natsMonitor}/healthz?js-enabled-only=true`),
};

const redis: ServerSpec = {
  name: 'redis',
  kind: 'infra',
  readyTimeoutMs: 15_000,
  async prepare(l) { await mkdir(dataDir(l, 'redis'), { recursive: true }); },
  spawn(l) {
    return {
      command: binaries().redisServer,
      args: ['--bind', localhost, '--port', String(l.ports.redis), '--dir', dataDir(l, 'redis'), '--save', '',
        '--appendonly', l.profile === 'dev' ? 'yes' : 'no', '--daemonize', 'no', '--protected-mode', 'no'],
    };
  },
  ready: (l) => tcpSend(l.ports.redis, 'PING\r\n', '+PONG'),
};

const openbao: ServerSpec = {
  name: 'openbao',
  kind: 'infra',
  readyTimeoutMs: 20_000,
  spawn(l) {
    return {
      command: binaries().bao,
      // Dev mode: in memory, unsealed, KV v2 at secret/, a known root token. Local stack only.
      args: ['server', '-dev', `-dev-root-token-id=${LOCAL_CREDENTIALS.vaultRootToken}`, `-dev-listen-address=${localhost}:${l.ports.openbao}`],
      env: { BAO_ADDR: `http://${localhost}:${l.ports.openbao}`, SKIP_SETCAP: '1' },
    };
  },
  ready: (l) => httpOk(`http://${localhost}:${l.ports.openbao}/v1/sys/health`),
};

const kafka: ServerSpec = {
  name: 'kafka',
  kind: 'infra',
  readyTimeoutMs: 60_000,
  async prepare(l) {
    const dir = dataDir(l, 'kafka');
    await mkdir(path.join(dir, 'logs'), { recursive: true });
    const props = [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@${localhost}:${l.ports.kafkaController}`,
      `listeners=PLAINTEXT://${localhost}:${l.ports.kafka},CONTROLLER://${localhost}:${l.ports.kafkaController}`,
      `advertised.listeners=PLAINTEXT://${localhost}:${l.ports.kafka}`,
      'controller.listener.names=CONTROLLER',
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
      `log.dirs=${path.join(dir, 'logs')}`,
      'num.partitions=3',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=6',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      'auto.create.topics.enable=false',
    ];
    await writeFile(path.join(dir, 'server.properties'), props.join('\n') + '\n');
    await writeFile(path.join(dir, 'log4j.properties'), [
      'log4j.rootLogger=WARN, stdout',
      'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
      'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
      'log4j.logger.kafka.server.KafkaRaftServer=INFO',
    ].join('\n') + '\n');
    if (!existsSync(path.join(dir, 'logs', 'meta.properties'))) {
      // A KRaft cluster id is a base64url UUID (16 bytes, 22 characters).
      const clusterId = randomBytes(16).toString('base64url');
      execFileSync('java', ['-cp', `${binaries().kafkaLibs}/*`, `-Dlog4j.configuration=file:${path.join(dir, 'log4j.properties')}`,
        'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '-c', path.join(dir, 'server.properties')], { stdio: 'pipe' });
    }
  },
  spawn(l) {
    const dir = dataDir(l, 'kafka');
    return {
      command: 'java',
      args: ['-Xms256m', '-Xmx768m', '-XX:+UseG1GC', '-Djava.awt.headless=true', `-Dlog4j.configuration=file:${path.join(dir, 'log4j.properties')}`,
        '-cp', `${binaries().kafkaLibs}/*`, 'kafka.Kafka', path.join(dir, 'server.properties')],
    };
  },
  async ready(l) {
    const k = new Kafka({ brokers: [`${localhost}:${l.ports.kafka}`], logLevel: logLevel.NOTHING, connectionTimeout: 1500, retry: { retries: 0 } });
    const admin = k.admin();
    try {
      await admin.connect();
      const cluster = await admin.describeCluster();
      return cluster.brokers.length > 0;
    } catch {
      return false;
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  },
};

/** Flowgate's search attributes as the dev server's `--search-attribute NAME=Type` flags. */
const searchAttributeFlags = Object.values(SA).flatMap((k) => ['--search-attribute', `${k.name}=${k.type === 'INT' ? 'Int' : 'Keyword'}`]);

const temporal: ServerSpec = {
  name: 'temporal',
  kind: 'infra',
  readyTimeoutMs: 60_000,
  async prepare(l) { await mkdir(dataDir(l, 'temporal'), { recursive: true }); },
  spawn(l) {
    const args = ['server', 'start-dev', '--ip', localhost, '--port', String(l.ports.temporal), '--http-port', String(l.ports.temporalHttp),
      '--metrics-port', String(l.ports.temporalMetrics), '--db-filename', path.join(dataDir(l, 'temporal'), 'temporal.db'),
      '--log-level', 'warn', '--namespace', 'default',
      // WAL with synchronous=normal: 2.5x the start rate of the default journal on this machine
      // (91 → 228 starts/s); commits survive a crash of the server process, not of the OS.
      '--sqlite-pragma', 'journal_mode=wal', '--sqlite-pragma', 'synchronous=normal',
      '--dynamic-config-value', 'system.forceSearchAttributesCacheRefreshOnRead=true',
      ...searchAttributeFlags];
    if (l.profile === 'test') args.push('--headless');
    else args.push('--ui-ip', localhost, '--ui-port', String(l.ports.temporalUi));
    return { command: binaries().temporal, args };
  },
  ready: (l) => httpOk(`http://${localhost}:${l.ports.temporalHttp}/api/v1/namespaces/default`),
};

/** The third party the payments talk to: sandboxes/payment-provider, a real HTTP server with fault switches. */
const paymentSandbox: ServerSpec = {
  name: 'payment-sandbox',
  kind: 'infra',
  readyTimeoutMs: 30_000,
  stopSignal: 'SIGTERM',
  spawn(l) {
    return {
      command: process.execPath,
      args: ['--import', 'tsx', path.join(REPO_ROOT, 'sandboxes/payment-provider/main.ts')],
      env: { PAYMENT_SANDBOX_PORT: String(l.ports.paymentSandbox), PAYMENT_SANDBOX_HOST: localhost },
      cwd: REPO_ROOT,
    };
  },
  ready: (l) => httpOk(`http://${localhost}:${l.ports.paymentSandbox}/_sandbox/health`),
};

/** The rule files Prometheus loads, locally and in docker-compose (deploy/prometheus/prometheus.yml). */
export const PROMETHEUS_RULES_DIR = path.join(REPO_ROOT, 'deploy', 'prometheus', 'rules');
export const PROMETHEUS_RULE_GLOB = '*.rules.yml';

/** The scrape jobs of Flowgate's processes: job `flowgate-<process>` on its status port's /metrics. */
export const FLOWGATE_SCRAPE_JOBS = [
  { job: 'flowgate-gateway', port: (p: StackPorts) => p.gatewayStatus },
  { job: 'flowgate-admin', port: (p: StackPorts) => p.adminStatus },
  { job: 'flowgate-triggers', port: (p: StackPorts) => p.triggersStatus },
  { job: 'flowgate-worker', port: (p: StackPorts) => p.workerStatus },
] as const;

/** The local Prometheus's configuration, generated from the layout at every start. */
export function prometheusConfig(l: StackLayout): string {
  const target = (port: number) => [{ targets: [`${localhost}:${port}`] }];
  return `# Generated by stack/servers.ts from the stack's layout at every start; edits are lost.\n` + stringify({
    // 5 s: the integration tests see a process's first scrape within seconds.
    global: { scrape_interval: '5s', evaluation_interval: '5s' },
    rule_files: [path.join(PROMETHEUS_RULES_DIR, PROMETHEUS_RULE_GLOB)],
    scrape_configs: [
      ...FLOWGATE_SCRAPE_JOBS.map((j) => ({ job_name: j.job, static_configs: target(j.port(l.ports)) })),
      { job_name: 'temporal', static_configs: target(l.ports.temporalMetrics) },
      { job_name: 'prometheus', static_configs: target(l.ports.prometheus) },
    ],
  });
}

const prometheus: ServerSpec = {
  name: 'prometheus',
  kind: 'infra',
  readyTimeoutMs: 30_000,
  async prepare(l) {
    await mkdir(path.join(dataDir(l, 'prometheus'), 'tsdb'), { recursive: true });
    await writeFile(path.join(dataDir(l, 'prometheus'), 'prometheus.yml'), prometheusConfig(l));
  },
  spawn(l) {
    const dir = dataDir(l, 'prometheus');
    return {
      command: binaries().prometheus,
      args: [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'tsdb')}`,
        `--web.listen-address=${localhost}:${l.ports.prometheus}`,
        // POST /-/reload picks up edited rule files without a restart (loopback only).
        '--web.enable-lifecycle',
        ...(l.profile === 'test' ? ['--storage.tsdb.retention.time=1d'] : [])],
    };
  },
  ready: (l) => httpOk(`http://${localhost}:${l.ports.prometheus}/-/ready`),
  url: (l) => `http://${localhost}:${l.ports.prometheus}`,
};

function app(name: string, entry: string, statusPort: (p: StackPorts) => number): ServerSpec {
  return {
    name,
    kind: 'app',
    readyTimeoutMs: 60_000,
    stopSignal: 'SIGTERM',
    spawn(_l, env) {
      return { command: process.execPath, args: ['--import', 'tsx', path.join(REPO_ROOT, entry)], env, cwd: REPO_ROOT };
    },
    ready: (l) => httpOk(`http://${localhost}:${statusPort(l.ports)}/readyz`),
  };
}

export const INFRA: ServerSpec[] = [postgres, postgresReplica, nats, redis, openbao, kafka, temporal, paymentSandbox, prometheus];
export const APPS: ServerSpec[] = [
  app('worker', 'worker/main.ts', (p) => p.workerStatus),
  app('triggers', 'triggers/main.ts', (p) => p.triggersStatus),
  app('gateway', 'gateway/main.ts', (p) => p.gatewayStatus),
  app('admin', 'admin/main.ts', (p) => p.adminStatus),
];

/** The environment a Flowgate process needs to reach this stack (lib/config.ts variables). */
export function processEnv(l: StackLayout & { executionIdSecret: string }): Record<string, string> {
  const p = l.ports;
  const db = pgPort(l, l.dbPrimary ?? 'postgres');
  return {
    FLOWGATE_TEMPORAL_ADDRESS: `${localhost}:${p.temporal}`,
    FLOWGATE_NATS_URL: `nats://${localhost}:${p.nats}`,
    FLOWGATE_DATABASE_URL: `postgres://flowgate_app:${LOCAL_CREDENTIALS.pgAppPassword}@${localhost}:${db}/flowgate`,
    // The processes' own login comes from Vault and follows its rotations (stack/provision.ts).
    FLOWGATE_DATABASE_CREDENTIALS: DB_APP_SECRET,
    FLOWGATE_DATABASE_OWNER_URL: `postgres://flowgate:${LOCAL_CREDENTIALS.pgOwnerPassword}@${localhost}:${db}/flowgate`,
    // Where the replica, the scratch instances of the backup drill and the dumps come from.
    FLOWGATE_PG_BIN: binaries().pgBin,
    FLOWGATE_BACKUP_DIR: path.join(l.dir, 'backups'),
    // Audit records a gateway could not yet send to Kafka, kept across restarts.
    FLOWGATE_SPOOL_DIR: path.join(l.dir, 'spool'),

    FLOWGATE_KAFKA_BROKERS: `${localhost}:${p.kafka}`,
    FLOWGATE_VAULT_ADDR: `http://${localhost}:${p.openbao}`,
    FLOWGATE_VAULT_TOKEN: LOCAL_CREDENTIALS.vaultRootToken,
    FLOWGATE_REDIS_URL: `redis://${localhost}:${p.redis}`,
    FLOWGATE_GATEWAY_PORT: String(p.gateway),
    FLOWGATE_ADMIN_PORT: String(p.admin),
    FLOWGATE_EXECUTION_ID_SECRET: l.executionIdSecret,
    // `acme.gw.localhost:8000` names tenant acme (*.localhost resolves to the loopback address).
    FLOWGATE_TENANT_HOST_SUFFIX: 'gw.localhost',
    // Tests see a breaker probe again after 3 s instead of seed 000's 60 s. The outbound proxy may
    // make charges with the platform's key, nothing else (not list or refund every tenant's).
    FLOWGATE_THIRD_PARTIES: JSON.stringify([{
      name: PAYMENTS_SERVICE, base_url: `http://${localhost}:${p.paymentSandbox}`, outbound: [{ method: 'POST', path: '/v1/charges' }],
      ...(l.profile === 'test' ? { breaker: { reset_timeout_ms: 3000 } } : {}),
    }]),
    // A local stack's webhook receivers run on this machine (loopback).
    FLOWGATE_WEBHOOK_ALLOW_PRIVATE: 'true',
    // Its upstreams too; but no tenant's route may reach the stack's own servers and processes
    // (the payment sandbox stands for a third party's public API, so it stays reachable).
    FLOWGATE_UPSTREAM_ALLOW_LOOPBACK: 'true',
    FLOWGATE_UPSTREAM_DENY: Object.entries(p).filter(([name]) => name !== 'paymentSandbox').map(([, port]) => `${localhost}:${port}`).join(','),
    // Tests see the webhook retrier take over within a second, not a minute.
    ...(l.profile === 'test' ? { FLOWGATE_WEBHOOK_RETRY_BASE_MS: '500', FLOWGATE_WEBHOOK_RETRY_POLL_MS: '200' } : {}),
    // Tests see a failed pull in seconds; invalidations make changes immediate either way.
    ...(l.profile === 'test' ? { FLOWGATE_CONFIG_REFRESH_MS: '2000' } : {}),
  };
}

