import type { PoolClient } from 'pg';
import type { z } from 'zod';
import { hashCredential } from '../credentials';
import { ApiError } from '../errors';
import { findWorkflowType } from '../workflow-registry';
import { findRouteConflict, type RouteClaim } from './routing';
import {
  BUILT_IN_ROLES, consumerDoc, keyOf, pluginDoc, policyDoc, roleDoc, routeDoc, serviceDoc, triggerDoc,
  type Collection, type ConsumerDoc, type RouteDoc, type TriggerDoc,
} from './schemas';

/**
 * How each collection of a workspace's config maps onto its table. Every function here runs
 * inside a transaction confined to one workspace (inWorkspace), so no query names another
 * workspace's rows, and row-level security would stop it if one tried.
 */

export type Doc = Record<string, unknown>;
export type EntityRow = { id: string; version: number; created_at: Date; updated_at: Date; doc: Doc };

export type EntityDef = {
  collection: Collection;
  /** The audit log's entity_type. */
  type: string;
  table: string;
  keyColumn: string;
  schema: z.ZodType<Doc>;
  /** `SELECT … FROM <table> e …` returning id, row_version, created_at, updated_at and doc. */
  select: string;
  /** Query parameters a list can filter on, and the SQL expression each compares with. */
  filters: Record<string, string>;
  /** The columns to write for a (validated) document; resolves names to ids, refusing missing ones with 409. */
  columns: (db: PoolClient, ws: string, doc: Doc, selfId?: string) => Promise<Record<string, unknown>>;
  afterWrite?: (db: PoolClient, ws: string, id: string, doc: Doc) => Promise<void>;
};

const meta = 'e.id, e.row_version, e.created_at, e.updated_at';
const json = (v: unknown) => (v === undefined ? null : JSON.stringify(v));

/** A name in the document that must name an existing entity of the workspace. */
const LABEL: Record<string, string> = { rbac_roles: 'role', services: 'service', routes: 'route', consumers: 'consumer' };

async function idOf(db: PoolClient, table: string, column: string, value: unknown, field: string): Promise<string | null> {
  if (value === undefined || value === null) return null;
  const res = await db.query<{ id: string }>(`SELECT id FROM ${table} WHERE ${column} = $1`, [value]);
  if (!res.rows[0]) throw new ApiError(409, 'unknown_reference', `no ${LABEL[table] ?? table} named ${String(value)}`, [{ field, message: `${String(value)} does not exist in this workspace` }]);
  return res.rows[0].id;
}

async function routeClaims(db: PoolClient, exceptTable: string, exceptId: string | undefined): Promise<RouteClaim[]> {
  const routes = await db.query<{ id: string; name: string; methods: string[]; paths: string[]; hosts: string[] }>(
    'SELECT id, name, methods, paths, hosts FROM routes WHERE enabled',
  );
  const triggers = await db.query<{ id: string; name: string; route_methods: string[]; route_path: string }>(
    'SELECT id, name, route_methods, route_path FROM workflow_triggers WHERE enabled AND route_path IS NOT NULL',
  );
  return [
    ...routes.rows.filter((r) => !(exceptTable === 'routes' && r.id === exceptId)).map((r) => ({ owner: `route ${r.name}`, methods: r.methods, paths: r.paths, hosts: r.hosts })),
    ...triggers.rows.filter((t) => !(exceptTable === 'workflow_triggers' && t.id === exceptId)).map((t) => ({ owner: `trigger ${t.name}`, methods: t.route_methods, paths: [t.route_path], hosts: [] })),
  ];
}

function refuseConflict(claim: RouteClaim, existing: RouteClaim[], field: string): void {
  const hit = findRouteConflict(claim, existing);
  if (hit) throw new ApiError(409, 'route_conflict', `${hit.method} ${hit.path} is already served by ${hit.owner}`, [{ field, message: `collides with ${hit.owner}` }]);
}

async function knownRoles(db: PoolClient, roles: string[]): Promise<void> {
  for (const [i, role] of roles.entries()) {
    if ((BUILT_IN_ROLES as readonly string[]).includes(role)) continue;
    await idOf(db, 'rbac_roles', 'name', role, `body.roles.${i}`);
  }
}

/** Consumer keys in a document: `{prefix, sha256}` as exported, or `{key}` (hashed here). */
export function keyHash(k: ConsumerDoc['keys'][number]): { hash: Buffer; prefix: string } {
  if ('key' in k) return { hash: hashCredential(k.key), prefix: /^fgk_([0-9a-f]{8})_/.exec(k.key)?.[1] ?? k.key.slice(0, 8) };
  return { hash: Buffer.from(k.sha256, 'hex'), prefix: k.prefix ?? k.sha256.slice(0, 8) };
}

export const ENTITIES: Record<Collection, EntityDef> = {
  roles: {
    collection: 'roles', type: 'role', table: 'rbac_roles', keyColumn: 'name', schema: roleDoc as z.ZodType<Doc>,
    select: `SELECT ${meta}, jsonb_build_object('name', e.name, 'description', e.description, 'grants', e.grants) AS doc FROM rbac_roles e`,
    filters: { name: 'e.name' },
    columns: async (_db, _ws, d) => ({ name: d.name, description: d.description ?? null, grants: json(d.grants) }),
  },
  services: {
    collection: 'services', type: 'service', table: 'services', keyColumn: 'name', schema: serviceDoc as z.ZodType<Doc>,
    select: `SELECT ${meta}, jsonb_build_object('name', e.name, 'url', e.url, 'targets', e.targets, 'connect_timeout_ms', e.connect_timeout_ms,
      'read_timeout_ms', e.read_timeout_ms, 'retries', e.retries, 'algorithm', e.algorithm, 'healthchecks', e.healthchecks,
      'enabled', e.enabled, 'tags', e.tags) AS doc FROM services e`,
    filters: { name: 'e.name', enabled: 'e.enabled::text', tag: 'ANY(e.tags)' },
    columns: async (_db, _ws, d) => ({
      name: d.name, url: d.url ?? null, targets: json(d.targets), connect_timeout_ms: d.connect_timeout_ms, read_timeout_ms: d.read_timeout_ms,
      retries: d.retries, algorithm: d.algorithm, healthchecks: json(d.healthchecks), enabled: d.enabled, tags: d.tags,
    }),
  },
  consumers: {
    collection: 'consumers', type: 'consumer', table: 'consumers', keyColumn: 'username', schema: consumerDoc as z.ZodType<Doc>,
    select: `SELECT ${meta}, jsonb_build_object('username', e.username, 'custom_id', e.custom_id, 'roles', e.roles, 'tags', e.tags,
      'keys', (SELECT coalesce(jsonb_agg(jsonb_build_object('prefix', k.key_prefix, 'sha256', encode(k.key_hash, 'hex')) ORDER BY k.created_at, k.id), '[]')
                 FROM api_keys k WHERE k.consumer_id = e.id AND k.revoked_at IS NULL)) AS doc FROM consumers e`,
    filters: { username: 'e.username', custom_id: 'e.custom_id', tag: 'ANY(e.tags)' },
    columns: async (db, _ws, d) => {
      await knownRoles(db, d.roles as string[]);
      return { username: d.username, custom_id: d.custom_id ?? null, roles: d.roles, tags: d.tags };
    },
    // The document's keys become exactly the consumer's live keys: new hashes are added, missing ones revoked.
    afterWrite: async (db, ws, id, d) => {
      const wanted = (d.keys as ConsumerDoc['keys']).map(keyHash);
      const live = await db.query<{ id: string; key_hash: Buffer }>('SELECT id, key_hash FROM api_keys WHERE consumer_id = $1 AND revoked_at IS NULL', [id]);
      const liveHex = new Set(live.rows.map((r) => r.key_hash.toString('hex')));
      const wantedHex = new Set(wanted.map((w) => w.hash.toString('hex')));
      for (const row of live.rows) if (!wantedHex.has(row.key_hash.toString('hex'))) await db.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [row.id]);
      for (const [i, w] of wanted.entries()) {
        if (liveHex.has(w.hash.toString('hex'))) continue;
        // A revoked key never comes back (re-applying a document written before a leaked key was
        // revoked must not revive it): issue a new one. One that belongs to anybody else is refused.
        await db.query('SAVEPOINT consumer_key');
        const res = await db.query(
          `INSERT INTO api_keys (workspace_id, consumer_id, key_prefix, key_hash) VALUES ($1, $2, $3, $4)
           ON CONFLICT (key_hash) DO NOTHING RETURNING id`,
          [ws, id, w.prefix, w.hash],
        ).catch(() => undefined);
        await db.query(res ? 'RELEASE SAVEPOINT consumer_key' : 'ROLLBACK TO SAVEPOINT consumer_key');
        if (res?.rowCount) continue;
        const revoked = (await db.query('SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NOT NULL', [w.hash]).catch(() => undefined))?.rowCount;
        if (revoked) throw new ApiError(409, 'key_revoked', 'a revoked key does not come back; issue a new one', [{ field: `body.keys.${i}`, message: 'revoked' }]);
        throw new ApiError(409, 'conflict', 'a key of this consumer belongs to another consumer', [{ field: 'body.keys', message: 'already in use' }]);
      }
    },
  },
  routes: {
    collection: 'routes', type: 'route', table: 'routes', keyColumn: 'name', schema: routeDoc as z.ZodType<Doc>,
    select: `SELECT ${meta}, jsonb_build_object('name', e.name, 'service', s.name, 'methods', e.methods, 'paths', e.paths, 'hosts', e.hosts,
      'strip_path', e.strip_path, 'transformations', e.transformations, 'static_response', e.static_response, 'aggregate', e.aggregate,
      'enabled', e.enabled, 'tags', e.tags) AS doc
      FROM routes e LEFT JOIN services s ON s.id = e.service_id`,
    filters: { name: 'e.name', service: 's.name', enabled: 'e.enabled::text', tag: 'ANY(e.tags)' },
    columns: async (db, _ws, d, selfId) => {
      const r = d as RouteDoc;
      const serviceId = await idOf(db, 'services', 'name', r.service, 'body.service');
      for (const [i, b] of (r.aggregate?.backends ?? []).entries()) await idOf(db, 'services', 'name', b.service, `body.aggregate.backends.${i}.service`);
      if (r.enabled) refuseConflict({ owner: `route ${r.name}`, methods: r.methods, paths: r.paths, hosts: r.hosts }, await routeClaims(db, 'routes', selfId), 'body.paths');
      return {
        name: r.name, service_id: serviceId, methods: r.methods, paths: r.paths, hosts: r.hosts, strip_path: r.strip_path,
        transformations: json(r.transformations), static_response: json(r.static_response), aggregate: json(r.aggregate), enabled: r.enabled, tags: r.tags,
      };
    },
  },
  triggers: {
    collection: 'triggers', type: 'workflow_trigger', table: 'workflow_triggers', keyColumn: 'name', schema: triggerDoc as z.ZodType<Doc>,
    select: `SELECT ${meta}, jsonb_build_object('name', e.name, 'route_methods', e.route_methods, 'route_path', e.route_path, 'event_type', e.event_type,
      'workflow_type', e.workflow_type, 'input_template', e.input_template, 'callback_url', e.callback_url, 'upstream_url', e.upstream_url,
      'enabled', e.enabled) AS doc FROM workflow_triggers e`,
    filters: { name: 'e.name', workflow_type: 'e.workflow_type', event_type: 'e.event_type', route_path: 'e.route_path', enabled: 'e.enabled::text' },
    columns: async (db, _ws, d, selfId) => {
      const t = d as TriggerDoc;
      if (!findWorkflowType(t.workflow_type)) throw new ApiError(409, 'unknown_reference', `no workflow type named ${t.workflow_type}`, [{ field: 'body.workflow_type', message: 'see GET /api/workflow-types on the gateway' }]);
      if (t.route_path && t.enabled) refuseConflict({ owner: `trigger ${t.name}`, methods: t.route_methods ?? ['POST'], paths: [t.route_path], hosts: [] }, await routeClaims(db, 'workflow_triggers', selfId), 'body.route_path');
      return {
        name: t.name, route_methods: t.route_methods ?? null, route_path: t.route_path ?? null, event_type: t.event_type ?? null, workflow_type: t.workflow_type,
        input_template: json(t.input_template), callback_url: t.callback_url ?? null, upstream_url: t.upstream_url ?? null, enabled: t.enabled,
      };
    },
  },
  policies: {
    collection: 'policies', type: 'rate_limiting_policy', table: 'rate_limiting_policies', keyColumn: 'name', schema: policyDoc as z.ZodType<Doc>,
    select: `SELECT ${meta}, jsonb_build_object('name', e.name, 'scope', e.scope, 'route', r.name, 'consumer', c.username, 'limit', e."limit",
      'window_seconds', e.window_seconds, 'algorithm', e.algorithm, 'enabled', e.enabled, 'tags', e.tags) AS doc
      FROM rate_limiting_policies e LEFT JOIN routes r ON r.id = e.route_id LEFT JOIN consumers c ON c.id = e.consumer_id`,
    filters: { name: 'e.name', scope: 'e.scope', route: 'r.name', consumer: 'c.username', tag: 'ANY(e.tags)' },
    columns: async (db, _ws, d) => ({
      name: d.name, scope: d.scope, route_id: await idOf(db, 'routes', 'name', d.route, 'body.route'),
      consumer_id: await idOf(db, 'consumers', 'username', d.consumer, 'body.consumer'),
      limit: d.limit, window_seconds: d.window_seconds, algorithm: d.algorithm, enabled: d.enabled, tags: d.tags,
    }),
  },
  plugins: {
    collection: 'plugins', type: 'plugin', table: 'plugins', keyColumn: 'name', schema: pluginDoc as unknown as z.ZodType<Doc>,
    select: `SELECT ${meta}, jsonb_build_object('name', e.name, 'service', s.name, 'route', r.name, 'consumer', c.username, 'config', e.config,
      'enabled', e.enabled, 'tags', e.tags) AS doc
      FROM plugins e LEFT JOIN services s ON s.id = e.service_id LEFT JOIN routes r ON r.id = e.route_id LEFT JOIN consumers c ON c.id = e.consumer_id`,
    filters: { name: 'e.name', service: 's.name', route: 'r.name', consumer: 'c.username', enabled: 'e.enabled::text', tag: 'ANY(e.tags)' },
    columns: async (db, _ws, d) => ({
      name: d.name, service_id: await idOf(db, 'services', 'name', d.service, 'body.service'), route_id: await idOf(db, 'routes', 'name', d.route, 'body.route'),
      consumer_id: await idOf(db, 'consumers', 'username', d.consumer, 'body.consumer'), config: json(d.config), enabled: d.enabled, tags: d.tags,
    }),
  },
};

/** Top-level nulls are absent fields in a document (nested values are left as they are). */
function rowToEntity(row: { id: string; row_version: number; created_at: Date; updated_at: Date; doc: Doc }): EntityRow {
  const doc: Doc = {};
  for (const [k, v] of Object.entries(row.doc)) if (v !== null) doc[k] = v;
  return { id: row.id, version: row.row_version, created_at: row.created_at, updated_at: row.updated_at, doc };
}

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export async function listEntities(
  db: PoolClient, def: EntityDef, opts: { filters?: Record<string, string>; limit?: number; after?: { key: string; id?: string } } = {},
): Promise<EntityRow[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  for (const [name, value] of Object.entries(opts.filters ?? {})) {
    const expr = def.filters[name];
    if (!expr) continue;
    params.push(value);
    where.push(expr.startsWith('ANY(') ? `$${params.length} = ${expr}` : `${expr} = $${params.length}`);
  }
  if (opts.after !== undefined) {
    // After the last row of the page before, in the list's order (key, then id).
    params.push(opts.after.key);
    if (opts.after.id === undefined) where.push(`e.${def.keyColumn} > $${params.length}`);
    else {
      params.push(opts.after.id);
      where.push(`(e.${def.keyColumn}, e.id) > ($${params.length - 1}, $${params.length}::uuid)`);
    }
  }
  let sql = `${def.select}${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY e.${def.keyColumn}, e.id`;
  if (opts.limit !== undefined) sql += ` LIMIT ${Number(opts.limit)}`;
  return (await db.query(sql, params)).rows.map(rowToEntity);
}

/** One entity by id or by its natural key (name, or username for consumers). */
export async function getEntity(db: PoolClient, def: EntityDef, idOrKey: string, lock = false): Promise<EntityRow | undefined> {
  const column = UUID.test(idOrKey) ? 'e.id' : `e.${def.keyColumn}`;
  const res = await db.query(`${def.select} WHERE ${column} = $1${lock ? ' FOR UPDATE OF e' : ''}`, [idOrKey]);
  return res.rows[0] ? rowToEntity(res.rows[0]) : undefined;
}

/** PostgreSQL's refusals as client errors: a taken name is 409, so is deleting what others use. */
function translate(err: unknown, def: EntityDef, doc?: Doc): never {
  const e = err as { code?: string; constraint?: string; detail?: string; table?: string };
  if (e.code === '23505') {
    const field = def.collection === 'plugins' ? 'body.name' : `body.${def.keyColumn}`;
    throw new ApiError(409, 'conflict', `a ${def.type} ${doc ? keyOf(def.collection, doc) : ''} exists already`.replace(/\s+$/, ''), [{ field, message: 'already taken in this workspace' }]);
  }
  if (e.code === '23503') throw new ApiError(409, 'in_use', `the ${def.type} is still referenced${e.table ? ` by ${e.table}` : ''}: remove those first`, [{ field: 'id', message: e.detail ?? 'referenced' }]);
  throw err;
}

/**
 * Runs one write under a savepoint, so a refusal (a taken name, a row still referenced) becomes
 * a client error and the surrounding transaction stays usable.
 */
async function write<T>(db: PoolClient, def: EntityDef, doc: Doc | undefined, fn: () => Promise<T>): Promise<T> {
  await db.query('SAVEPOINT entity_write');
  try {
    const result = await fn();
    await db.query('RELEASE SAVEPOINT entity_write');
    return result;
  } catch (err) {
    await db.query('ROLLBACK TO SAVEPOINT entity_write');
    return translate(err, def, doc);
  }
}

export async function insertEntity(db: PoolClient, ws: string, def: EntityDef, doc: Doc): Promise<EntityRow> {
  const cols = await def.columns(db, ws, doc);
  const names = ['workspace_id', ...Object.keys(cols)];
  const values = [ws, ...Object.values(cols)];
  const id = await write(db, def, doc, async () => (await db.query<{ id: string }>(
    `INSERT INTO ${def.table} (${names.map((n) => `"${n}"`).join(', ')}) VALUES (${values.map((_, i) => `$${i + 1}`).join(', ')}) RETURNING id`, values,
  )).rows[0]!.id);
  await def.afterWrite?.(db, ws, id, doc);
  return (await getEntity(db, def, id))!;
}

export async function updateEntity(db: PoolClient, ws: string, def: EntityDef, id: string, doc: Doc): Promise<EntityRow> {
  const cols = await def.columns(db, ws, doc, id);
  const sets = Object.keys(cols).map((c, i) => `"${c}" = $${i + 2}`);
  await write(db, def, doc, () => db.query(`UPDATE ${def.table} SET ${sets.join(', ')}, row_version = row_version + 1, updated_at = now() WHERE id = $1`, [id, ...Object.values(cols)]));
  await def.afterWrite?.(db, ws, id, doc);
  return (await getEntity(db, def, id))!;
}

export async function deleteEntity(db: PoolClient, def: EntityDef, id: string): Promise<void> {
  await write(db, def, undefined, () => db.query(`DELETE FROM ${def.table} WHERE id = $1`, [id]));
}

/** Audit rows keep key prefixes, never key hashes (the Admin API's writes and a declarative sync alike). */
export function auditView(def: EntityDef, doc: Doc | undefined): Doc | undefined {
  if (!doc || def.collection !== 'consumers') return doc;
  return { ...doc, keys: ((doc.keys ?? []) as { prefix?: string }[]).map((k) => ({ prefix: k.prefix })) };
}
