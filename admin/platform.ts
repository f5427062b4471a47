import { createHash, randomBytes } from 'node:crypto';
import type { PoolClient } from 'pg';
import { z } from 'zod';
import { writeAudit } from '../lib/audit';
import { BUILT_IN_ROLES, entityName, workspaceInput } from '../lib/control-plane/schemas';
import { ApiError } from '../lib/errors';
import { asPlatform, inWorkspace } from '../lib/postgres';
import { ensureWorkspace, issueAdminToken, lockWorkspaceId, revokePlatformToken } from '../lib/tenants';
import type { AdminDeps } from './app';
import { idParam } from './collections';
import { workspaceParam, type AdminApi } from './endpoint';

/** Workspaces, control-plane tokens, webhook secrets and the audit log. */
export function registerPlatform(api: AdminApi, deps: AdminDeps): void {
  const { pool } = deps;
  const scopedQuery = z.object(workspaceParam).strict();
  const actor = (name: string) => `token:${name}`;

  // Workspaces: a platform-wide token sees and manages all; a workspace token sees its own.
  api.add({
    method: 'GET', url: '/workspaces', summary: 'List the workspaces the token can see', tag: 'workspaces', resource: 'workspaces', action: 'read', scoped: false,
    handler: async ({ who }) => asPlatform(pool, async (db) => ({
      data: (await db.query('SELECT id, name, config_version, created_at, updated_at FROM workspaces WHERE $1::text IS NULL OR id = $1 ORDER BY id', [who.workspace])).rows,
    })),
  });
  api.add({
    method: 'GET', url: '/workspaces/:id', summary: 'Read a workspace', tag: 'workspaces', resource: 'workspaces', action: 'read', scoped: false, params: idParam,
    handler: async ({ who, params }) => {
      if (who.workspace !== null && who.workspace !== params.id) throw new ApiError(404, 'not_found', 'workspace not found');
      const row = await inWorkspace(pool, params.id, async (db) => (await db.query('SELECT id, name, config_version, created_at, updated_at FROM workspaces WHERE id = $1', [params.id])).rows[0]);
      if (!row) throw new ApiError(404, 'not_found', 'workspace not found');
      return row;
    },
  });
  const platformOnly = (who: { workspace: string | null }) => {
    if (who.workspace !== null) throw new ApiError(403, 'forbidden', 'only a platform-wide token manages workspaces', [{ field: 'authorization', message: 'a workspace token' }]);
  };
  api.add({
    method: 'POST', url: '/workspaces', summary: 'Create a workspace (platform-wide admin token)', tag: 'workspaces', resource: 'workspaces', action: 'write', scoped: false, body: workspaceInput,
    responses: { 201: 'created', 409: 'the id is taken, or was a deleted workspace\'s' },
    handler: async ({ who, body, req, reply }) => {
      platformOnly(who);
      const created = await ensureWorkspace(pool, body.id, body.name, { actor: actor(who.name), correlationId: req.id });
      if (!created) throw new ApiError(409, 'conflict', `workspace ${body.id} exists`, [{ field: 'body.id', message: 'taken' }]);
      return reply.code(201).header('Location', `/workspaces/${body.id}`).send({ id: body.id, name: body.name, config_version: 1 });
    },
  });
  api.add({
    method: 'PATCH', url: '/workspaces/:id', summary: "Rename a workspace", tag: 'workspaces', resource: 'workspaces', action: 'write', scoped: false, params: idParam,
    body: z.object({ name: z.string().min(1).max(200) }).strict(),
    handler: async ({ who, params, body, req }) => {
      if (who.workspace !== null && who.workspace !== params.id) throw new ApiError(404, 'not_found', 'workspace not found');
      return inWorkspace(pool, params.id, async (db) => {
        const before = (await db.query('SELECT id, name FROM workspaces WHERE id = $1 FOR UPDATE', [params.id])).rows[0];
        if (!before) throw new ApiError(404, 'not_found', 'workspace not found');
        const after = (await db.query('UPDATE workspaces SET name = $2, updated_at = now() WHERE id = $1 RETURNING id, name, config_version, created_at, updated_at', [params.id, body.name])).rows[0];
        await writeAudit(db, { workspace: params.id, actor: actor(who.name), action: 'update', entityType: 'workspace', entityId: params.id, before, after: { id: after.id, name: after.name }, correlationId: req.id });
        return after;
      });
    },
  });
  api.add({
    method: 'DELETE', url: '/workspaces/:id', summary: 'Delete a workspace and everything in it (platform-wide admin token)', tag: 'workspaces', resource: 'workspaces', action: 'write', scoped: false, params: idParam,
    responses: { 204: 'deleted' },
    handler: async ({ who, params, req, reply }) => {
      platformOnly(who);
      await asPlatform(pool, async (db) => {
        await lockWorkspaceId(db, params.id);
        const before = (await db.query('DELETE FROM workspaces WHERE id = $1 RETURNING id, name', [params.id])).rows[0];
        if (!before) throw new ApiError(404, 'not_found', 'workspace not found');
        // Its id is never given out again (lib/db/migrations/011_retired_workspaces.sql).
        await db.query('INSERT INTO retired_workspaces (id) VALUES ($1) ON CONFLICT (id) DO NOTHING', [params.id]);
        await writeAudit(db, { workspace: params.id, actor: actor(who.name), action: 'delete', entityType: 'workspace', entityId: params.id, before, correlationId: req.id });
      });
      deps.announce(params.id, 0);
      return reply.code(204).send();
    },
  });

  // Control-plane tokens of a workspace; the value is shown once.
  api.add({
    method: 'POST', url: '/admin-tokens', summary: 'Issue an Admin API token for the workspace; the token is in this answer only', tag: 'admin-tokens', resource: 'admin-tokens', action: 'write',
    query: scopedQuery, body: z.object({ name: entityName, role: entityName }).strict(), responses: { 201: '{id, token, name, role}', 409: 'unknown role' },
    handler: async ({ ws, who, body, req, reply }) => {
      if (!(BUILT_IN_ROLES as readonly string[]).includes(body.role)) {
        const known = await inWorkspace(pool, ws, async (db) => (await db.query('SELECT 1 FROM rbac_roles WHERE name = $1', [body.role])).rowCount);
        if (!known) throw new ApiError(409, 'unknown_reference', `no role named ${body.role}`, [{ field: 'body.role', message: 'a built-in role or one of GET /roles' }]);
      }
      const { token, id } = await issueAdminToken(pool, ws, body.name, body.role, { actor: actor(who.name), correlationId: req.id });
      return reply.code(201).header('Cache-Control', 'no-store').send({ id, token, name: body.name, role: body.role, workspace: ws });
    },
  });
  api.add({
    method: 'GET', url: '/admin-tokens', summary: "List the workspace's tokens (never their values)", tag: 'admin-tokens', resource: 'admin-tokens', action: 'read', query: scopedQuery,
    handler: async ({ ws }) => inWorkspace(pool, ws, async (db) => ({
      data: (await db.query('SELECT id, name, role, created_at, revoked_at FROM admin_tokens ORDER BY created_at')).rows,
    })),
  });
  api.add({
    method: 'DELETE', url: '/admin-tokens/:id', summary: 'Revoke a token', tag: 'admin-tokens', resource: 'admin-tokens', action: 'write', query: scopedQuery,
    params: z.object({ id: z.uuid() }).strict(), responses: { 204: 'revoked' },
    handler: async ({ ws, who, params, req, reply }) => {
      await inWorkspace(pool, ws, async (db) => {
        const res = await db.query('UPDATE admin_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING name, role', [params.id]);
        if (!res.rowCount) throw new ApiError(404, 'not_found', 'token not found');
        await writeAudit(db, { workspace: ws, actor: actor(who.name), action: 'delete', entityType: 'admin_token', entityId: params.id, before: res.rows[0], correlationId: req.id });
      });
      return reply.code(204).send();
    },
  });

  // Platform-wide tokens (workspace null: operators and admins of the platform itself). Issued
  // first by provisioning; listed, issued and revoked here so a leaked one is revoked without SQL.
  // Built-in roles only: custom roles belong to a workspace.
  api.add({
    method: 'GET', url: '/platform/admin-tokens', summary: 'List the platform-wide tokens (never their values; platform-wide token)', tag: 'admin-tokens', resource: 'admin-tokens', action: 'read',
    scoped: false, platform: true,
    handler: async () => asPlatform(pool, async (db) => ({
      data: (await db.query('SELECT id, name, role, created_at, revoked_at FROM admin_tokens WHERE workspace_id IS NULL ORDER BY created_at')).rows,
    })),
  });
  api.add({
    method: 'POST', url: '/platform/admin-tokens', summary: 'Issue a platform-wide token; the token is in this answer only (platform-wide admin token)', tag: 'admin-tokens', resource: 'admin-tokens', action: 'write',
    scoped: false, platform: true, body: z.object({ name: entityName, role: z.enum(BUILT_IN_ROLES) }).strict(), responses: { 201: '{id, token, name, role}' },
    handler: async ({ who, body, req, reply }) => {
      const { token, id } = await issueAdminToken(pool, null, body.name, body.role, { actor: actor(who.name), correlationId: req.id });
      return reply.code(201).header('Cache-Control', 'no-store').send({ id, token, name: body.name, role: body.role, workspace: null });
    },
  });
  api.add({
    method: 'DELETE', url: '/platform/admin-tokens/:id', summary: 'Revoke a platform-wide token (not the last live admin one)', tag: 'admin-tokens', resource: 'admin-tokens', action: 'write',
    scoped: false, platform: true, params: z.object({ id: z.uuid() }).strict(), responses: { 204: 'revoked', 409: 'the last live platform-wide admin token' },
    handler: async ({ who, params, req, reply }) => {
      await asPlatform(pool, (db) => revokePlatformToken(db, params.id, { actor: actor(who.name), correlationId: req.id }));
      return reply.code(204).send();
    },
  });

  // Webhook secrets: webhooks are signed with the newest; rotate by adding one, then deleting the old.
  const fingerprint = (secret: string) => createHash('sha256').update(secret).digest('hex').slice(0, 12);
  api.add({
    method: 'POST', url: '/webhook-secrets', summary: 'Create a webhook signing secret; the secret is in this answer only', tag: 'webhook-secrets', resource: 'webhook-secrets', action: 'write',
    query: scopedQuery, body: z.object({ name: entityName }).strict(), responses: { 201: '{id, name, secret, fingerprint}', 409: 'the name is taken' },
    handler: async ({ ws, who, body, req, reply }) => {
      const secret = randomBytes(32).toString('base64url');
      const row = await inWorkspace(pool, ws, async (db) => {
        const res = await db.query('INSERT INTO webhook_secrets (workspace_id, name, secret) VALUES ($1, $2, $3) ON CONFLICT (workspace_id, name) DO NOTHING RETURNING id, name, created_at', [ws, body.name, secret]);
        if (!res.rowCount) throw new ApiError(409, 'conflict', `a webhook secret named ${body.name} exists`, [{ field: 'body.name', message: 'taken' }]);
        const r = res.rows[0];
        await writeAudit(db, { workspace: ws, actor: actor(who.name), action: 'create', entityType: 'webhook_secret', entityId: r.id, after: { name: r.name, fingerprint: fingerprint(secret) }, correlationId: req.id });
        return r;
      });
      return reply.code(201).header('Cache-Control', 'no-store').send({ ...row, secret, fingerprint: fingerprint(secret) });
    },
  });
  api.add({
    method: 'GET', url: '/webhook-secrets', summary: 'List webhook secrets (names and fingerprints, never values)', tag: 'webhook-secrets', resource: 'webhook-secrets', action: 'read', query: scopedQuery,
    handler: async ({ ws }) => inWorkspace(pool, ws, async (db) => ({
      data: (await db.query<{ id: string; name: string; secret: string; created_at: Date }>('SELECT id, name, secret, created_at FROM webhook_secrets ORDER BY created_at')).rows
        .map(({ secret, ...r }) => ({ ...r, fingerprint: fingerprint(secret) })),
    })),
  });
  api.add({
    method: 'DELETE', url: '/webhook-secrets/:id', summary: 'Delete a webhook secret', tag: 'webhook-secrets', resource: 'webhook-secrets', action: 'write', query: scopedQuery,
    params: z.object({ id: z.uuid() }).strict(), responses: { 204: 'deleted' },
    handler: async ({ ws, who, params, req, reply }) => {
      await inWorkspace(pool, ws, async (db) => {
        const res = await db.query('DELETE FROM webhook_secrets WHERE id = $1 RETURNING name', [params.id]);
        if (!res.rowCount) throw new ApiError(404, 'not_found', 'webhook secret not found');
        await writeAudit(db, { workspace: ws, actor: actor(who.name), action: 'delete', entityType: 'webhook_secret', entityId: params.id, before: res.rows[0], correlationId: req.id });
      });
      return reply.code(204).send();
    },
  });

  // The audit log, newest first: a workspace's, and the platform's own (runbooks, platform tokens).
  const auditQuery = {
    entity_type: z.string().optional(), entity_id: z.string().optional(), action: z.string().optional(), actor: z.string().optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100), cursor: z.coerce.number().int().min(1).optional().describe('the `next` of the previous page'),
  };
  type AuditQuery = { entity_type?: string; entity_id?: string; action?: string; actor?: string; limit: number; cursor?: number };
  /** One page of the rows the connection's scope sees; `platformRows`: only those of no workspace. */
  const auditPage = async (db: PoolClient, query: AuditQuery, platformRows: boolean) => {
    const rows = (await db.query(
      `SELECT id, at, actor, action, entity_type, entity_id, before, after, correlation_id, config_version FROM audit_logs
        WHERE ($1::text IS NULL OR entity_type = $1) AND ($2::text IS NULL OR entity_id = $2) AND ($3::text IS NULL OR action = $3)
          AND ($4::text IS NULL OR actor = $4) AND ($5::bigint IS NULL OR id < $5) AND (NOT $7 OR workspace_id IS NULL)
        ORDER BY id DESC LIMIT $6`,
      [query.entity_type ?? null, query.entity_id ?? null, query.action ?? null, query.actor ?? null, query.cursor ?? null, query.limit + 1, platformRows],
    )).rows;
    const page = rows.slice(0, query.limit);
    return { data: page, next: rows.length > query.limit ? Number(page[page.length - 1].id) : null };
  };
  api.add({
    method: 'GET', url: '/audit-logs', summary: "The workspace's audit log, newest first", tag: 'audit-logs', resource: 'audit-logs', action: 'read',
    query: z.object({ ...workspaceParam, ...auditQuery }).strict(),
    handler: async ({ ws, query }) => inWorkspace(pool, ws, (db) => auditPage(db, query, false)),
  });
  api.add({
    method: 'GET', url: '/platform/audit-logs', summary: "The platform's own audit log (runbook runs and decisions, platform-wide tokens), newest first (platform-wide token)",
    tag: 'audit-logs', resource: 'audit-logs', action: 'read', scoped: false, platform: true, query: z.object(auditQuery).strict(),
    handler: async ({ query }) => asPlatform(pool, (db) => auditPage(db, query, true)),
  });
}
