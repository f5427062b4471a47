import type { FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import type { Histogram } from 'prom-client';
import { credentialOf, hashCredential } from '../lib/credentials';
import { ApiError } from '../lib/errors';
import { asPlatform } from '../lib/postgres';
import type { ConfigStore } from './config-store';
import { looksLikeJwt, unverifiedClaims, type JwtVerifier } from './jwt';
import { requestTenantClaims, resolveTenant, type TenantClaim } from './tenant';
import { LocalLimiter, type LimitPolicy } from './rate-limit';

export type Principal = {
  tenant: string;
  /** The consumer's id; for a JWT whose subject is not a consumer of the workspace, `jwt:<sub>`. */
  consumerId: string;
  username: string;
  roles: string[];
  /** Safe to log: the key's id, the JWT's kid or the certificate's fingerprint prefix. */
  keyId: string;
  method: 'api_key' | 'jwt' | 'mtls';
  claims?: Record<string, unknown>;
};

/**
 * Keys found in PostgreSQL but not (yet) in the config the gateway serves are remembered this
 * briefly: the config (which lists every live key) catches up within a second, and a revoked
 * key must stop working as soon as the config says so.
 */
export const AUTH_CACHE_MS = 10_000;

const unauthenticated = () => new ApiError(401, 'unauthenticated', 'missing credential: send Authorization: Bearer <api key or JWT>', undefined, { 'WWW-Authenticate': 'Bearer' });
const invalidKey = () => new ApiError(401, 'invalid_credential', 'the API key is not valid', undefined, { 'WWW-Authenticate': 'Bearer' });

/**
 * Stages 2 and 4 of the request pipeline: which tenant the request is for, and who sends it.
 * Credentials: API keys (looked up in the served config by their public prefix and compared
 * by hash in constant time; works while PostgreSQL is down), JWTs (the workspace's `jwt`
 * plugin) and client certificates (the TLS listener, when it asks for them). Every source of
 * a tenant that the request carries must name the same one.
 */
export class Authenticator {
  /**
   * Keys looked up in PostgreSQL. A found key's entry holds only while the config the gateway
   * serves for its workspace is no newer than the version the lookup saw (`version`).
   */
  private cache = new Map<string, { principal: Principal | null; until: number; version?: number }>();
  /** Lookups of keys the served config does not know: a token bucket of `unknownKeyLookupsPerS`. */
  private readonly lookups = new LocalLimiter({ maxKeys: 1 });
  private readonly lookupPolicy: LimitPolicy;

  constructor(private readonly opts: {
    store: ConfigStore; pool?: Pool; jwt: JwtVerifier; tenantHostSuffix?: string; latency?: Histogram; maxEntries?: number;
    /**
     * PostgreSQL lookups per second for keys the served config does not know (a key issued since
     * the last pull): a client sending random keys would otherwise cost a query each, before any
     * rate limit, and could use up the pool. Past it such a key is refused as unknown. Default 200.
     */
    unknownKeyLookupsPerS?: number;
  }) {
    this.lookupPolicy = { name: 'unknown-key lookups', algorithm: 'token-bucket', limit: opts.unknownKeyLookupsPerS ?? 200, windowSeconds: 1 };
  }

  /**
   * Once per request: the pipeline's hook keeps the answer on the request, and route handlers
   * get it from there. Synchronous (no promise) for a key the served config knows and for a
   * client certificate; a JWT or a key looked up in PostgreSQL answers with a promise.
   */
  authenticate(req: FastifyRequest): Principal | Promise<Principal> {
    return req.flowgate?.principal ?? this.run(req);
  }

  private run(req: FastifyRequest): Principal | Promise<Principal> {
    const { claims, cert } = requestTenantClaims(req.headers, req.raw.socket, this.opts.tenantHostSuffix);

    const credential = credentialOf(req);
    const started = process.hrtime.bigint();
    const method = !credential ? 'mtls' : looksLikeJwt(credential) ? 'jwt' : 'api_key';
    const observe = () => this.opts.latency?.observe({ method }, Number(process.hrtime.bigint() - started) / 1e9);
    let out: Principal | Promise<Principal>;
    try {
      if (!credential) {
        if (!cert) throw unauthenticated();
        out = this.certificatePrincipal(resolveTenant(claims), cert);
      } else if (method === 'jwt') {
        out = this.jwtPrincipal(credential, claims);
      } else {
        const agreed = (principal: Principal) => {
          resolveTenant([...claims, { source: 'credential', tenant: principal.tenant }]);
          return principal;
        };
        const found = this.keyPrincipal(credential);
        out = found instanceof Promise ? found.then(agreed) : agreed(found);
      }
    } catch (err) {
      observe();
      throw err;
    }
    if (out instanceof Promise) return out.finally(observe);
    observe();
    return out;
  }

  private keyPrincipal(credential: string): Principal | Promise<Principal> {
    const owner = this.opts.store.keyOwner(credential);
    if (owner) return { tenant: owner.tenant, consumerId: owner.consumerId, username: owner.username, roles: owner.roles, keyId: owner.keyId, method: 'api_key' };
    return this.keyFromDatabase(credential);
  }

  /** A key the served config does not (yet) know, looked up in PostgreSQL and remembered briefly. */
  private async keyFromDatabase(credential: string): Promise<Principal> {
    const pool = this.opts.pool;
    if (!pool) throw invalidKey();
    const hash = hashCredential(credential);
    const cacheKey = hash.toString('base64');
    const hit = this.cache.get(cacheKey);
    // A config of the key's workspace newer than what the lookup saw, which does not list the key
    // (keyOwner missed), says it was revoked: asked again, not taken from the entry.
    const current = hit && hit.until > Date.now() && (!hit.principal || (this.opts.store.versionOf(hit.principal.tenant) ?? 0) <= hit.version!);
    let principal = current ? hit.principal : undefined;
    if (principal === undefined) {
      if (!this.lookups.check('unknown-keys', this.lookupPolicy).allowed) throw invalidKey();
      // The workspace's config version in the same snapshot: a revocation makes a new version.
      const row = await asPlatform(pool, async (db) => (await db.query<{ id: string; workspace_id: string; consumer_id: string; username: string; roles: string[]; config_version: number }>(
        `SELECT k.id, k.workspace_id, k.consumer_id, c.username, c.roles, w.config_version::int AS config_version FROM api_keys k
           JOIN consumers c ON c.id = k.consumer_id JOIN workspaces w ON w.id = k.workspace_id
          WHERE k.key_hash = $1 AND k.revoked_at IS NULL`,
        [hash],
      )).rows[0]).catch(() => {
        // PostgreSQL down: the served config is the authority, and it does not know this key.
        throw invalidKey();
      });
      principal = row ? { tenant: row.workspace_id, consumerId: row.consumer_id, username: row.username, roles: row.roles, keyId: row.id, method: 'api_key' } : null;
      if (this.cache.size >= (this.opts.maxEntries ?? 10_000)) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(cacheKey, { principal, until: Date.now() + AUTH_CACHE_MS, version: row?.config_version });
    }
    if (!principal) throw invalidKey();
    return principal;
  }

  /**
   * The tenant whose keys check the token comes from the request's other sources, or else
   * from the token's own (unverified) `tenant` claim; after verification, the workspace's
   * tenant claim must agree with it.
   */
  private async jwtPrincipal(token: string, claims: TenantClaim[]): Promise<Principal> {
    const unverified = unverifiedClaims(token);
    if (!unverified) throw new ApiError(401, 'invalid_token', 'the bearer token is not a well-formed JWT', [{ field: 'headers.authorization', message: 'malformed' }]);
    const guess = typeof unverified.tenant === 'string' ? [{ source: 'token' as const, tenant: unverified.tenant }] : [];
    // Sources that disagree are refused before any key is looked up.
    const tenant = claims.length || guess.length ? resolveTenant([...claims, ...guess]) : undefined;
    if (!tenant) throw new ApiError(401, 'tenant_unknown', 'the token names no tenant: send X-Tenant-ID', [{ field: 'headers.x-tenant-id', message: 'required with this token' }]);
    const view = this.opts.store.view(tenant);
    const settings = view?.jwt;
    // One answer whether the workspace is unknown or takes no JWTs: the difference is not the caller's business.
    if (!view || !settings) throw new ApiError(401, 'invalid_token', 'JWTs are not accepted for this tenant', [{ field: 'headers.authorization', message: 'no jwt plugin' }]);
    const verified = await this.opts.jwt.verify(tenant, token, settings);
    const tokenTenant = verified.claims[settings.tenant_claim];
    if (tokenTenant !== undefined) resolveTenant([{ source: 'token', tenant: String(tokenTenant) }, ...(claims.length ? claims : guess)]);
    const subject = String(verified.claims[settings.consumer_claim] ?? '');
    if (!subject) throw new ApiError(401, 'invalid_token', `the token has no ${settings.consumer_claim} claim`, [{ field: 'headers.authorization', message: `claim_${settings.consumer_claim}` }]);
    const consumer = view.consumers.get(subject);
    const tokenRoles = verified.claims[settings.roles_claim];
    const roles = [...new Set([...(consumer?.roles ?? []), ...(Array.isArray(tokenRoles) ? tokenRoles.map(String) : typeof tokenRoles === 'string' ? tokenRoles.split(/[ ,]+/) : [])])];
    return {
      tenant, consumerId: consumer?.id ?? `jwt:${subject}`, username: subject, roles, keyId: verified.kid ?? verified.alg, method: 'jwt', claims: verified.claims,
    };
  }

  private certificatePrincipal(tenant: string, cert: { tenant: string; consumer: string; fingerprint: string }): Principal {
    const consumer = this.opts.store.view(tenant)?.consumers.get(cert.consumer);
    if (!consumer) throw new ApiError(401, 'invalid_credential', 'the client certificate names no consumer of this tenant');
    return { tenant, consumerId: consumer.id, username: cert.consumer, roles: consumer.roles, keyId: cert.fingerprint, method: 'mtls' };
  }
}
