import type { PoolClient } from 'pg';
import { z } from 'zod';
import { parseConfigDocuments, snapshotToDocument, syncDocument, toYaml } from '../lib/control-plane/declarative';
import { buildSnapshot, diffDocuments, readVersion } from '../lib/control-plane/versions';
import { writeAudit } from '../lib/audit';
import { ApiError } from '../lib/errors';
import { inWorkspace } from '../lib/postgres';
import type { UpstreamPolicy } from '../lib/upstream-policy';
import type { AdminDeps } from './app';
import { authorize } from './auth';
import { checkAddresses } from './collections';
import { workspaceParam, type AdminApi } from './endpoint';

/** Versioned and declarative config: GET /config and its versions, diffs, export and sync. */
export function registerConfig(api: AdminApi, deps: AdminDeps, upstreamPolicy: UpstreamPolicy): void {
  const { pool } = deps;
  const scopedQuery = z.object(workspaceParam).strict();
  const versionOf = async (ws: string, v: number) => {
    const found = await inWorkspace(pool, ws, (db) => readVersion(db, v));
    if (!found) throw new ApiError(404, 'not_found', `config version ${v} not found`);
    return found;
  };
  /** The workspace's newest config version, in `db`'s transaction; undefined for no such workspace. */
  const newestVersion = async (db: PoolClient, ws: string) => {
    const v = (await db.query<{ config_version: string }>('SELECT config_version FROM workspaces WHERE id = $1', [ws])).rows[0];
    return v ? Number(v.config_version) : undefined;
  };
  const current = (ws: string) => inWorkspace(pool, ws, async (db) => {
    const version = await newestVersion(db, ws);
    if (version === undefined) throw new ApiError(404, 'not_found', 'workspace not found');
    return { version, snapshot: await buildSnapshot(db, ws) };
  });

  api.add({
    method: 'GET', url: '/config', summary: "The workspace's current config and its version", tag: 'config', resource: 'config', action: 'read', query: scopedQuery,
    handler: async ({ ws }) => {
      const c = await current(ws);
      return { workspace: ws, version: c.version, config: c.snapshot };
    },
  });
  // Holding every gateway on a version: changes are then stored and served only through the
  // config-rollout runbook (canary first). Without a pin, gateways serve the newest version.
  api.add({
    method: 'GET', url: '/config/pins', summary: 'The versions gateway groups are held on (* = every group)', tag: 'config', resource: 'config', action: 'read', query: scopedQuery,
    handler: async ({ ws }) => inWorkspace(pool, ws, async (db) => ({
      data: (await db.query('SELECT gateway_group, version::int AS version, updated_at FROM config_pins WHERE workspace_id = $1 ORDER BY gateway_group', [ws])).rows,
    })),
  });
  api.add({
    method: 'PUT', url: '/config/pin', summary: 'Hold every gateway on a version; later changes go out through a config-rollout run', tag: 'config', resource: 'config', action: 'write',
    query: scopedQuery, body: z.object({ version: z.number().int().min(1) }).strict(), responses: { 200: 'held', 404: 'no such version' },
    handler: async ({ ws, who, body, req }) => {
      await versionOf(ws, body.version);
      await inWorkspace(pool, ws, async (db) => {
        await db.query(`INSERT INTO config_pins (workspace_id, gateway_group, version) VALUES ($1, '*', $2)
                        ON CONFLICT (workspace_id, gateway_group) DO UPDATE SET version = $2, updated_at = now()`, [ws, body.version]);
        // With its version, so the outbox sends it to api.config-changes as well (README: each pin is a record there).
        await writeAudit(db, { workspace: ws, actor: `token:${who.name}`, action: 'pin', entityType: 'config', entityId: ws, after: { gateway_group: '*', version: body.version }, correlationId: req.id, configVersion: body.version });
      });
      deps.announce(ws, body.version);
      return { gateway_group: '*', version: body.version };
    },
  });
  api.add({
    method: 'DELETE', url: '/config/pin', summary: 'Let every gateway serve the newest version again', tag: 'config', resource: 'config', action: 'write', query: scopedQuery, responses: { 204: 'released' },
    handler: async ({ ws, who, req, reply }) => {
      await inWorkspace(pool, ws, async (db) => {
        await db.query('DELETE FROM config_pins WHERE workspace_id = $1', [ws]);
        await writeAudit(db, { workspace: ws, actor: `token:${who.name}`, action: 'unpin', entityType: 'config', entityId: ws, correlationId: req.id, configVersion: (await newestVersion(db, ws)) ?? null });
      });
      deps.announce(ws, 0);
      return reply.code(204).send();
    },
  });
  api.add({
    method: 'GET', url: '/config/versions', summary: 'Config versions, newest first', tag: 'config', resource: 'config', action: 'read',
    query: z.object({ ...workspaceParam, limit: z.coerce.number().int().min(1).max(1000).default(100), cursor: z.coerce.number().int().min(1).optional() }).strict(),
    handler: async ({ ws, query }) => inWorkspace(pool, ws, async (db) => {
      const rows = (await db.query(
        'SELECT version, actor, summary, correlation_id, created_at FROM config_versions WHERE ($1::bigint IS NULL OR version < $1) ORDER BY version DESC LIMIT $2',
        [query.cursor ?? null, query.limit + 1],
      )).rows.map((r) => ({ ...r, version: Number(r.version) }));
      const page = rows.slice(0, query.limit);
      return { data: page, next: rows.length > query.limit ? page[page.length - 1]!.version : null };
    }),
  });
  api.add({
    method: 'GET', url: '/config/versions/:version', summary: 'One config version, whole', tag: 'config', resource: 'config', action: 'read',
    query: scopedQuery, params: z.object({ version: z.coerce.number().int().min(1) }).strict(),
    handler: async ({ ws, params }) => {
      const v = await versionOf(ws, params.version);
      return { workspace: ws, version: v.version, actor: v.actor, summary: v.summary, created_at: v.created_at, config: v.snapshot };
    },
  });
  api.add({
    method: 'GET', url: '/config/diff', summary: 'What changed between two versions (to defaults to the current one)', tag: 'config', resource: 'config', action: 'read',
    query: z.object({ ...workspaceParam, from: z.coerce.number().int().min(1), to: z.coerce.number().int().min(1).optional() }).strict(),
    handler: async ({ ws, query }) => {
      const from = await versionOf(ws, query.from);
      const to = query.to ? await versionOf(ws, query.to) : await current(ws);
      return { from: from.version, to: to.version, diff: diffDocuments(from.snapshot, to.snapshot) };
    },
  });
  api.add({
    method: 'GET', url: '/config/export', summary: 'The workspace as a declarative document (YAML, or JSON with format=json)', tag: 'config', resource: 'config', action: 'read',
    query: z.object({ ...workspaceParam, format: z.enum(['yaml', 'json']).default('yaml') }).strict(),
    handler: async ({ ws, query, reply }) => {
      const doc = snapshotToDocument((await current(ws)).snapshot);
      if (query.format === 'json') return doc;
      return reply.type('application/yaml').send(toYaml(doc));
    },
  });

  const documentOf = (body: unknown): ReturnType<typeof parseConfigDocuments>[number] => {
    const text = typeof body === 'string' ? body : Buffer.isBuffer(body) ? body.toString('utf8') : JSON.stringify(body ?? '');
    const docs = parseConfigDocuments(text);
    if (docs.length !== 1) throw new ApiError(400, 'validation_failed', 'send one workspace document', [{ field: 'body', message: `${docs.length} documents` }]);
    for (const c of ['services', 'triggers', 'plugins'] as const) checkAddresses(docs[0]![c], deps.config.FLOWGATE_WEBHOOK_ALLOW_PRIVATE, upstreamPolicy, (i) => `body.${c}.${i}`);
    return docs[0]!;
  };
  api.add({
    method: 'POST', url: '/config/diff', summary: 'Diff a declarative document against the live config (changes nothing)', tag: 'config', resource: 'config', action: 'read',
    query: scopedQuery, textBody: true,
    handler: async ({ ws, body, who, req }) => {
      const doc = documentOf(body);
      // A dry-run sync: the same validation and reference checks, rolled back.
      return inWorkspace(pool, ws, (db) => syncDocument(db, ws, doc, { actor: `token:${who.name}`, correlationId: req.id }, true));
    },
  });
  api.add({
    method: 'POST', url: '/config/sync', summary: 'Make the live config equal to a declarative document, in one transaction (dry_run=true: applied and rolled back, changing nothing)', tag: 'config', resource: 'config', action: 'write',
    query: z.object({ ...workspaceParam, dry_run: z.enum(['true', 'false']).default('false') }).strict(), textBody: true,
    responses: { 200: '{diff, version}', 400: 'invalid document: nothing changed', 409: 'a reference or route conflict: nothing changed' },
    handler: async ({ ws, body, who, req, query }) => {
      const doc = documentOf(body);
      // config:write lets a sync run; what it changes needs the grant of each collection too, or a
      // role could give itself any grant (roles) or issue keys (consumers) through a document.
      const out = await inWorkspace(pool, ws, (db) => syncDocument(db, ws, doc, { actor: `token:${who.name}`, correlationId: req.id }, query.dry_run === 'true',
        (c) => authorize(who, c, 'write')));
      if (out.version !== undefined) deps.announce(ws, out.version);
      return out;
    },
  });
}

