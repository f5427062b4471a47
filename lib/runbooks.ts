import { z } from 'zod';
import { SECRETS } from './secrets';

/** The longest probe interval a failover run takes (the watchdog's FLOWGATE_DB_PROBE_MS is bounded by it). */
export const MAX_PROBE_INTERVAL_MS = 10_000;

/**
 * The runbooks operators start through the Admin API and the CLI: parameters (zod, published as
 * JSON Schema), the steps a run shows, who may approve its gates, the workflow that runs it.
 * Runbooks are platform operations: their runs belong to no workspace (tenant `_platform`).
 */
export type RunbookDef = {
  name: string;
  workflow: string;
  description: string;
  params: z.ZodType<Record<string, unknown>>;
  steps: string[];
  approverRoles: string[];
  /** What an approver may send with a decision on this runbook's gates (refused with 400 otherwise). */
  approvalPayload: z.ZodType<Record<string, unknown>>;
  /** One run at a time per key (e.g. per secret; URL-safe characters): a second start is refused while one runs. */
  exclusiveKey?: (params: Record<string, unknown>) => string;
  /**
   * The parameter that, set, lets a run go without the approval its gate otherwise asks for; only
   * an admin may start a run with it (an operator could otherwise skip the second person).
   */
  skipsApproval?: (params: Record<string, unknown>) => string | undefined;
};

export const PLATFORM_TENANT = '_platform';
const APPROVERS = ['operator', 'admin'];

const definitions: RunbookDef[] = [
  {
    name: 'rotate-secret',
    workflow: 'rotateSecret',
    description: 'Rotates a secret on Vault KV v2 in four steps (create pending, set on the target, test, finish) and revokes the previous one after a grace period; a failed test rolls back.',
    params: z.object({
      secret: z.enum(SECRETS.map((s) => s.path) as [string, ...string[]]),
      grace_seconds: z.number().int().min(0).max(30 * 86_400).default(3600),
      require_approval: z.boolean().default(false),
      approval_timeout_seconds: z.number().int().min(1).max(30 * 86_400).default(86_400),
    }).strict(),
    steps: ['inspect', 'approve', 'create-pending', 'set-on-target', 'test', 'finish', 'notify', 'revoke-previous'],
    approverRoles: APPROVERS,
    approvalPayload: z.object({ change_ticket: z.string().min(1).max(100).optional() }).strict(),
    exclusiveKey: (p) => `secret-${String(p.secret).replace(/[^A-Za-z0-9-]/g, '_')}`,
  },
  {
    name: 'config-rollout',
    workflow: 'configRollout',
    description: "Rolls a workspace's gateway config from the version every gateway is held on to a newer one: validate, diff, canary group, bake on real gateway metrics, promote to all, or restore automatically when the canary breaches.",
    params: z.object({
      workspace: z.string().min(1).max(100),
      to_version: z.number().int().min(1).optional(),
      canary_group: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/).default('canary'),
      bake_seconds: z.number().int().min(1).max(3600).default(60),
      max_error_rate: z.number().min(0).max(1).default(0.01),
      max_p99_ms: z.number().min(1).default(500),
      min_requests: z.number().int().min(0).default(20),
      require_approval: z.boolean().default(false),
      approval_timeout_seconds: z.number().int().min(1).max(30 * 86_400).default(86_400),
    }).strict(),
    steps: ['validate', 'diff', 'canary', 'bake', 'approve', 'promote'],
    approverRoles: APPROVERS,
    approvalPayload: z.object({ change_ticket: z.string().min(1).max(100).optional() }).strict(),
    exclusiveKey: (p) => `workspace-${String(p.workspace).replace(/[^A-Za-z0-9-]/g, '_')}`,
  },
  {
    name: 'database-failover',
    workflow: 'databaseFailover',
    description: "Fails the platform's PostgreSQL over to its streaming standby: confirm the primary is down, approval unless automatic, fence the old primary, promote the standby, repoint every process, verify a write, report RTO and RPO.",
    params: z.object({
      cluster: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/).default('main'),
      automatic: z.boolean().default(false),
      probes: z.number().int().min(1).max(30).default(3),
      probe_interval_ms: z.number().int().min(100).max(MAX_PROBE_INTERVAL_MS).default(1000),
      approval_timeout_seconds: z.number().int().min(1).max(30 * 86_400).default(86_400),
      down_since: z.string().datetime().optional(),
      last_primary_lsn: z.string().regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/).optional(),
      expected_epoch: z.number().int().min(1).optional(),
    }).strict(),
    steps: ['detect', 'approve', 'fence', 'promote', 'repoint', 'verify', 'report'],
    approverRoles: APPROVERS,
    // The approver types the address of the primary being given up on (checked by the run).
    approvalPayload: z.object({ confirm_primary: z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, 'host:port of the primary to fence') }).strict(),
    exclusiveKey: (p) => `cluster-${String(p.cluster)}`,
    // The worker's watchdog starts automatic runs itself (FLOWGATE_DB_FAILOVER=automatic).
    skipsApproval: (p) => (p.automatic === true ? 'automatic' : undefined),
  },
  {
    name: 'backup-drill',
    workflow: 'backupDrill',
    description: "Backs the platform's database up (one snapshot, every table's row count and checksum), restores it into a scratch PostgreSQL instance, verifies the counts and checksums, reports the durations and removes the scratch instance.",
    params: z.object({ keep_backup: z.boolean().default(false) }).strict(),
    steps: ['backup', 'scratch', 'restore', 'verify', 'teardown'],
    approverRoles: APPROVERS,
    approvalPayload: z.object({}).strict(),
    exclusiveKey: () => 'database',
  },
  {
    name: 'gateway-instance-loss',
    workflow: 'gatewayInstanceLoss',
    description: 'Stops one gateway instance (named, or the first of a group) and verifies the others keep serving: every request to every survivor answered, before and after.',
    params: z.object({
      instance: z.string().min(1).max(300).optional(),
      group: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/).optional(),
      requests: z.number().int().min(1).max(10_000).default(50),
      gone_timeout_seconds: z.number().int().min(1).max(600).default(30),
    }).strict(),
    steps: ['inventory', 'probe-before', 'stop-instance', 'confirm-gone', 'probe-after', 'report'],
    approverRoles: APPROVERS,
    approvalPayload: z.object({}).strict(),
    // One drill at a time in the whole fleet: two drills (a group and an instance in it, say) could
    // each see a survivor in the other's target and together stop the last gateways.
    exclusiveKey: () => 'fleet',
  },
];

const byName = new Map(definitions.map((d) => [d.name, d]));
export const runbooks = (): readonly RunbookDef[] => definitions;
export const findRunbook = (name: string) => byName.get(name);
export const runbookOfWorkflow = (workflow: string) => definitions.find((d) => d.workflow === workflow);
