import type { Pool } from 'pg';
import { ApiError } from './errors';
import { asPlatform } from './postgres';

/** A row of workflow_triggers: a route or an event type bound to a workflow type. */
export type TriggerRule = {
  id: string;
  workspace_id: string;
  route_methods: string[] | null;
  route_path: string | null;
  event_type: string | null;
  workflow_type: string;
  input_template: unknown;
  callback_url: string | null;
  upstream_url: string | null;
  enabled: boolean;
};

export async function loadTriggerRules(pool: Pool, filter: { eventType?: string; workspace?: string } = {}): Promise<TriggerRule[]> {
  // Event rules are matched across workspaces by event type: a platform-scope read.
  const res = await asPlatform(pool, (db) => db.query<TriggerRule>(
    `SELECT id, workspace_id, route_methods, route_path, event_type, workflow_type, input_template, callback_url, upstream_url, enabled
       FROM workflow_triggers
      WHERE enabled AND ($1::text IS NULL OR event_type = $1) AND ($2::text IS NULL OR workspace_id = $2)
      ORDER BY created_at`,
    [filter.eventType ?? null, filter.workspace ?? null],
  ));
  return res.rows;
}

/** Headers a template never sees: the caller's credentials are not workflow input. */
const CREDENTIAL_HEADERS = new Set(['authorization', 'proxy-authorization', 'x-api-key', 'cookie']);

/** A request's headers as templates see them: without its credentials. */
export function templateHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !CREDENTIAL_HEADERS.has(k.toLowerCase())) out[k] = v;
  return out;
}

/**
 * Where a template names a credential header (`{{headers.authorization}}`): the paths in the
 * template, for the Admin API to refuse. Such a value would be empty anyway (templateHeaders).
 */
export function credentialReferences(template: unknown, at: string[] = []): string[][] {
  if (typeof template === 'string') {
    const refs = [...template.matchAll(EMBEDDED)].map((m) => m[1]!.toLowerCase().split('.'));
    return refs.some(([source, name]) => source === 'headers' && CREDENTIAL_HEADERS.has(name ?? '')) ? [at] : [];
  }
  if (template && typeof template === 'object') return Object.entries(template).flatMap(([k, v]) => credentialReferences(v, [...at, k]));
  return [];
}

const WHOLE = /^\{\{\s*([A-Za-z0-9_.\-[\]]+)\s*\}\}$/;
const EMBEDDED = /\{\{\s*([A-Za-z0-9_.\-[\]]+)\s*\}\}/g;

function lookup(source: Record<string, unknown>, path: string): unknown {
  let cur: unknown = source;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

/**
 * Maps a request (or event) into workflow input. A string that is only `{{path}}` takes the
 * value with its type (`{{body.amount}}` stays a number); `{{…}}` inside text is interpolated.
 * Inside text only a string, number or boolean fits (null or missing is empty): anything else
 * is a 400 naming the field, since an object the client sent (`{"toString": 1}`) has no text.
 * Sources: body, path, query, headers, auth (for routes); event (for Kafka events).
 * No template: the body (or the event's data) is the input.
 */
export function renderInput(template: unknown, source: Record<string, unknown>): unknown {
  if (template === null || template === undefined) return source.body ?? (source.event as { data?: unknown } | undefined)?.data;
  const walk = (t: unknown): unknown => {
    if (typeof t === 'string') {
      const whole = WHOLE.exec(t);
      if (whole) return lookup(source, whole[1]!);
      return t.replace(EMBEDDED, (_m, p: string) => {
        const v = lookup(source, p);
        if (v === undefined || v === null) return '';
        if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return String(v);
        throw new ApiError(400, 'validation_failed', `invalid ${p.split('.')[0]!}: ${p}`, [{ field: p, message: 'a string, number or boolean: the template puts it inside text' }]);
      });
    }
    if (Array.isArray(t)) return t.map(walk);
    if (t && typeof t === 'object') {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(t)) {
        const r = walk(v);
        if (r !== undefined) out[k] = r;
      }
      return out;
    }
    return t;
  };
  return walk(template);
}
