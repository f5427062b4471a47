import type { FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { credentialOf, hashCredential } from '../lib/credentials';
import { ApiError } from '../lib/errors';

export type Principal = { tenant: string; consumerId: string; keyId: string };

/** Validation results are cached this long (seed 000: auth cache 2 min). */
export const AUTH_CACHE_MS = 2 * 60_000;

/** API-key authentication against hashed keys in PostgreSQL, with a bounded 2-minute cache. */
export class ApiKeyAuthenticator {
  private cache = new Map<string, { principal: Principal | null; until: number }>();

  constructor(private readonly pool: Pool, private readonly maxEntries = 10_000) {}

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
    const cacheKey = hash.toString('base64');
    const hit = this.cache.get(cacheKey);
    if (hit && hit.until > Date.now()) return hit.principal;
    const res = await this.pool.query<{ id: string; workspace_id: string; consumer_id: string }>(
      'SELECT id, workspace_id, consumer_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL',
      [hash],
    );
    const row = res.rows[0];
    const principal = row ? { tenant: row.workspace_id, consumerId: row.consumer_id, keyId: row.id } : null;
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    // Unknown keys are remembered briefly only, so a key created a moment ago starts working soon.
    this.cache.set(cacheKey, { principal, until: Date.now() + (principal ? AUTH_CACHE_MS : 10_000) });
    return principal;
  }
}
