import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * The plugins a route, a service, a consumer or a whole workspace can carry, each with the
 * schema its `config` must satisfy (defaults filled in). The Admin API refuses a config that
 * does not fit, naming `body.config.<field>`.
 */

const cidr = z.string().refine((v) => {
  const [ip, bits, extra] = v.split('/');
  const family = isIP(ip ?? '');
  if (!family || extra !== undefined) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return Number.isInteger(n) && n >= 0 && n <= (family === 4 ? 32 : 128);
}, 'an IP address or CIDR block');
const headerName = z.string().regex(/^[A-Za-z0-9-]{1,128}$/, 'an HTTP header name');

export const pluginConfigSchemas = {
  cors: z
    .object({
      origins: z.array(z.string().min(1)).min(1).default(['*']),
      methods: z.array(z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])).default(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']),
      headers: z.array(headerName).default([]),
      exposed_headers: z.array(headerName).default([]),
      credentials: z.boolean().default(false),
      max_age_seconds: z.number().int().min(0).max(86_400).default(600),
    })
    .strict(),
  'ip-restriction': z
    .object({ allow: z.array(cidr).default([]), deny: z.array(cidr).default([]) })
    .strict()
    .refine((c) => c.allow.length + c.deny.length > 0, { message: 'allow or deny must list at least one address', path: ['allow'] }),
  'request-size-limiting': z.object({ allowed_payload_size_bytes: z.number().int().min(1).max(100 * 1024 * 1024) }).strict(),
  'request-transformer': z
    .object({
      add_headers: z.record(headerName, z.string()).default({}),
      remove_headers: z.array(headerName).default([]),
      add_querystring: z.record(z.string().min(1), z.string()).default({}),
    })
    .strict(),
  'response-transformer': z
    .object({ add_headers: z.record(headerName, z.string()).default({}), remove_headers: z.array(headerName).default([]) })
    .strict(),
  'correlation-id': z.object({ header_name: headerName.default('X-Request-ID'), echo_downstream: z.boolean().default(true) }).strict(),
} as const;

export type PluginName = keyof typeof pluginConfigSchemas;
export const PLUGIN_NAMES = Object.keys(pluginConfigSchemas) as [PluginName, ...PluginName[]];
