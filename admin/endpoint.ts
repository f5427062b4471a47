import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { z } from 'zod';
import type { Resource } from '../lib/control-plane/schemas';
import { ApiError, nulCharacter, validationError } from '../lib/errors';
import { asPlatform } from '../lib/postgres';
import { authenticateAdmin, authorize, workspaceOf, type Action, type AdminPrincipal, type PlatformTokenMirror } from './auth';

/**
 * Every Admin API endpoint is declared once, with the zod schemas that validate its query,
 * path parameters and body. The same declarations generate the OpenAPI document, so the
 * documentation cannot drift from what the API accepts.
 */

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
export type Call<Q, P, B> = { req: FastifyRequest; reply: FastifyReply; who: AdminPrincipal; ws: string; query: Q; params: P; body: B };

export type EndpointSpec<Q, P, B> = {
  method: Method;
  url: string;
  summary: string;
  tag: string;
  resource: Resource;
  action: Action;
  /** false: the call is not about one workspace (listing workspaces, platform tokens). */
  scoped?: boolean;
  /** Only platform-wide tokens (workspace null) may call it: it acts on the platform itself (runbooks, platform tokens, the platform's audit log). */
  platform?: boolean;
  query?: z.ZodType<Q>;
  params?: z.ZodType<P>;
  body?: z.ZodType<B>;
  /** The body is YAML (or JSON) text, parsed by the handler. */
  textBody?: boolean;
  responses?: Record<number, string>;
  handler: (call: Call<Q, P, B>) => Promise<unknown>;
};

type Declared = EndpointSpec<unknown, unknown, unknown>;

export const workspaceParam = { workspace: z.string().min(1).optional().describe('the workspace; defaults to the token\'s own or X-Tenant-ID') };

export class AdminApi {
  readonly endpoints: Declared[] = [];

  constructor(private readonly app: FastifyInstance, private readonly pool: Pool, private readonly mirror?: PlatformTokenMirror) {}

  add<Q = Record<string, never>, P = Record<string, never>, B = undefined>(spec: EndpointSpec<Q, P, B>): void {
    this.endpoints.push(spec as unknown as Declared);
    this.app.route({
      method: spec.method,
      url: spec.url,
      handler: async (req, reply) => {
        const who = await authenticateAdmin(this.pool, req, this.mirror);
        authorize(who, spec.resource, spec.action);
        if (spec.platform && who.workspace !== null) {
          throw new ApiError(403, 'forbidden', 'this acts on the platform: use a platform-wide token', [{ field: 'authorization', message: 'a workspace token' }]);
        }
        // PostgreSQL text cannot hold NUL: refused here, naming the field, rather than failing the query.
        for (const [where, value] of [['params', req.params], ['query', req.query], ['body', req.body]] as const) {
          const nul = nulCharacter(value, where);
          if (nul) throw nul;
        }
        const ws = spec.scoped === false ? (who.workspace ?? '') : workspaceOf(who, req);
        // A platform-wide token may name any workspace: one that does not exist is 404, as for a
        // workspace token, not a foreign-key failure (500) on the first write.
        if (spec.scoped !== false && who.workspace === null && !(await workspaceExists(this.pool, ws))) throw new ApiError(404, 'not_found', 'workspace not found');
        const parse = <T>(schema: z.ZodType<T> | undefined, value: unknown, where: 'query' | 'params' | 'body'): T => {
          if (!schema) return value as T;
          const r = schema.safeParse(value ?? (where === 'body' ? undefined : {}));
          if (!r.success) throw validationError(r.error, where);
          return r.data;
        };
        const query = parse(spec.query, req.query, 'query');
        const params = parse(spec.params, req.params, 'params');
        const body = spec.textBody ? (req.body as B) : parse(spec.body, req.body, 'body');
        return spec.handler({ req, reply, who, ws, query, params, body });
      },
    });
  }

  /** OpenAPI 3.0 from the declarations. */
  openapi(): Record<string, unknown> {
    const schema = (s: z.ZodType) => z.toJSONSchema(s, { target: 'openapi-3.0', io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
    const paths: Record<string, Record<string, unknown>> = {};
    for (const e of this.endpoints) {
      const path = e.url.replace(/:([A-Za-z_]+)/g, '{$1}');
      const parameters: unknown[] = [];
      for (const [where, s] of [['query', e.query], ['path', e.params]] as const) {
        if (!s) continue;
        const js = schema(s) as { properties?: Record<string, unknown>; required?: string[] };
        for (const [name, p] of Object.entries(js.properties ?? {})) {
          parameters.push({ name, in: where, required: where === 'path' || (js.required ?? []).includes(name), schema: p });
        }
      }
      const responses: Record<string, unknown> = {};
      for (const [code, description] of Object.entries(e.responses ?? { 200: 'OK' })) responses[code] = { description };
      for (const [code, description] of Object.entries({ 400: 'invalid input: error.details names each field', 401: 'no or bad credential', 403: 'the role may not do this', 404: 'not found (or another workspace\'s)' })) responses[code] ??= { description, content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
      (paths[path] ??= {})[e.method.toLowerCase()] = {
        summary: e.summary,
        tags: [e.tag],
        'x-flowgate-grant': `${e.resource}:${e.action}`,
        ...(e.platform ? { 'x-flowgate-platform': true } : {}),
        parameters,
        ...(e.body ? { requestBody: { required: true, content: { 'application/json': { schema: schema(e.body) } } } } : {}),
        ...(e.textBody ? { requestBody: { required: true, content: { 'application/yaml': { schema: { type: 'string' } }, 'application/json': { schema: { type: 'object' } } } } } : {}),
        responses,
      };
    }
    return {
      openapi: '3.0.3',
      info: { title: 'Flowgate Admin API', version: '1', description: 'The control plane: workspaces, consumers and keys, roles, services, routes, plugins, rate-limit policies, trigger rules, versioned and declarative config, audit log.' },
      components: {
        securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
        schemas: {
          Error: {
            type: 'object',
            properties: {
              error: { type: 'object', properties: { code: { type: 'string' }, message: { type: 'string' }, details: { type: 'array', items: { type: 'object', properties: { field: { type: 'string' }, message: { type: 'string' } } } } } },
              correlation_id: { type: 'string' },
            },
          },
        },
      },
      security: [{ bearer: [] }],
      paths,
    };
  }
}

async function workspaceExists(pool: Pool, ws: string): Promise<boolean> {
  return asPlatform(pool, async (db) => (await db.query('SELECT 1 FROM workspaces WHERE id = $1', [ws])).rowCount === 1);
}
