import type { Pool, PoolClient } from 'pg';

export type AuditEntry = {
  workspace: string | null;
  actor: string;
  action: string;
  entityType: string;
  entityId?: string | null;
  before?: unknown;
  after?: unknown;
  correlationId?: string | null;
  configVersion?: number | null;
};

const json = (v: unknown) => (v === undefined || v === null ? null : JSON.stringify(v));

/** One insert-only audit_logs row (before/after snapshots); pass a transaction's client to make it atomic with the change. */
export async function writeAudit(db: Pool | PoolClient, e: AuditEntry): Promise<void> {
  await db.query(
    `INSERT INTO audit_logs (workspace_id, actor, action, entity_type, entity_id, before, after, correlation_id, config_version)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [e.workspace, e.actor, e.action, e.entityType, e.entityId ?? null, json(e.before), json(e.after), e.correlationId ?? null, e.configVersion ?? null],
  );
}
