import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DEFAULT_THIRD_PARTIES, thirdPartyServices } from './third-party/services';
import { MAX_PROBE_INTERVAL_MS } from './runbooks';
import { isAddressOrCidr } from './control-plane/plugins';
import { parseDenyEntry } from './upstream-policy';

/** The largest upstream answer the gateway holds by default (gateway/upstreams.ts). */
export const DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

/** The four Flowgate processes; each has a default status port (DESIGN.md). */
export type ProcessName = 'gateway' | 'admin' | 'triggers' | 'worker';

export const DEFAULT_STATUS_PORTS: Record<ProcessName, number> = {
  gateway: 9400,
  admin: 9401,
  triggers: 9402,
  worker: 9403,
};

const port = z.coerce.number().int().min(0).max(65535);
const url = (protocols: string[]) =>
  z.string().refine((v) => {
    try {
      return protocols.includes(new URL(v).protocol);
    } catch {
      return false;
    }
  }, `must be a URL with scheme ${protocols.join(' or ')}`);
const hostPort = z.string().regex(/^[^\s:]+:\d{1,5}$/, 'must be host:port');

/** One schema for every process; defaults match the local stack (`make up`). */
/** A comma-separated list, each entry trimmed and parsed; an entry `parse` refuses names itself (`"x" is <what>`). */
function commaList<T>(parse: (entry: string) => T | undefined, what: string) {
  return z.string().default('').transform((v, ctx) => {
    const out: T[] = [];
    for (const entry of v.split(',').map((e) => e.trim()).filter(Boolean)) {
      const parsed = parse(entry);
      if (parsed === undefined) {
        ctx.addIssue({ code: 'custom', message: `"${entry}" is ${what}` });
        return z.NEVER;
      }
      out.push(parsed);
    }
    return out;
  });
}

export const configSchema = z.object({
  FLOWGATE_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  FLOWGATE_HOST: z.string().min(1).default('127.0.0.1'),
  FLOWGATE_GATEWAY_PORT: port.default(8000),
  FLOWGATE_ADMIN_PORT: port.default(8001),
  FLOWGATE_STATUS_PORT: port.optional(),
  FLOWGATE_SHUTDOWN_GRACE_MS: z.coerce.number().int().min(0).default(10_000),
  FLOWGATE_BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).default(1_048_576),
  /** The largest upstream answer the gateway takes (it holds answers whole, to transform them): a bigger one is 502 upstream_response_too_large. */
  FLOWGATE_UPSTREAM_MAX_RESPONSE_BYTES: z.coerce.number().int().min(1024).default(DEFAULT_MAX_RESPONSE_BYTES),
  /**
   * Addresses tenants' upstreams may never reach (lib/upstream-policy.ts), comma-separated: CIDRs
   * (the platform's own network in a cluster) and `address:port` entries (on this machine's
   * addresses, that port on every one of them). Link-local addresses and the gateway's own ports
   * are refused without being listed.
   */
  FLOWGATE_UPSTREAM_DENY: commaList(parseDenyEntry, 'neither a CIDR nor an address:port'),
  /** How long the gateway keeps a route's credential read from OpenBao (`{vault:NAME#FIELD}` header values) before reading it again. */
  FLOWGATE_SECRET_REF_TTL_MS: z.coerce.number().int().min(100).max(3_600_000).default(60_000),
  /**
   * Proxies in front of the gateway (a load balancer, an ingress controller), comma-separated
   * addresses or CIDRs: from them, the client's address is taken from X-Forwarded-For (its last
   * entry not a trusted proxy) and the scheme from X-Forwarded-Proto, for ip-restriction, ABAC
   * source rules and the audit's client_ip. None by default: the peer's address is the client's.
   */
  // A prefix of at least 1: `/0` would trust every address (and proxy-addr refuses it).
  FLOWGATE_TRUSTED_PROXIES: commaList((e) => (isAddressOrCidr(e, 1) ? e : undefined), 'neither an IP address nor a CIDR'),
  /** Upstreams on loopback: refused unless `true` (a local stack, whose upstreams run on the machine). */
  FLOWGATE_UPSTREAM_ALLOW_LOOPBACK: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),

  FLOWGATE_TEMPORAL_ADDRESS: hostPort.default('127.0.0.1:7233'),
  FLOWGATE_TEMPORAL_NAMESPACE: z.string().min(1).default('default'),
  /** How long a call to Temporal for a waiting client (the gateway's status, list and cancel; the Admin API's runbook runs) waits before it answers without Temporal. */
  FLOWGATE_TEMPORAL_CALL_TIMEOUT_MS: z.coerce.number().int().min(100).default(3000),
  FLOWGATE_TASK_QUEUE: z.string().min(1).default('flowgate'),
  FLOWGATE_NATS_URL: url(['nats:', 'tls:']).default('nats://127.0.0.1:4222'),
  /** The processes' role: data access only, under row-level security. */
  FLOWGATE_DATABASE_URL: url(['postgres:', 'postgresql:']).default('postgres://flowgate_app:flowgate_app@127.0.0.1:5432/flowgate'),
  /** A Vault KV path (`{username, password}`) the processes' pools take their login from, following its rotations; unset: the URL's. */
  FLOWGATE_DATABASE_CREDENTIALS: z.string().min(1).optional(),
  /** The schema owner's role, used by `flowgate provision` to migrate; defaults to FLOWGATE_DATABASE_URL. */
  FLOWGATE_DATABASE_OWNER_URL: url(['postgres:', 'postgresql:']).optional(),
  /** DB-less gateway: serve the workspaces of this declarative YAML file alone, without PostgreSQL. */
  FLOWGATE_DECLARATIVE_CONFIG: z.string().min(1).optional(),
  /** How often the data plane pulls the config (seed 000: 30 s), besides config.invalidations. */
  FLOWGATE_CONFIG_REFRESH_MS: z.coerce.number().int().min(100).default(30_000),
  /** The group a gateway instance belongs to for config rollouts (a canary group gets a new version first). */
  FLOWGATE_GATEWAY_GROUP: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/).default('stable'),
  /** The key of the database topology (NATS KV, lib/db-topology.ts) the pools follow, when there is one. */
  FLOWGATE_DATABASE_CLUSTER: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/).default('main'),
  /** The worker's database watchdog: off; `approval` starts a failover run that waits for an operator; `automatic` one that does not. */
  FLOWGATE_DB_FAILOVER: z.enum(['off', 'approval', 'automatic']).default('approval'),
  /**
   * How often the watchdog probes the primary, and how many failed probes in a row mean it is down.
   * The interval is also the failover run's probe_interval_ms, which the runbook bounds (lib/runbooks.ts):
   * a longer one would make every run the watchdog starts fail to start.
   */
  FLOWGATE_DB_PROBE_MS: z.coerce.number().int().min(100).max(MAX_PROBE_INTERVAL_MS, `must be at most ${MAX_PROBE_INTERVAL_MS} (the database-failover runbook's probe_interval_ms takes no more)`).default(1000),
  FLOWGATE_DB_PROBE_FAILURES: z.coerce.number().int().min(1).default(3),
  /** PostgreSQL's client and server programs (pg_dump, pg_restore, initdb, postgres) for the backup drill. */
  FLOWGATE_PG_BIN: z.string().min(1).optional(),
  /** The worker's prebuilt workflow bundle (the image builds one); unset, workflows are bundled at start. */
  FLOWGATE_WORKFLOW_BUNDLE: z.string().min(1).optional(),
  /** Where the backup drill writes its dumps. */
  FLOWGATE_BACKUP_DIR: z.string().min(1).optional(),
  /**
   * How often every process says it is alive on `health.heartbeats`. Seed 000 says 30 s but also
   * wants a silent process reported within 10 s, which a 30 s beat cannot give: 3 s it is.
   */
  FLOWGATE_HEARTBEAT_MS: z.coerce.number().int().min(100).default(3000),
  /** The heartbeat monitor (admin) reports an instance silent after this long without a beat. */
  FLOWGATE_HEARTBEAT_SILENT_MS: z.coerce.number().int().min(200).default(9000),
  /** OTLP/HTTP collector base URL (traces go to `<url>/v1/traces`); unset: no trace export. */
  FLOWGATE_OTLP_ENDPOINT: url(['http:', 'https:']).optional(),
  /** The share of traces kept when nothing failed (spans with an error are always exported). */
  FLOWGATE_TRACE_SAMPLE: z.coerce.number().min(0).max(1).default(0.05),
  /** Provisioning: JetStream replicas per stream (3 on a NATS cluster); unset, streams keep theirs (new ones get 1). */
  FLOWGATE_NATS_STREAM_REPLICAS: z.coerce.number().int().min(1).max(5).optional(),
  /** Provisioning: the replication factor of topics it creates (3 on a Kafka cluster, with min.insync.replicas 2). */
  FLOWGATE_KAFKA_REPLICATION_FACTOR: z.coerce.number().int().min(1).max(7).default(1),
  /**
   * The consumer group of the api.events trigger rules. Two deployments sharing a Kafka cluster
   * need two; tests that start consumers of their own use one of their own, so a consumer they
   * kill never holds the stack's partitions.
   */
  FLOWGATE_EVENT_RULES_GROUP: z.string().regex(/^[A-Za-z0-9._-]{1,200}$/).default('flowgate-event-triggers'),
  FLOWGATE_KAFKA_BROKERS: z
    .string()
    .default('127.0.0.1:9092')
    .transform((v) => v.split(',').map((b) => b.trim()).filter(Boolean))
    .pipe(z.array(hostPort).min(1)),
  FLOWGATE_VAULT_ADDR: url(['http:', 'https:']).default('http://127.0.0.1:8200'),
  FLOWGATE_VAULT_TOKEN: z.string().min(1).optional(),
  FLOWGATE_REDIS_URL: url(['redis:', 'rediss:']).default('redis://127.0.0.1:6379'),
  /**
   * How long a rate-limit check waits for Redis before deciding locally. A dead Redis is noticed
   * at once (the connection closes); this bounds a slow or hung one. Kong waits 2 s; shorter
   * than about 1 s, a starved CPU (event-loop lag) makes timeouts fire while Redis is fine, and
   * the limit is then enforced per instance instead of once.
   */
  FLOWGATE_RATE_LIMIT_TIMEOUT_MS: z.coerce.number().int().min(5).max(5000).default(1000),
  /** With `api.example.com`, a request to `acme.api.example.com` names tenant `acme`. Unset: hosts name no tenant. */
  FLOWGATE_TENANT_HOST_SUFFIX: z.string().regex(/^[a-z0-9.-]+$/).optional(),
  /** Where a gateway keeps audit records while Kafka is away, so they outlive the process (one file per gateway port). */
  FLOWGATE_SPOOL_DIR: z.string().min(1).optional(),
  /** The share of successful requests kept in api_calls (every error is kept). */
  FLOWGATE_API_CALLS_SAMPLE: z.coerce.number().min(0).max(1).default(0.01),
  /** Triggers waiting to start (all tenants) at which the gateway answers new ones 429 with Retry-After. */
  FLOWGATE_TRIGGER_BACKLOG_MAX: z.coerce.number().int().min(1).default(500_000),
  /** The same bound for one tenant's waiting triggers. */
  FLOWGATE_TRIGGER_BACKLOG_TENANT_MAX: z.coerce.number().int().min(1).default(100_000),
  /** How often the gateway reads the trigger backlog from JetStream. */
  FLOWGATE_TRIGGER_BACKLOG_POLL_MS: z.coerce.number().int().min(100).max(60_000).default(1000),
  /** The gateway's TLS listener: a port, certificate and key together, or none of them (off); some without the others is a configuration error. */
  FLOWGATE_TLS_PORT: port.optional(),
  FLOWGATE_TLS_CERT: z.string().min(1).optional(),
  FLOWGATE_TLS_KEY: z.string().min(1).optional(),
  /** CA bundle for client certificates (mTLS): with it the TLS listener asks clients for one. */
  FLOWGATE_TLS_CLIENT_CA: z.string().min(1).optional(),
  /**
   * Webhooks a workflow could not deliver in its 3 attempts go to the worker's retrier
   * (lib/webhook-deliveries.ts): its first retry this long after, then pauses that double up to
   * an hour, for FLOWGATE_WEBHOOK_RETRY_FOR_S (3 days); it looks for due ones every POLL_MS.
   */
  FLOWGATE_WEBHOOK_RETRY_BASE_MS: z.coerce.number().int().min(100).default(60_000),
  FLOWGATE_WEBHOOK_RETRY_FOR_S: z.coerce.number().int().min(1).default(3 * 86_400),
  FLOWGATE_WEBHOOK_RETRY_POLL_MS: z.coerce.number().int().min(50).default(5000),
  /**
   * Webhooks (X-Callback-URL, a rule's callback_url) go to public addresses only: a callback to
   * loopback, a private network or link-local (a cloud's metadata endpoint) is refused when sent,
   * whether the URL names one or a name resolves to one, and an X-Callback-URL naming one is a
   * 400 at accept time. `true` allows them: a local stack, whose receivers run on the same machine.
   */
  FLOWGATE_WEBHOOK_ALLOW_PRIVATE: z.enum(['true', 'false']).default('false').transform((v) => v === 'true'),
  /** Third parties activities call (lib/third-party/services.ts), as a JSON array. */
  FLOWGATE_THIRD_PARTIES: z
    .string()
    .default(DEFAULT_THIRD_PARTIES)
    .transform((v, ctx) => {
      try {
        return JSON.parse(v) as unknown;
      } catch {
        ctx.addIssue({ code: 'custom', message: 'must be a JSON array' });
        return z.NEVER;
      }
    })
    .pipe(thirdPartyServices),

  /** Signs execution ids so the status API can tell an accepted-but-not-started id from a made-up one. */
  FLOWGATE_EXECUTION_ID_SECRET: z.string().min(16, 'must be at least 16 characters').default('flowgate-local-only-execution-secret'),
  /** How many triggers a consumer process works on at once. */
  FLOWGATE_CONSUMER_CONCURRENCY: z.coerce.number().int().min(1).max(1024).default(64),
  /** Ordinary failures of one trigger before it is dead-lettered (outage retries and redeliveries after a crash do not count). */
  FLOWGATE_CONSUMER_MAX_DELIVER: z.coerce.number().int().min(1).default(10),
  /** How long JetStream waits for an ack before redelivering to another consumer. */
  FLOWGATE_CONSUMER_ACK_WAIT_MS: z.coerce.number().int().min(500).default(30_000),
  /** Fault injection for tests only: `exit-after-start` kills the consumer between Temporal's start and the ack; `events-consumer-crash` fails the api.events consumer on its first record with an error kafkajs does not restart it after. */
  FLOWGATE_FAILPOINT: z.enum(['exit-after-start', 'events-consumer-crash']).optional(),
});

export type Config = z.infer<typeof configSchema> & { statusPort: number; process: ProcessName };

export class ConfigError extends Error {
  constructor(readonly issues: { variable: string; message: string }[]) {
    super(`invalid configuration: ${issues.map((i) => `${i.variable}: ${i.message}`).join('; ')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Docker's and Kubernetes' secrets convention: `FLOWGATE_X_FILE=/path` sets `FLOWGATE_X` from the
 * file (trailing whitespace trimmed), so a secret rendered by Vault Agent never sits in the pod spec.
 * Setting both is refused: which one wins would be a guess.
 */
export function resolveFileVariables(env: NodeJS.ProcessEnv): { env: NodeJS.ProcessEnv; issues: { variable: string; message: string }[] } {
  const out: NodeJS.ProcessEnv = { ...env };
  const issues: { variable: string; message: string }[] = [];
  for (const [key, file] of Object.entries(env)) {
    const m = /^(FLOWGATE_[A-Z0-9_]+)_FILE$/.exec(key);
    if (!m || file === undefined || file === '') continue;
    const target = m[1]!;
    if (env[target] !== undefined && env[target] !== '') {
      issues.push({ variable: key, message: `both ${target} and ${key} are set; set one` });
      continue;
    }
    try {
      out[target] = readFileSync(file, 'utf8').replace(/\s+$/, '');
    } catch (err) {
      issues.push({ variable: key, message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}` });
    }
  }
  return { env: out, issues };
}

/** Parses the environment once, at start-up; throws ConfigError naming each bad variable. */
export function loadConfig(processName: ProcessName, rawEnv: NodeJS.ProcessEnv = process.env): Config {
  const { env, issues } = resolveFileVariables(rawEnv);
  if (issues.length) throw new ConfigError(issues);
  const result = configSchema.safeParse(env);
  if (!result.success) {
    throw new ConfigError(
      result.error.issues.map((i) => ({ variable: String(i.path[0] ?? '(environment)'), message: i.message })),
    );
  }
  // The TLS listener takes its port, certificate and key together: some of them alone would start
  // no listener, silently.
  const required = ['FLOWGATE_TLS_PORT', 'FLOWGATE_TLS_CERT', 'FLOWGATE_TLS_KEY'] as const;
  const given = [...required, 'FLOWGATE_TLS_CLIENT_CA' as const].filter((v) => result.data[v] !== undefined);
  const missing = required.filter((v) => result.data[v] === undefined);
  if (given.length && missing.length) {
    throw new ConfigError(missing.map((variable) => ({
      variable, message: `the TLS listener needs FLOWGATE_TLS_PORT, FLOWGATE_TLS_CERT and FLOWGATE_TLS_KEY together (${given.join(', ')} given)`,
    })));
  }
  return {
    ...result.data,
    process: processName,
    statusPort: result.data.FLOWGATE_STATUS_PORT ?? DEFAULT_STATUS_PORTS[processName],
  };
}
