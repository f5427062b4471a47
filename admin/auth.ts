import type { FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import type { BUILT_IN_ROLES} from '../lib/control-plane/schemas';
import { type Resource } from '../lib/control-plane/schemas';
import { credentialOf, hashCredential } from '../lib/credentials';
import { ApiError } from '../lib/errors';
import { asPlatform } from '../lib/postgres';

export type Action = 'read' | 'write';
export type AdminPrincipal = { tokenId: string; name: string; role: string; workspace: string | null; grants: string[] };

/**
 * What each built-in role may do. Custom roles (rbac_roles) list grants of the same form,
 * `resource:action` with `*` for any. Admins do everything; operators run runbooks and read;
 * developers edit what routes traffic (services, routes, plugins, triggers); viewers read.
 */
export const BUILT_IN_GRANTS: Record<(typeof BUILT_IN_ROLES)[number], string[]> = {
  admin: ['*:*'],
  operator: ['*:read', 'runbooks:*'],
  developer: ['*:read', 'services:write', 'routes:write', 'plugins:write', 'triggers:write'],
  viewer: ['*:read'],
};

export function allows(grants: readonly string[], resource: Resource, action: Action): boolean {
  return grants.some((g) => {
    const [r, a] = g.split(':');
    return (r === '*' || r === resource) && (a === '*' || a === action);
  });
}

type TokenRow = { id: string; name: string; role: string; workspace_id: string | null };

/**
 * The platform-wide tokens (operators and admins with built-in roles), re-read every 30 s: when
 * PostgreSQL cannot be reached — a failover waiting for its approval — these still authenticate,
 * so operators can drive runbooks. A revocation reaches the mirror within 30 s.
 */
export class PlatformTokenMirror {
  private tokens = new Map<string, TokenRow>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly pool: Pool, private readonly everyMs = 30_000) {}

  async refresh(): Promise<void> {
    const rows = await asPlatform(this.pool, async (db) => (await db.query<TokenRow & { token_hash: Buffer }>(
      'SELECT id, name, role, workspace_id, token_hash FROM admin_tokens WHERE workspace_id IS NULL AND revoked_at IS NULL')).rows);
    this.tokens = new Map(rows.filter((r) => r.role in BUILT_IN_GRANTS).map((r) => [r.token_hash.toString('hex'), r]));
  }

  start(): void {
    const tick = () => void this.refresh().catch(() => undefined).finally(() => { this.timer = setTimeout(tick, this.everyMs); this.timer.unref(); });
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** A platform token that just authenticated against PostgreSQL is mirrored at once. */
  remember(hash: Buffer, row: TokenRow): void {
    if (row.workspace_id === null && row.role in BUILT_IN_GRANTS) this.tokens.set(hash.toString('hex'), row);
  }

  find(hash: Buffer): TokenRow | undefined {
    return this.tokens.get(hash.toString('hex'));
  }
}

/**
 * Control-plane credentials: a bearer token whose hash is in admin_tokens, with a role. If
 * PostgreSQL does not answer, a platform-wide token is checked against the mirror instead.
 */
export async function authenticateAdmin(pool: Pool, req: FastifyRequest, mirror?: PlatformTokenMirror): Promise<AdminPrincipal> {
  const token = credentialOf(req);
  if (!token) throw new ApiError(401, 'unauthenticated', 'missing credential: send Authorization: Bearer <admin token>', undefined, { 'WWW-Authenticate': 'Bearer' });
  try {
    const who = await lookupToken(pool, token);
    mirror?.remember(hashCredential(token), { id: who.tokenId, name: who.name, role: who.role, workspace_id: who.workspace });
    return who;
  } catch (err) {
    const known = !(err instanceof ApiError) ? mirror?.find(hashCredential(token)) : undefined;
    if (!known) throw err;
    req.log.warn({ token: known.name }, 'PostgreSQL unreachable: platform token checked against the mirror');
    return { tokenId: known.id, name: known.name, role: known.role, workspace: null, grants: BUILT_IN_GRANTS[known.role as keyof typeof BUILT_IN_GRANTS] };
  }
}

async function lookupToken(pool: Pool, token: string): Promise<AdminPrincipal> {
  return asPlatform(pool, async (db) => {
    const res = await db.query<{ id: string; name: string; role: string; workspace_id: string | null }>(
      'SELECT id, name, role, workspace_id FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL',
      [hashCredential(token)],
    );
    const row = res.rows[0];
    if (!row) throw new ApiError(401, 'invalid_credential', 'the token is not valid', undefined, { 'WWW-Authenticate': 'Bearer' });
    // Own keys only: a custom role may be named `constructor` or `toString`.
    let grants = Object.hasOwn(BUILT_IN_GRANTS, row.role) ? BUILT_IN_GRANTS[row.role as keyof typeof BUILT_IN_GRANTS] : undefined;
    if (!grants && row.workspace_id) {
      const custom = await db.query<{ grants: string[] }>('SELECT grants FROM rbac_roles WHERE workspace_id = $1 AND name = $2', [row.workspace_id, row.role]);
      grants = custom.rows[0]?.grants ?? [];
    }
    return { tokenId: row.id, name: row.name, role: row.role, workspace: row.workspace_id, grants: grants ?? [] };
  });
}

export function authorize(who: AdminPrincipal, resource: Resource, action: Action): void {
  if (!allows(who.grants, resource, action)) {
    throw new ApiError(403, 'forbidden', `the ${who.role} role may not ${action} ${resource}`, [{ field: 'authorization', message: `needs ${resource}:${action}` }]);
  }
}

/**
 * The workspace a call is about: `?workspace=`, else `X-Tenant-ID`, else the token's own. A token
 * bound to one workspace never reaches another: it is told "not found", as if it did not exist.
 */
export function workspaceOf(who: AdminPrincipal, req: FastifyRequest): string {
  const q = (req.query as Record<string, unknown> | undefined)?.workspace;
  const h = req.headers['x-tenant-id'];
  const named = typeof q === 'string' && q ? q : typeof h === 'string' && h ? h : undefined;
  const ws = named ?? who.workspace;
  if (!ws) throw new ApiError(400, 'validation_failed', 'name the workspace', [{ field: 'query.workspace', message: 'required for a platform-wide token' }]);
  if (who.workspace !== null && who.workspace !== ws) throw new ApiError(404, 'not_found', 'workspace not found');
  return ws;
}
