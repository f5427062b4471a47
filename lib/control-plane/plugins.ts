import { isIP } from 'node:net';
import { z } from 'zod';

/**
 * The plugins a route, a service, a consumer or a whole workspace can carry, each with the
 * schema its `config` must satisfy (defaults filled in). The Admin API refuses a config that
 * does not fit, naming `body.config.<field>`.
 */

/** An IP address, or a CIDR block whose prefix is at least `minPrefix`. */
export function isAddressOrCidr(v: string, minPrefix = 0): boolean {
  const [ip, bits, extra] = v.split('/');
  const family = isIP(ip ?? '');
  if (!family || extra !== undefined) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n >= minPrefix && n <= (family === 4 ? 32 : 128);
}
const cidr = z.string().refine((v) => isAddressOrCidr(v), 'an IP address or CIDR block');
export const headerName = z.string().regex(/^[A-Za-z0-9-]{1,128}$/, 'an HTTP header name');
/**
 * What Node accepts as a header value (tab, printable ASCII, Latin-1): anything else, CR and LF
 * above all, would make every answer on the route a 500 when the header is set.
 */
const headerValue = z.string().regex(/^[\t\x20-\x7e\x80-\xff]*$/, 'an HTTP header value: no CR, LF, NUL or other control characters (tab is fine), nothing beyond Latin-1');

const SECRET_REF = /^\{vault:([a-z0-9][a-z0-9._-]{0,99})#([A-Za-z0-9_.-]{1,100})\}$/;

/** The secret and field a header value refers to (`{vault:NAME#FIELD}`, the whole value; gateway/secret-refs.ts), or undefined. */
export function secretRef(value: string): { name: string; field: string } | undefined {
  if (!value.startsWith('{vault:')) return undefined;
  const m = SECRET_REF.exec(value);
  return m ? { name: m[1]!, field: m[2]! } : undefined;
}

/** A value the gateway adds to a request going upstream: an ordinary value, or a whole reference to a workspace secret. */
export const requestHeaderValue = headerValue.refine((v) => !v.startsWith('{vault:') || secretRef(v) !== undefined,
  'a reference is the whole value, {vault:NAME#FIELD}: NAME of lower-case letters, digits, . _ - and FIELD of letters, digits, . _ -');
/** A value the gateway adds to an answer: never a reference, which would hand the secret to the client. */
export const responseHeaderValue = headerValue.refine((v) => !v.startsWith('{vault:'), 'a {vault:…} reference is for request headers only: it would hand the secret to the client');

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
      add_headers: z.record(headerName, requestHeaderValue).default({}),
      remove_headers: z.array(headerName).default([]),
      add_querystring: z.record(z.string().min(1), z.string()).default({}),
    })
    .strict(),
  'response-transformer': z
    .object({ add_headers: z.record(headerName, responseHeaderValue).default({}), remove_headers: z.array(headerName).default([]) })
    .strict(),
  'correlation-id': z.object({ header_name: headerName.default('X-Request-ID'), echo_downstream: z.boolean().default(true) }).strict(),
  /**
   * Bearer JWTs besides API keys. RS256/ES256 keys come from a JWKS (inline public keys or a URL,
   * chosen by `kid`); HS256 secrets are read from Vault at secret/data/jwt/{workspace}/{kid}, so
   * no shared secret is ever part of a config version.
   */
  jwt: z
    .object({
      algorithms: z.array(z.enum(['HS256', 'RS256', 'ES256'])).min(1).default(['RS256', 'ES256']),
      issuers: z.array(z.string().min(1)).max(20).default([]),
      audiences: z.array(z.string().min(1)).max(20).default([]),
      jwks_url: z.url({ protocol: /^https?$/ }).optional(),
      // Public keys only: a symmetric (`oct`) or private key here would be readable in every config version.
      jwks: z.object({
        keys: z.array(z.record(z.string(), z.unknown()).refine((k) => (k.kty === 'RSA' || k.kty === 'EC') && k.d === undefined, 'a public RSA or EC key (no "d", no "oct")')).min(1).max(50),
      }).optional(),
      hs256_kids: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, . _ -')).max(20).default([]),
      tenant_claim: z.string().min(1).default('tenant'),
      consumer_claim: z.string().min(1).default('sub'),
      roles_claim: z.string().min(1).default('roles'),
      clock_skew_seconds: z.number().int().min(0).max(300).default(30),
      max_lifetime_seconds: z.number().int().min(1).max(86_400 * 30).optional(),
    })
    .strict()
    .refine((c) => !c.algorithms.some((a) => a !== 'HS256') || c.jwks_url !== undefined || c.jwks !== undefined, { message: 'RS256/ES256 need jwks or jwks_url', path: ['jwks'] })
    .refine((c) => !c.algorithms.includes('HS256') || c.hs256_kids.length > 0, { message: 'HS256 needs hs256_kids (secrets in Vault)', path: ['hs256_kids'] }),
  /**
   * RBAC and ABAC on the data plane: the first rule that matches decides; none matching means
   * `default`. Roles are the consumer's (or the JWT's roles claim); the built-in ones nest
   * (admin ⊃ operator ⊃ developer ⊃ viewer), custom ones match by name.
   */
  authorization: z
    .object({
      rules: z.array(z.object({
        effect: z.enum(['allow', 'deny']),
        roles: z.array(z.string().min(1)).max(50).optional(),
        methods: z.array(z.enum(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'])).optional(),
        paths: z.array(z.string().regex(/^\/\S*$/, 'a path prefix such as /orders')).max(50).optional(),
        claims: z.record(z.string().min(1), z.array(z.string()).min(1)).optional(),
        source_cidrs: z.array(cidr).max(100).optional(),
        hours_utc: z.object({ from: z.number().int().min(0).max(23), to: z.number().int().min(1).max(24) }).strict().optional(),
        weekdays_utc: z.array(z.number().int().min(1).max(7)).min(1).max(7).optional(),
      }).strict()).min(1).max(100),
      default: z.enum(['allow', 'deny']).default('deny'),
    })
    .strict(),
  /** Overrides of the security headers every answer carries (HSTS only over TLS). */
  'security-headers': z
    .object({
      hsts_max_age_seconds: z.number().int().min(0).max(2 * 31_536_000).optional(),
      hsts_include_subdomains: z.boolean().optional(),
      content_security_policy: headerValue.min(1).max(4096).optional(),
      frame_options: z.enum(['DENY', 'SAMEORIGIN']).optional(),
      referrer_policy: headerValue.min(1).max(200).optional(),
    })
    .strict(),
  /** Cache-Control (and Vary) on cacheable answers that do not set their own. */
  'cache-headers': z
    // private by default: every answer through the gateway is to a credential. A `public` directive
    // is the operator's choice; the answer then varies on the credential's headers (security-headers.ts).
    .object({ directive: headerValue.min(1).max(500).default('private, max-age=60'), vary: z.array(headerName).max(20).default([]) })
    .strict(),
} as const;

export type PluginName = keyof typeof pluginConfigSchemas;
export const PLUGIN_NAMES = Object.keys(pluginConfigSchemas) as [PluginName, ...PluginName[]];
