import type { FastifyReply, FastifyRequest } from 'fastify';
import type { PoolClient } from 'pg';
import { z } from 'zod';
import { auditView, deleteEntity, ENTITIES, getEntity, insertEntity, listEntities, updateEntity, UUID, type Doc, type EntityDef, type EntityRow } from '../lib/control-plane/entities';
import { COLLECTIONS } from '../lib/control-plane/schemas';
import { beginChange, finishChange, type ChangeAudit } from '../lib/control-plane/versions';
import { newCredential } from '../lib/credentials';
import { ApiError, validationError } from '../lib/errors';
import { inWorkspace } from '../lib/postgres';
import type { UpstreamPolicy } from '../lib/upstream-policy';
import { callbackRefusal } from '../lib/webhook-targets';
import type { AdminDeps } from './app';
import { workspaceParam, type AdminApi, type Call } from './endpoint';

/** Create / read / list / replace / update / delete for every collection of a workspace's config. */

export const idParam = z.object({ id: z.string().min(1).max(200).describe('the id, or the name (username for consumers)') }).strict();
const MAX_PAGE = 1000;

/**
 * The opaque list cursor: the last key and id of the page before (a key alone is not unique:
 * plugins share a name across scopes).
 */
const encodeCursor = (key: string, id: string) => Buffer.from(JSON.stringify({ after: key, id })).toString('base64url');
function decodeCursor(cursor: string): { key: string; id?: string } {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString()) as { after?: unknown; id?: unknown };
    if (typeof v.after === 'string' && !v.after.includes('\0') && (v.id === undefined || (typeof v.id === 'string' && UUID.test(v.id)))) {
      return { key: v.after, id: v.id as string | undefined };
    }
  } catch { /* fall through */ }
  throw new ApiError(400, 'validation_failed', 'invalid cursor', [{ field: 'query.cursor', message: 'use the `next` value of the previous page' }]);
}

/**
 * Addresses in services and trigger rules that the processes would refuse, refused when they are
 * saved (400 naming each field) and not only when used. The schema cannot say it: the settings
 * are the process's.
 * - A rule's callback_url where webhooks may not go to non-public addresses (FLOWGATE_WEBHOOK_ALLOW_PRIVATE unset).
 * - A service's url and targets, a rule's upstream_url, a jwt plugin's jwks_url, that the gateway may not connect to
 *   (lib/upstream-policy.ts: FLOWGATE_UPSTREAM_DENY, loopback, link-local), as far as the URL's
 *   own text tells; a name is checked by the gateway where it is resolved.
 * `prefixOf(i)` is where the i-th document sits in the request (`body`, `body.services.3`).
 */
export function checkAddresses(docs: readonly Doc[], allowNonPublicCallbacks: boolean, policy: UpstreamPolicy, prefixOf: (i: number) => string): void {
  const details = docs.flatMap((d, i) => {
    const at = (field: string, why: string | undefined) => (why ? [{ field: `${prefixOf(i)}.${field}`, message: why }] : []);
    const upstream = (field: string, url: unknown) => at(field, typeof url === 'string' ? policy.urlRefusal(url) : undefined);
    return [
      ...at('callback_url', typeof d.callback_url === 'string' ? callbackRefusal(d.callback_url, allowNonPublicCallbacks) : undefined),
      ...upstream('url', d.url),
      ...(Array.isArray(d.targets) ? d.targets : []).flatMap((t: { url?: unknown }, n: number) => upstream(`targets.${n}.url`, t.url)),
      ...upstream('upstream_url', d.upstream_url),
      ...upstream('config.jwks_url', (d.config as { jwks_url?: unknown } | undefined)?.jwks_url),
    ];
  });
  if (details.length) throw new ApiError(400, 'validation_failed', `refused address: ${details.map((d) => d.field).join(', ')}`, details);
}

/** What the API shows of an entity: its document with id, version and times. */
export const present = (e: EntityRow) => ({ id: e.id, ...e.doc, version: e.version, created_at: e.created_at, updated_at: e.updated_at });

/**
 * An entity's ETag: its version and its id. The version alone would repeat: an entity deleted and
 * created again under its name starts at version 1, and a write by name with the old entity's
 * `If-Match: "1"` would overwrite the new one.
 */
const etagOf = (e: EntityRow) => `"${e.version}-${e.id}"`;

/** If-Match (the ETag as given) makes a write conditional; a stale one is 412 with the current version. */
function checkIfMatch(req: FastifyRequest, current: EntityRow): void {
  const given = req.headers['if-match'];
  if (given === undefined || given === '*') return;
  const wanted = String(given).split(',').map((t) => t.trim().replace(/^W\//, ''));
  if (!wanted.includes(etagOf(current))) {
    throw new ApiError(412, 'precondition_failed', `the entity changed: it is at version ${current.version}`, [{ field: 'headers.if-match', message: `current ETag is ${etagOf(current)}` }]);
  }
}

const etag = (reply: FastifyReply, e: EntityRow) => reply.header('ETag', etagOf(e));

export function registerCollections(api: AdminApi, deps: AdminDeps, upstreamPolicy: UpstreamPolicy): void {
  /** One change to a workspace: lock, change, version, audit, in one transaction; then tell the data planes. */
  async function change<T>(call: Call<unknown, unknown, unknown>, summary: (r: T) => string, fn: (db: PoolClient, audits: ChangeAudit[]) => Promise<T>): Promise<T> {
    const { result, version } = await inWorkspace(deps.pool, call.ws, async (db) => {
      await beginChange(db, call.ws);
      const audits: ChangeAudit[] = [];
      const result = await fn(db, audits);
      const version = await finishChange(db, call.ws, { actor: `token:${call.who.name}`, correlationId: call.req.id }, summary(result), audits);
      return { result, version };
    });
    deps.announce(call.ws, version);
    call.reply.header('X-Flowgate-Config-Version', String(version));
    return result;
  }

  const found = async (db: PoolClient, def: EntityDef, id: string, lock = false): Promise<EntityRow> => {
    const e = await getEntity(db, def, id, lock);
    if (!e) throw new ApiError(404, 'not_found', `${def.type} ${id} not found`);
    return e;
  };

  for (const c of COLLECTIONS) {
    const def = ENTITIES[c];
    const tag = c;
    const resource = c;
    const listQuery = z
      .object({
        ...workspaceParam,
        limit: z.coerce.number().int().min(1).max(MAX_PAGE).default(100),
        cursor: z.string().optional(),
        ...Object.fromEntries(Object.keys(def.filters).map((f) => [f, z.string().min(1).max(200).optional()])),
      })
      .strict();
    const scopedQuery = z.object(workspaceParam).strict();

    api.add({
      method: 'GET', url: `/${c}`, summary: `List ${c} (filters: ${Object.keys(def.filters).join(', ')}; cursor paging)`, tag, resource, action: 'read', query: listQuery,
      handler: async ({ ws, query }) => {
        const { limit, cursor, workspace: _w, ...filters } = query as { limit: number; cursor?: string; workspace?: string } & Record<string, string>;
        const rows = await inWorkspace(deps.pool, ws, (db) => listEntities(db, def, { filters, limit: limit + 1, after: cursor ? decodeCursor(cursor) : undefined }));
        const page = rows.slice(0, limit);
        const last = page[page.length - 1];
        return { data: page.map(present), next: rows.length > limit && last ? encodeCursor(String(last.doc[def.keyColumn]), last.id) : null };
      },
    });

    api.add({
      method: 'GET', url: `/${c}/:id`, summary: `Read one of ${c} by id or name`, tag, resource, action: 'read', query: scopedQuery, params: idParam,
      handler: async ({ ws, params, reply }) => {
        const e = await inWorkspace(deps.pool, ws, (db) => found(db, def, params.id));
        etag(reply, e);
        return present(e);
      },
    });

    api.add({
      method: 'POST', url: `/${c}`, summary: `Create one of ${c}`, tag, resource, action: 'write', query: scopedQuery, body: def.schema,
      responses: { 201: 'created', 409: 'a name taken, a reference to a missing entity, or a colliding route' },
      handler: async (call) => {
        checkAddresses([call.body as Doc], deps.config.FLOWGATE_WEBHOOK_ALLOW_PRIVATE, upstreamPolicy, () => 'body');
        const e = await change(call, (r: EntityRow) => `${def.type} ${String(r.doc[def.keyColumn])} created`, async (db, audits) => {
          const created = await insertEntity(db, call.ws, def, call.body as Doc);
          audits.push({ action: 'create', entityType: def.type, entityId: created.id, after: auditView(def, created.doc) });
          return created;
        });
        etag(call.reply, e);
        return call.reply.code(201).header('Location', `/${c}/${e.id}`).send(present(e));
      },
    });

    const write = (method: 'PUT' | 'PATCH') => api.add({
      method, url: `/${c}/:id`, tag, resource, action: 'write', query: scopedQuery, params: idParam,
      summary: method === 'PUT' ? `Replace one of ${c} (If-Match: its ETag, to detect concurrent edits)` : `Update fields of one of ${c} (If-Match supported)`,
      body: method === 'PUT' ? def.schema : z.record(z.string(), z.unknown()),
      responses: { 200: 'updated', 409: 'a name taken, a missing reference or a colliding route', 412: 'If-Match names a stale version' },
      handler: async (call) => {
        const e = await change(call, (r: EntityRow) => `${def.type} ${String(r.doc[def.keyColumn])} updated`, async (db, audits) => {
          const existing = await found(db, def, call.params.id, true);
          checkIfMatch(call.req, existing);
          let doc = call.body as Doc;
          if (method === 'PATCH') {
            // The merged document is validated whole, so a patch can't leave an invalid entity behind.
            // A null removes the field (JSON merge patch, RFC 7396), e.g. a route's service when it turns static.
            const merged = Object.entries({ ...existing.doc, ...(call.body as Doc) }).filter(([, v]) => v !== null);
            const parsed = def.schema.safeParse(Object.fromEntries(merged));
            if (!parsed.success) throw validationError(parsed.error, 'body');
            doc = parsed.data;
          }
          checkAddresses([doc], deps.config.FLOWGATE_WEBHOOK_ALLOW_PRIVATE, upstreamPolicy, () => 'body');
          const updated = await updateEntity(db, call.ws, def, existing.id, doc);
          audits.push({ action: 'update', entityType: def.type, entityId: existing.id, before: auditView(def, existing.doc), after: auditView(def, updated.doc) });
          return updated;
        });
        etag(call.reply, e);
        return present(e);
      },
    });
    write('PUT');
    write('PATCH');

    api.add({
      method: 'DELETE', url: `/${c}/:id`, summary: `Delete one of ${c} (If-Match supported)`, tag, resource, action: 'write', query: scopedQuery, params: idParam,
      responses: { 204: 'deleted', 409: 'still referenced by other entities', 412: 'If-Match names a stale version' },
      handler: async (call) => {
        await change(call, () => `${def.type} ${call.params.id} deleted`, async (db, audits) => {
          const existing = await found(db, def, call.params.id, true);
          checkIfMatch(call.req, existing);
          await deleteEntity(db, def, existing.id);
          audits.push({ action: 'delete', entityType: def.type, entityId: existing.id, before: auditView(def, existing.doc) });
        });
        return call.reply.code(204).send();
      },
    });
  }

  registerConsumerKeys(api, deps, change, found);
}

type Change = <T>(call: Call<unknown, unknown, unknown>, summary: (r: T) => string, fn: (db: PoolClient, audits: ChangeAudit[]) => Promise<T>) => Promise<T>;
type Found = (db: PoolClient, def: EntityDef, id: string, lock?: boolean) => Promise<EntityRow>;

/**
 * A consumer's document lists its live keys, so issuing or revoking one is a change of the
 * consumer: its version (the ETag) moves, and a PUT with If-Match from before it is refused
 * instead of bringing back a revoked key or revoking a new one.
 */
const keysChanged = (db: PoolClient, consumerId: string) =>
  db.query('UPDATE consumers SET row_version = row_version + 1, updated_at = now() WHERE id = $1', [consumerId]);

/** A consumer's API keys: issued here (the value is shown once), listed by prefix, revoked. */
function registerConsumerKeys(api: AdminApi, deps: AdminDeps, change: Change, found: Found): void {
  const def = ENTITIES.consumers;
  const keyParams = z.object({ id: z.string().min(1), keyId: z.uuid() }).strict();
  const scopedQuery = z.object(workspaceParam).strict();
  api.add({
    method: 'POST', url: '/consumers/:id/keys', summary: 'Issue an API key; the key is in this answer only', tag: 'consumers', resource: 'consumers', action: 'write',
    query: scopedQuery, params: idParam, responses: { 201: '{id, key, prefix}' },
    handler: async (call) => {
      const out = await change(call, () => `key issued to consumer ${call.params.id}`, async (db, audits) => {
        const consumer = await found(db, def, call.params.id, true);
        const cred = newCredential('key');
        const id = (await db.query<{ id: string }>('INSERT INTO api_keys (workspace_id, consumer_id, key_prefix, key_hash) VALUES ($1, $2, $3, $4) RETURNING id', [call.ws, consumer.id, cred.prefix, cred.hash])).rows[0]!.id;
        await keysChanged(db, consumer.id);
        audits.push({ action: 'create', entityType: 'api_key', entityId: id, after: { consumer: consumer.doc.username, prefix: cred.prefix } });
        return { id, key: cred.value, prefix: cred.prefix, consumer_id: consumer.id };
      });
      return call.reply.code(201).header('Cache-Control', 'no-store').send(out);
    },
  });
  api.add({
    method: 'GET', url: '/consumers/:id/keys', summary: "List a consumer's keys (prefixes only)", tag: 'consumers', resource: 'consumers', action: 'read', query: scopedQuery, params: idParam,
    handler: async ({ ws, params }) => inWorkspace(deps.pool, ws, async (db) => {
      const consumer = await found(db, def, params.id);
      const rows = await db.query('SELECT id, key_prefix AS prefix, created_at, revoked_at FROM api_keys WHERE consumer_id = $1 ORDER BY created_at', [consumer.id]);
      return { data: rows.rows };
    }),
  });
  api.add({
    method: 'DELETE', url: '/consumers/:id/keys/:keyId', summary: 'Revoke a key', tag: 'consumers', resource: 'consumers', action: 'write', query: scopedQuery, params: keyParams, responses: { 204: 'revoked' },
    handler: async (call) => {
      await change(call, () => `key ${call.params.keyId} revoked`, async (db, audits) => {
        const consumer = await found(db, def, call.params.id, true);
        const res = await db.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND consumer_id = $2 AND revoked_at IS NULL RETURNING key_prefix', [call.params.keyId, consumer.id]);
        if (!res.rowCount) throw new ApiError(404, 'not_found', 'key not found');
        await keysChanged(db, consumer.id);
        audits.push({ action: 'delete', entityType: 'api_key', entityId: call.params.keyId, before: { consumer: consumer.doc.username, prefix: res.rows[0].key_prefix } });
      });
      return call.reply.code(204).send();
    },
  });
}

