import { z } from 'zod';
import { rewriteError } from '../path-rewrite';
import { headerName, pluginConfigSchemas, PLUGIN_NAMES, requestHeaderValue, responseHeaderValue } from './plugins';
import { credentialReferences } from '../trigger-rules';

/**
 * The control plane's entities in their document form: what the Admin API accepts and
 * returns, what a config version stores and what declarative YAML holds. References between
 * entities are by name (`service: orders`), so a document is readable and portable between
 * workspaces; the database keeps foreign keys underneath.
 */

export const entityName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, 'letters, digits, . _ - (at most 128, starting with a letter or digit)');
const tags = z.array(z.string().min(1).max(64)).max(32).default([]);
const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const;
const RESERVED_PREFIXES = ['/api/', '/outbound/', '/health'];
const headerEdits = (value: typeof requestHeaderValue) => ({
  add_headers: z.record(headerName, value.max(4096)).default({}),
  remove_headers: z.array(headerName).default([]),
});
const PII_KINDS = ['email', 'card', 'national_id', 'phone'] as const;
const requestEdits = z
  .object({
    ...headerEdits(requestHeaderValue),
    /** A regex over the path the upstream receives, e.g. `^/v1/users/(\d+)$` → `/users/$1`. */
    rewrite_path: z.object({ pattern: z.string().min(1).max(1000), replacement: z.string().max(2000) }).strict()
      .superRefine((r, ctx) => {
        const problem = rewriteError(r);
        if (problem) ctx.addIssue({ code: 'custom', message: problem, path: ['pattern'] });
      })
      .optional(),
    /** Converts the request body before it goes upstream. */
    body: z.enum(['json-to-xml', 'xml-to-json']).optional(),
  })
  .strict();
const responseEdits = z
  .object({
    ...headerEdits(responseHeaderValue),
    body: z.enum(['json-to-xml', 'xml-to-json']).optional(),
    /** Masks these kinds of personal data in the body returned to the client. */
    mask_pii: z.array(z.enum(PII_KINDS)).max(PII_KINDS.length).optional(),
  })
  .strict();

export const BUILT_IN_ROLES = ['admin', 'operator', 'developer', 'viewer'] as const;
export const RESOURCES = ['workspaces', 'consumers', 'roles', 'services', 'routes', 'plugins', 'policies', 'triggers', 'webhook-secrets', 'admin-tokens', 'config', 'audit-logs', 'runbooks', 'payments'] as const;
export type Resource = (typeof RESOURCES)[number];
export const grant = z.string().refine((g) => {
  const [resource, action, extra] = g.split(':');
  return extra === undefined && (resource === '*' || (RESOURCES as readonly string[]).includes(resource!)) && ['read', 'write', '*'].includes(action ?? '');
}, `resource:action, resource one of *, ${RESOURCES.join(', ')}; action read, write or *`);

/** Active checks probe every target; passive ones count the failures of real traffic (Kong's model). */
const healthchecks = z
  .object({
    active: z.object({
      path: z.string().regex(/^\/[^\s]*$/, 'a path such as /health').default('/health'),
      interval_ms: z.number().int().min(100).max(300_000).default(5000),
      timeout_ms: z.number().int().min(10).max(60_000).default(1000),
      healthy_successes: z.number().int().min(1).max(100).default(2),
      unhealthy_failures: z.number().int().min(1).max(100).default(3),
      expected_statuses: z.array(z.number().int().min(100).max(599)).max(50).optional(),
    }).strict().optional(),
    passive: z.object({
      unhealthy_failures: z.number().int().min(1).max(1000).default(5),
      unhealthy_5xx: z.number().int().min(1).max(1000).default(10),
      window_ms: z.number().int().min(100).max(600_000).default(10_000),
      cooldown_ms: z.number().int().min(100).max(600_000).default(10_000),
    }).strict().optional(),
  })
  .strict();

export const serviceDoc = z
  .object({
    name: entityName,
    url: z.url({ protocol: /^https?$/ }).optional(),
    targets: z.array(z.object({ url: z.url({ protocol: /^https?$/ }), weight: z.number().int().min(1).max(1000).default(100) }).strict()).max(64).default([]),
    connect_timeout_ms: z.number().int().min(1).max(60_000).default(5000),
    read_timeout_ms: z.number().int().min(1).max(600_000).default(5000),
    retries: z.number().int().min(0).max(10).default(0),
    algorithm: z.enum(['round-robin', 'least-connections']).default('round-robin'),
    healthchecks: healthchecks.default({}),
    enabled: z.boolean().default(true),
    tags,
  })
  .strict()
  .refine((s) => (s.url === undefined) !== (s.targets.length === 0), { message: 'exactly one of url or targets', path: ['url'] });

export const routePath = z
  .string()
  .regex(/^\/[A-Za-z0-9_\-/:.*~]*$/, 'a path such as /orders/:id')
  .refine((p) => !RESERVED_PREFIXES.some((r) => p === r.replace(/\/$/, '') || p.startsWith(r)), `reserved by the gateway (${RESERVED_PREFIXES.join(', ')})`);

/** A route that answers by itself (KrakenD's static proxy, Kong's request-termination). */
const staticResponse = z
  .object({
    status: z.number().int().min(100).max(599).default(200),
    headers: z.record(headerName, responseHeaderValue.max(4096)).default({}),
    body: z.unknown().optional(),
  })
  .strict();

/** One route fanning out to several services, merged into one JSON answer (KrakenD's backends). */
const aggregateSpec = z
  .object({
    backends: z.array(z.object({
      service: entityName,
      path: z.string().regex(/^\/[^\s]*$/, 'a path such as /users/{id}'),
      method: z.enum(['GET', 'POST']).default('GET'),
      group: z.string().min(1).max(128).optional(),
      allow: z.array(z.string().min(1)).max(100).optional(),
      mapping: z.record(z.string().min(1), z.string().min(1)).optional(),
    }).strict()).min(1).max(16),
    timeout_ms: z.number().int().min(1).max(60_000).default(3000),
  })
  .strict();

export const routeDoc = z
  .object({
    name: entityName,
    service: entityName.optional(),
    static_response: staticResponse.optional(),
    aggregate: aggregateSpec.optional(),
    methods: z.array(z.enum(HTTP_METHODS)).min(1).default(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
    paths: z.array(routePath).min(1).max(32),
    hosts: z.array(z.string().regex(/^[A-Za-z0-9.-]+(:\d+)?$/, 'a host name')).max(32).default([]),
    strip_path: z.boolean().default(false),
    transformations: z.object({ request: requestEdits.optional(), response: responseEdits.optional() }).strict().default({}),
    enabled: z.boolean().default(true),
    tags,
  })
  .strict()
  .refine((r) => [r.service, r.static_response, r.aggregate].filter((x) => x !== undefined).length === 1, {
    message: 'exactly one of service, static_response or aggregate', path: ['service'],
  });

export const pluginDoc = z
  .object({
    name: z.enum(PLUGIN_NAMES),
    service: entityName.optional(),
    route: entityName.optional(),
    consumer: entityName.optional(),
    config: z.record(z.string(), z.unknown()).default({}),
    enabled: z.boolean().default(true),
    tags,
  })
  .strict()
  .transform((p, ctx) => {
    // The tenant's JWT issuers are trusted for the whole workspace; routes narrow access with `authorization`.
    if (p.name === 'jwt' && (p.service ?? p.route ?? p.consumer) !== undefined) {
      ctx.addIssue({ code: 'custom', message: 'the jwt plugin applies to the whole workspace: no service, route or consumer', path: [p.service ? 'service' : p.route ? 'route' : 'consumer'] });
      return z.NEVER;
    }
    // Each plugin's own schema checks (and completes) its config; issues name config.<field>.
    const parsed = pluginConfigSchemas[p.name].safeParse(p.config);
    if (!parsed.success) {
      for (const issue of parsed.error.issues) ctx.addIssue({ code: 'custom', message: issue.message, path: ['config', ...issue.path.map((k) => (typeof k === 'symbol' ? String(k) : k))] });
      return z.NEVER;
    }
    return { ...p, config: parsed.data as Record<string, unknown> };
  });

export const policyDoc = z
  .object({
    name: entityName,
    scope: z.enum(['workspace', 'route', 'consumer']),
    route: entityName.optional(),
    consumer: entityName.optional(),
    limit: z.number().int().min(1).max(1_000_000_000),
    window_seconds: z.number().int().min(1).max(86_400 * 31),
    algorithm: z.enum(['fixed-window', 'sliding-window', 'token-bucket']).default('sliding-window'),
    enabled: z.boolean().default(true),
    tags,
  })
  .strict()
  .refine((p) => (p.scope === 'route') === (p.route !== undefined), { message: 'a route policy names its route (and only a route policy does)', path: ['route'] })
  .refine((p) => (p.scope === 'consumer') === (p.consumer !== undefined), { message: 'a consumer policy names its consumer (and only a consumer policy does)', path: ['consumer'] });

/** A key in a document: its SHA-256 (as exported), or the key itself (hashed on sync; for hand-written DB-less files). */
export const keyDoc = z.union([
  z.object({ prefix: z.string().max(16).optional(), sha256: z.string().regex(/^[0-9a-f]{64}$/, '64 hex digits') }).strict(),
  z.object({ key: z.string().min(16) }).strict(),
]);

export const consumerDoc = z
  .object({
    username: entityName,
    custom_id: z.string().max(256).optional(),
    roles: z.array(entityName).max(32).default([]),
    keys: z.array(keyDoc).max(100).default([]),
    tags,
  })
  .strict();

export const roleDoc = z
  .object({
    name: entityName.refine((n) => !(BUILT_IN_ROLES as readonly string[]).includes(n), 'a built-in role name'),
    description: z.string().max(1000).optional(),
    grants: z.array(grant).max(100),
  })
  .strict();

/** A route or an event type bound to a workflow type (workflow_triggers). */
export const triggerDoc = z
  .object({
    /** Defaults to one made from the route or event (`post-orders-id`, `event-user-signed-up`). */
    name: entityName.optional(),
    route_methods: z.array(z.enum(HTTP_METHODS)).min(1).optional(),
    route_path: routePath.optional(),
    event_type: z.string().min(1).max(200).optional(),
    workflow_type: z.string().min(1),
    input_template: z.unknown().optional(),
    callback_url: z.url({ protocol: /^https?$/ }).optional(),
    upstream_url: z.url({ protocol: /^https?$/ }).optional(),
    enabled: z.boolean().default(true),
  })
  .strict()
  .refine((r) => (r.route_path === undefined) !== (r.event_type === undefined), { message: 'exactly one of route_path or event_type', path: ['route_path'] })
  .superRefine((r, ctx) => {
    for (const at of credentialReferences(r.input_template)) {
      ctx.addIssue({ code: 'custom', message: "the caller's credentials never go into workflow input", path: ['input_template', ...at] });
    }
  })
  .transform((r) => {
    const route_methods = r.route_path ? (r.route_methods ?? ['POST' as const]) : r.route_methods;
    const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
    const name = r.name ?? (r.route_path ? slug(`${route_methods!.join('-')}-${r.route_path}`) : `event-${slug(r.event_type!)}`).slice(0, 128);
    return { ...r, name, route_methods };
  });

export const workspaceInput = z.object({ id: z.string().regex(/^[a-z0-9][a-z0-9-]{1,62}$/, 'lowercase letters, digits and -, 2 to 63'), name: z.string().min(1).max(200) }).strict();

/** A workspace's whole config: what `GET /config` returns, a version stores and YAML holds. */
export const configDocument = z
  .object({
    _format_version: z.literal('1').default('1'),
    workspace: z.string().min(1),
    services: z.array(serviceDoc).default([]),
    routes: z.array(routeDoc).default([]),
    plugins: z.array(pluginDoc).default([]),
    consumers: z.array(consumerDoc).default([]),
    roles: z.array(roleDoc).default([]),
    policies: z.array(policyDoc).default([]),
    triggers: z.array(triggerDoc).default([]),
  })
  .strict();

export type ServiceDoc = z.infer<typeof serviceDoc>;
export type RouteDoc = z.infer<typeof routeDoc>;
export type PluginDoc = z.infer<typeof pluginDoc>;
export type PolicyDoc = z.infer<typeof policyDoc>;
export type ConsumerDoc = z.infer<typeof consumerDoc>;
export type RoleDoc = z.infer<typeof roleDoc>;
export type TriggerDoc = z.infer<typeof triggerDoc>;
export type ConfigDocument = z.infer<typeof configDocument>;
export type Collection = Exclude<keyof ConfigDocument, '_format_version' | 'workspace'>;
export const COLLECTIONS: Collection[] = ['roles', 'services', 'consumers', 'routes', 'triggers', 'policies', 'plugins'];

/** An entity's identity inside its workspace: the natural key declarative sync matches on. */
export function keyOf(collection: Collection, e: Record<string, unknown>): string {
  if (collection === 'consumers') return String(e.username);
  if (collection === 'plugins') return [e.name, e.service ? `service=${e.service}` : '', e.route ? `route=${e.route}` : '', e.consumer ? `consumer=${e.consumer}` : ''].filter(Boolean).join(' ');
  return String(e.name);
}
