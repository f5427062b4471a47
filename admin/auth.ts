import type { FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { credentialOf, hashCredential } from '../lib/credentials';
import { ApiError } from '../lib/errors';
import type { Role } from '../lib/tenants';

export type AdminPrincipal = { tokenId: string; name: string; role: Role; workspace: string | null };

const RANK: Record<Role, number> = { viewer: 0, developer: 1, operator: 2, admin: 3 };

/** Control-plane credentials: a bearer token whose hash is in admin_tokens, with a role. */
export async function authenticateAdmin(pool: Pool, req: FastifyRequest, least: Role): Promise<AdminPrincipal> {
  const token = credentialOf(req);
  if (!token) throw new ApiError(401, 'unauthenticated', 'missing credential: send Authorization: Bearer <admin token>');
  const res = await pool.query<{ id: string; name: string; role: Role; workspace_id: string | null }>(
    'SELECT id, name, role, workspace_id FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL',
    [hashCredential(token)],
  );
  const row = res.rows[0];
  if (!row) throw new ApiError(401, 'invalid_credential', 'the token is not valid');
  if (RANK[row.role] < RANK[least]) throw new ApiError(403, 'forbidden', `this call needs the ${least} role`);
  return { tokenId: row.id, name: row.name, role: row.role, workspace: row.workspace_id };
}
