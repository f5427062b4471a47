import type { FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { credentialOf, hashCredential } from '../lib/credentials';
import { ApiError } from '../lib/errors';
import { asPlatform } from '../lib/postgres';
import type { ConfigStore } from './config-store';

export type Principal = { tenant: string; consumerId: string; keyId: string };

/**
 * Keys found in PostgreSQL but not (yet) in the config the gateway serves are remembered this
 * briefly: the config (which lists every live key) catches up within a second, and a revoked
 * key must stop working as soon as the config says so.
 */
export const AUTH_CACHE_MS = 10_000;

/**
 * API-key authentication: the key's SHA-256 is looked up in the config the gateway serves (no
 * query per request, and it works while PostgreSQL is down); a key created a moment ago and
 * not in that config yet is looked up in PostgreSQL, with a bounded short cache.
 */
export class ApiKeyAuthenticator {
  private cache = new Map<string, { principal: Principal | null; until: number }>();

  constructor(private readonly store: ConfigStore, private readonly pool: Pool | undefined, private readonly maxEntries = 10_000) {}

  async authenticate(req: FastifyRequest): Promise<Principal> {
    const credential = credentialOf(req);
    if (!credential) throw new ApiError(401, 'unauthenticated', 'missing credential: send Authorization: Bearer <api key>', undefined, { 'WWW-Authenticate': 'Bearer' });
    const principal = await this.lookup(credential);
    if (!principal) throw new ApiError(401, 'invalid_credential', 'the API key is not valid', undefined, { 'WWW-Authenticate': 'Bearer' });
    const claimed = req.headers['x-tenant-id'];
    if (claimed !== undefined && claimed !== principal.tenant) {
      throw new ApiError(403, 'tenant_mismatch', 'X-Tenant-ID does not match the credential', [{ field: 'headers.x-tenant-id', message: 'must match the tenant of the credential' }]);
    }
    return principal;
  }

  private async lookup(credential: string): Promise<Principal | null> {
    const hash = hashCredential(credential);
    const owner = this.store.keyOwner(hash);
    if (owner) return { tenant: owner.tenant, consumerId: owner.consumerId, keyId: hash.subarray(0, 8).toString('hex') };
    if (!this.pool) return null;
    const cacheKey = hash.toString('base64');
    const hit = this.cache.get(cacheKey);
    if (hit && hit.until > Date.now()) return hit.principal;
    const pool = this.pool;
    const row = await asPlatform(pool, async (db) => (await db.query<{ id: string; workspace_id: string; consumer_id: string }>(
      'SELECT id, workspace_id, consumer_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL',
      [hash],
    )).rows[0]).catch(() => {
      // PostgreSQL down: the served config is the authority, and it does not know this key.
      throw new ApiError(401, 'invalid_credential', 'the API key is not valid', undefined, { 'WWW-Authenticate': 'Bearer' });
    });
    const principal = row ? { tenant: row.workspace_id, consumerId: row.consumer_id, keyId: row.id } : null;
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(cacheKey, { principal, until: Date.now() + AUTH_CACHE_MS });
    return principal;
  }
}
