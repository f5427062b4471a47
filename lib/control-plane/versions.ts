import type { PoolClient } from 'pg';
import { writeAudit } from '../audit';
import { ApiError } from '../errors';
import { ENTITIES, listEntities, type Doc } from './entities';
import { COLLECTIONS, keyOf, type Collection } from './schemas';

/**
 * Versioned config. Every change to a workspace runs between beginChange (which locks the
 * workspace row, so changes to one workspace are serialised) and finishChange (which bumps
 * workspaces.config_version, stores the whole resulting config in config_versions and writes
 * the change's audit rows), all in the caller's transaction: a change, its version and its
 * audit trail are committed together or not at all.
 */

/** A config version as stored: every collection, each entity with its id (for the data plane). */
export type Snapshot = { _format_version: '1'; workspace: string } & Record<Collection, Doc[]>;

export type ChangeAudit = { action: 'create' | 'update' | 'delete'; entityType: string; entityId: string; before?: unknown; after?: unknown };
export type ChangeContext = { actor: string; correlationId?: string | null };

export async function beginChange(db: PoolClient, ws: string): Promise<number> {
  const res = await db.query<{ config_version: string }>('SELECT config_version FROM workspaces WHERE id = $1 FOR UPDATE', [ws]);
  if (!res.rows[0]) throw new ApiError(404, 'not_found', 'workspace not found');
  return Number(res.rows[0].config_version);
}

export async function buildSnapshot(db: PoolClient, ws: string): Promise<Snapshot> {
  const snapshot = { _format_version: '1', workspace: ws } as Snapshot;
  for (const c of COLLECTIONS) snapshot[c] = (await listEntities(db, ENTITIES[c])).map((e) => ({ id: e.id, ...e.doc }));
  return snapshot;
}

export async function finishChange(db: PoolClient, ws: string, ctx: ChangeContext, summary: string, audits: ChangeAudit[]): Promise<number> {
  const version = Number((await db.query<{ config_version: string }>(
    'UPDATE workspaces SET config_version = config_version + 1, updated_at = now() WHERE id = $1 RETURNING config_version', [ws],
  )).rows[0]!.config_version);
  const snapshot = await buildSnapshot(db, ws);
  await db.query(
    'INSERT INTO config_versions (workspace_id, version, snapshot, actor, summary, correlation_id) VALUES ($1, $2, $3, $4, $5, $6)',
    [ws, version, JSON.stringify(snapshot), ctx.actor, summary, ctx.correlationId ?? null],
  );
  for (const a of audits) {
    await writeAudit(db, { workspace: ws, actor: ctx.actor, action: a.action, entityType: a.entityType, entityId: a.entityId, before: a.before, after: a.after, correlationId: ctx.correlationId, configVersion: version });
  }
  return version;
}

export async function readVersion(db: PoolClient, version: number): Promise<{ version: number; snapshot: Snapshot; actor: string; summary: string; created_at: Date } | undefined> {
  const res = await db.query('SELECT version, snapshot, actor, summary, created_at FROM config_versions WHERE version = $1', [version]);
  const row = res.rows[0];
  return row ? { ...row, version: Number(row.version) } : undefined;
}

export type FieldChange = { from?: unknown; to?: unknown };
export type CollectionDiff = { created: string[]; updated: { key: string; fields: Record<string, FieldChange> }[]; deleted: string[] };
export type ConfigDiff = { changes: number } & Partial<Record<Collection, CollectionDiff>>;

/** Keys sorted at every level: two equal documents give the same text. */
export function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().filter((k) => (v as Doc)[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonical((v as Doc)[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

/** What changes from `from` to `to`, per collection by natural key; ids are ignored. */
export function diffDocuments(from: Partial<Record<Collection, Doc[]>>, to: Partial<Record<Collection, Doc[]>>): ConfigDiff {
  const out: ConfigDiff = { changes: 0 };
  for (const c of COLLECTIONS) {
    const strip = (e: Doc) => { const { id: _id, ...rest } = e; return rest; };
    const a = new Map((from[c] ?? []).map((e) => [keyOf(c, e), strip(e)]));
    const b = new Map((to[c] ?? []).map((e) => [keyOf(c, e), strip(e)]));
    const d: CollectionDiff = { created: [], updated: [], deleted: [] };
    for (const [key, doc] of b) {
      const old = a.get(key);
      if (!old) { d.created.push(key); continue; }
      const fields: Record<string, FieldChange> = {};
      for (const f of new Set([...Object.keys(old), ...Object.keys(doc)])) {
        if (canonical(old[f]) !== canonical(doc[f])) fields[f] = { from: old[f], to: doc[f] };
      }
      if (Object.keys(fields).length) d.updated.push({ key, fields });
    }
    for (const key of a.keys()) if (!b.has(key)) d.deleted.push(key);
    const n = d.created.length + d.updated.length + d.deleted.length;
    if (n) { out[c] = d; out.changes += n; }
  }
  return out;
}
