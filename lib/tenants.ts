import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import { writeAudit } from './audit';
import { ApiError } from './errors';
import { beginChange, finishChange, type ChangeContext } from './control-plane/versions';
import { newCredential } from './credentials';
import { asPlatform, inWorkspace } from './postgres';

export type Role = 'admin' | 'operator' | 'developer' | 'viewer';

const SYSTEM: ChangeContext = { actor: 'system' };

/** Serialises creating and deleting one workspace id, so a deletion's retirement of the id is seen. */
export const lockWorkspaceId = (db: PoolClient, id: string) => db.query("SELECT pg_advisory_xact_lock(hashtext('flowgate.workspace:' || $1))", [id]);

/**
 * Creates a workspace with its default webhook secret and config version 1; returns false
 * (and changes nothing) if it exists. The id of a deleted workspace is never given out again:
 * `409 workspace_id_retired` (its audit rows and Temporal executions outlive it, and would be the
 * new workspace's to read).
 */
export async function ensureWorkspace(pool: Pool, id: string, name: string, ctx: ChangeContext = SYSTEM): Promise<boolean> {
  const created = await asPlatform(pool, async (db) => {
    await lockWorkspaceId(db, id);
    if ((await db.query('SELECT 1 FROM retired_workspaces WHERE id = $1', [id])).rowCount) {
      throw new ApiError(409, 'workspace_id_retired', `workspace ${id} was deleted; its id is not given out again (its audit trail and executions stay its own)`, [{ field: 'body.id', message: 'retired' }]);
    }
    const res = await db.query('INSERT INTO workspaces (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING RETURNING id', [id, name]);
    if (!res.rowCount) return false;
    await db.query('INSERT INTO webhook_secrets (workspace_id, secret) VALUES ($1, $2)', [id, randomBytes(32).toString('base64url')]);
    await writeAudit(db, { workspace: id, actor: ctx.actor, action: 'create', entityType: 'workspace', entityId: id, after: { id, name }, correlationId: ctx.correlationId });
    return true;
  });
  if (created) {
    await inWorkspace(pool, id, async (db) => {
      await beginChange(db, id);
      await finishChange(db, id, ctx, 'workspace created', []);
    });
  }
  return created;
}

/** Issues an API key for a consumer of the workspace (created if needed); the value is returned once and stored hashed. */
export async function issueApiKey(pool: Pool, workspaceId: string, username: string, ctx: ChangeContext = SYSTEM): Promise<{ key: string; consumerId: string; keyId: string }> {
  return inWorkspace(pool, workspaceId, async (db) => {
    await beginChange(db, workspaceId);
    const consumer = await db.query<{ id: string }>(
      `INSERT INTO consumers (workspace_id, username) VALUES ($1, $2)
       ON CONFLICT (workspace_id, username) DO UPDATE SET username = EXCLUDED.username RETURNING id`,
      [workspaceId, username],
    );
    const consumerId = consumer.rows[0]!.id;
    const cred = newCredential('key');
    const key = await db.query<{ id: string }>('INSERT INTO api_keys (workspace_id, consumer_id, key_prefix, key_hash) VALUES ($1, $2, $3, $4) RETURNING id', [
      workspaceId, consumerId, cred.prefix, cred.hash,
    ]);
    const keyId = key.rows[0]!.id;
    await finishChange(db, workspaceId, ctx, `key ${cred.prefix} issued to ${username}`, [
      { action: 'create', entityType: 'api_key', entityId: keyId, after: { consumer: username, prefix: cred.prefix } },
    ]);
    return { key: cred.value, consumerId, keyId };
  });
}

/** Issues a control-plane token with a role, for one workspace or (null) all of them. */
export async function issueAdminToken(pool: Pool, workspaceId: string | null, name: string, role: string, ctx: ChangeContext = SYSTEM): Promise<{ token: string; id: string }> {
  const cred = newCredential('admin');
  return asPlatform(pool, async (db) => {
    const res = await db.query<{ id: string }>('INSERT INTO admin_tokens (workspace_id, name, role, token_hash) VALUES ($1, $2, $3, $4) RETURNING id', [
      workspaceId, name, role, cred.hash,
    ]);
    const id = res.rows[0]!.id;
    await writeAudit(db, { workspace: workspaceId, actor: ctx.actor, action: 'create', entityType: 'admin_token', entityId: id, after: { name, role }, correlationId: ctx.correlationId });
    return { token: cred.value, id };
  });
}

/**
 * Revokes a platform-wide token in `db`'s transaction (platform scope). Refused (409) for the last
 * live platform-wide admin token, which would leave the platform's Admin API to SQL alone.
 */
export async function revokePlatformToken(db: PoolClient, id: string, ctx: ChangeContext): Promise<void> {
  // Serialized with other revocations, so two at once cannot each leave the other as the last admin.
  await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', ['flowgate:platform-admin-tokens']);
  const row = (await db.query<{ role: string; name: string }>('SELECT name, role FROM admin_tokens WHERE id = $1 AND workspace_id IS NULL AND revoked_at IS NULL', [id])).rows[0];
  if (!row) throw new ApiError(404, 'not_found', 'token not found');
  if (row.role === 'admin') {
    const others = (await db.query("SELECT 1 FROM admin_tokens WHERE workspace_id IS NULL AND role = 'admin' AND revoked_at IS NULL AND id <> $1 LIMIT 1", [id])).rowCount;
    if (!others) throw new ApiError(409, 'conflict', 'the last live platform-wide admin token: issue another one first', [{ field: 'params.id', message: 'the last platform admin' }]);
  }
  await db.query('UPDATE admin_tokens SET revoked_at = now() WHERE id = $1', [id]);
  await writeAudit(db, { workspace: null, actor: ctx.actor, action: 'delete', entityType: 'admin_token', entityId: id, before: row, correlationId: ctx.correlationId });
}
