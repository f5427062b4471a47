import { z } from 'zod';
import { parseConfigDocuments, snapshotToDocument, syncDocument, toYaml } from '../lib/control-plane/declarative';
import { buildSnapshot, diffDocuments, readVersion } from '../lib/control-plane/versions';
import { ApiError } from '../lib/errors';
import { inWorkspace } from '../lib/postgres';
import type { AdminDeps } from './app';
import { workspaceParam, type AdminApi } from './endpoint';

/** Versioned and declarative config: GET /config and its versions, diffs, export and sync. */
export function registerConfig(api: AdminApi, deps: AdminDeps): void {
  const { pool } = deps;
  const scopedQuery = z.object(workspaceParam).strict();
  const versionOf = async (ws: string, v: number) => {
    const found = await inWorkspace(pool, ws, (db) => readVersion(db, v));
    if (!found) throw new ApiError(404, 'not_found', `config version ${v} not found`);
    return found;
  };
  const current = (ws: string) => inWorkspace(pool, ws, async (db) => {
    const v = (await db.query<{ config_version: string }>('SELECT config_version FROM workspaces WHERE id = $1', [ws])).rows[0];
    if (!v) throw new ApiError(404, 'not_found', 'workspace not found');
    return { version: Number(v.config_version), snapshot: await buildSnapshot(db, ws) };
  });

  api.add({
    method: 'GET', url: '/config', summary: "The workspace's current config and its version", tag: 'config', resource: 'config', action: 'read', query: scopedQuery,
    handler: async ({ ws }) => {
      const c = await current(ws);
      return { workspace: ws, version: c.version, config: c.snapshot };
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
    method: 'POST', url: '/config/sync', summary: 'Make the live config equal to a declarative document, in one transaction (dry_run=true: diff only)', tag: 'config', resource: 'config', action: 'write',
    query: z.object({ ...workspaceParam, dry_run: z.enum(['true', 'false']).default('false') }).strict(), textBody: true,
    responses: { 200: '{diff, version}', 400: 'invalid document: nothing changed', 409: 'a reference or route conflict: nothing changed' },
    handler: async ({ ws, body, who, req, query }) => {
      const doc = documentOf(body);
      const out = await inWorkspace(pool, ws, (db) => syncDocument(db, ws, doc, { actor: `token:${who.name}`, correlationId: req.id }, query.dry_run === 'true'));
      if (out.version !== undefined) deps.announce(ws, out.version);
      return out;
    },
  });
}

