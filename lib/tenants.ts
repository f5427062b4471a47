import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import { newCredential } from './credentials';

export type Role = 'admin' | 'operator' | 'developer' | 'viewer';
type Db = Pool | PoolClient;

/** Creates a workspace with its webhook secret; a no-op if it exists. */
export async function ensureWorkspace(db: Db, id: string, name: string): Promise<void> {
  await db.query('INSERT INTO workspaces (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING', [id, name]);
  await db.query('INSERT INTO webhook_secrets (workspace_id, secret) VALUES ($1, $2) ON CONFLICT DO NOTHING', [
    id,
    randomBytes(32).toString('base64url'),
  ]);
}

/** Issues an API key for a consumer of the workspace; the value is returned once and stored hashed. */
export async function issueApiKey(db: Db, workspaceId: string, username: string): Promise<{ key: string; consumerId: string }> {
  const consumer = await db.query<{ id: string }>(
    `INSERT INTO consumers (workspace_id, username) VALUES ($1, $2)
     ON CONFLICT (workspace_id, username) DO UPDATE SET username = EXCLUDED.username RETURNING id`,
    [workspaceId, username],
  );
  const consumerId = consumer.rows[0]!.id;
  const cred = newCredential('key');
  await db.query('INSERT INTO api_keys (workspace_id, consumer_id, key_prefix, key_hash) VALUES ($1, $2, $3, $4)', [
    workspaceId, consumerId, cred.prefix, cred.hash,
  ]);
  return { key: cred.value, consumerId };
}

/** Issues a control-plane token with a role, for one workspace or (null) all of them. */
export async function issueAdminToken(db: Db, workspaceId: string | null, name: string, role: Role): Promise<string> {
  const cred = newCredential('admin');
  await db.query('INSERT INTO admin_tokens (workspace_id, name, role, token_hash) VALUES ($1, $2, $3, $4)', [
    workspaceId, name, role, cred.hash,
  ]);
  return cred.value;
}
