import type { PoolClient } from 'pg';
import { parseAllDocuments, stringify } from 'yaml';
import { ApiError } from '../errors';
import { auditView, deleteEntity, ENTITIES, insertEntity, updateEntity, type Doc } from './entities';
import { COLLECTIONS, configDocument, keyOf, type Collection, type ConfigDocument } from './schemas';
import { beginChange, buildSnapshot, canonical, diffDocuments, finishChange, type ChangeAudit, type ChangeContext, type ConfigDiff, type Snapshot } from './versions';

/**
 * Declarative config: a workspace as one YAML document (decK-style), exported, diffed against
 * the live state and synced in one transaction. The same document, or several separated by
 * `---`, is what a DB-less gateway serves from.
 */

/** Parses YAML (or JSON) holding one or more workspace documents; any error names its field. */
export function parseConfigDocuments(text: string): ConfigDocument[] {
  const docs = parseAllDocuments(text);
  if (docs.length === 0) throw new ApiError(400, 'validation_failed', 'the file holds no document', [{ field: 'body', message: 'empty' }]);
  return docs.map((d, i) => {
    const malformed = (message: string) => new ApiError(400, 'malformed_yaml', `document ${i}: ${message}`, [{ field: `body.${i}`, message }]);
    if (d.errors.length) throw malformed(d.errors[0]!.message);
    let value: unknown;
    try {
      value = d.toJS();
    } catch (err) {
      // Aliases are resolved only here: one without its anchor, or an alias bomb, is the file's fault.
      throw malformed((err as Error).message);
    }
    const parsed = configDocument.safeParse(value);
    if (!parsed.success) {
      const details = parsed.error.issues.map((issue) => ({ field: ['body', ...(docs.length > 1 ? [String(i)] : []), ...issue.path.map(String)].join('.'), message: issue.message }));
      throw new ApiError(400, 'validation_failed', `invalid config document: ${details.map((x) => x.field).join(', ')}`, details);
    }
    return parsed.data;
  });
}

/** A stored snapshot as a portable document: no ids, stable order. */
export function snapshotToDocument(s: Snapshot): Doc {
  const out: Doc = { _format_version: '1', workspace: s.workspace };
  // The identifying field first, the others in alphabetical order: diffs of exports stay small.
  const ordered = (e: Doc) => Object.fromEntries(Object.entries(e).filter(([k]) => k !== 'id')
    .sort(([a], [b]) => (a === 'name' || a === 'username' ? -1 : b === 'name' || b === 'username' ? 1 : a.localeCompare(b))));
  for (const c of COLLECTIONS) out[c] = (s[c] ?? []).map(ordered);
  return out;
}

export const toYaml = (doc: Doc) => stringify(doc, { sortMapEntries: false, lineWidth: 0 });

/** Dependencies first when creating, last when deleting. */
const CREATE_ORDER: Collection[] = ['roles', 'services', 'consumers', 'routes', 'triggers', 'policies', 'plugins'];

/**
 * Makes the workspace's live config equal to `doc`: creates, updates and deletes, with one
 * audit row per entity and one new config version, in the caller's transaction (which the
 * caller rolls back on any error, so a failed sync changes nothing).
 */
export async function syncDocument(
  db: PoolClient, ws: string, doc: ConfigDocument, ctx: ChangeContext, dryRun: boolean,
  /** Throws for a collection the caller may not change (a sync changes what its grants cover, and nothing else). */
  mayWrite: (collection: Collection) => void = () => undefined,
): Promise<{ diff: ConfigDiff; version?: number }> {
  if (doc.workspace !== ws) throw new ApiError(400, 'validation_failed', `the document is for workspace ${doc.workspace}`, [{ field: 'body.workspace', message: `must be ${ws}` }]);
  await beginChange(db, ws);
  const live = await buildSnapshot(db, ws);
  const wanted = doc as unknown as Record<Collection, Doc[]>;
  // One entry per entity: a second one of the same name would be applied after the first, which
  // the diff (one per name) would not show, nor the grants it is checked against.
  for (const c of CREATE_ORDER) {
    const first = new Map<string, number>();
    for (const [i, e] of wanted[c].entries()) {
      const key = keyOf(c, e);
      const at = first.get(key);
      if (at !== undefined) throw new ApiError(400, 'validation_failed', `${c} lists ${key} twice (entries ${at} and ${i})`, [{ field: `body.${c}.${i}`, message: `the same entity as body.${c}.${at}` }]);
      first.set(key, i);
    }
  }
  const diff = diffDocuments(live, wanted);
  for (const c of CREATE_ORDER) {
    const d = diff[c];
    if (d && d.created.length + d.updated.length + d.deleted.length > 0) mayWrite(c);
  }
  if (diff.changes === 0) return { diff };
  // A dry run applies the document too, then undoes it: it answers what the sync would, reference,
  // route-collision and revoked-key refusals included, not only the diff.
  if (dryRun) await db.query('SAVEPOINT flowgate_dry_run');

  const audits: ChangeAudit[] = [];
  const liveByKey = (c: Collection) => new Map(live[c].map((e) => [keyOf(c, e), e]));
  // Deletions in reverse dependency order, so nothing is deleted while something still uses it.
  // One still used by a live entity the document moves elsewhere (a service renamed: its routes
  // now name the new one) waits until the creates and updates are done.
  const later: { c: Collection; key: string; e: Doc }[] = [];
  const remove = async (c: Collection, key: string, e: Doc) => {
    await deleteEntity(db, ENTITIES[c], String(e.id));
    audits.push({ action: 'delete', entityType: ENTITIES[c].type, entityId: String(e.id), before: auditView(ENTITIES[c], e) });
  };
  for (const c of [...CREATE_ORDER].reverse()) {
    const keep = new Set(wanted[c].map((e) => keyOf(c, e)));
    for (const [key, e] of liveByKey(c)) {
      if (keep.has(key)) continue;
      await remove(c, key, e).catch((err: unknown) => {
        if (err instanceof ApiError && err.code === 'in_use') later.push({ c, key, e });
        else rethrowAt(err, c, key);
      });
    }
  }
  for (const c of CREATE_ORDER) {
    const def = ENTITIES[c];
    const existing = liveByKey(c);
    for (const [i, e] of wanted[c].entries()) {
      const key = keyOf(c, e);
      const old = existing.get(key);
      try {
        if (!old) {
          const created = await insertEntity(db, ws, def, e);
          audits.push({ action: 'create', entityType: def.type, entityId: created.id, after: auditView(def, created.doc) });
        } else {
          const { id, ...before } = old;
          if (canonical(before) === canonical(e)) continue;
          const updated = await updateEntity(db, ws, def, String(id), e);
          audits.push({ action: 'update', entityType: def.type, entityId: updated.id, before: auditView(def, before), after: auditView(def, updated.doc) });
        }
      } catch (err) {
        rethrowAt(err, c, key, i);
      }
    }
  }
  // An aggregate names its backends' services in its document (no foreign key): one naming a
  // service that is going would have passed the checks while the service was still there.
  const going = new Set(later.filter((x) => x.c === 'services').map((x) => x.key));
  for (const [i, r] of wanted.routes.entries()) {
    const backends = ((r as { aggregate?: { backends?: { service?: string }[] } }).aggregate?.backends ?? []);
    const j = backends.findIndex((b) => b.service !== undefined && going.has(b.service));
    if (j >= 0) throw new ApiError(409, 'unknown_reference', `routes ${keyOf('routes', r)}: no service named ${backends[j]!.service}`, [{ field: `body.routes.${i}.aggregate.backends.${j}.service`, message: 'not in the document' }]);
  }
  for (const { c, key, e } of later) await remove(c, key, e).catch((err: unknown) => rethrowAt(err, c, key));
  if (dryRun) {
    // Everything that can refuse has run; the version and audit rows would be thrown away.
    await db.query('ROLLBACK TO SAVEPOINT flowgate_dry_run');
    return { diff };
  }
  const version = await finishChange(db, ws, ctx, `declarative sync: ${diff.changes} change(s)`, audits);
  return { diff, version };
}

/** Re-points an entity error's fields (`body.paths`) at the document (`body.routes.2.paths`). */
function rethrowAt(err: unknown, c: Collection, key: string, index?: number): never {
  if (err instanceof ApiError) {
    const at = index === undefined ? `body.${c}[${key}]` : `body.${c}.${index}`;
    const details = Array.isArray(err.details)
      ? (err.details as { field: string; message: string }[]).map((d) => ({ ...d, field: d.field.replace(/^body/, at).replace(/^id$/, at) }))
      : [{ field: at, message: err.message }];
    throw new ApiError(err.statusCode, err.code, `${c} ${key}: ${err.message}`, details);
  }
  throw err;
}
