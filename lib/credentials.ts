import { hash, randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';

/** A new secret credential: `fg_<8 hex prefix>_<random>`; only its hash is stored. */
export function newCredential(kind: 'key' | 'admin'): { value: string; prefix: string; hash: Buffer } {
  const prefix = randomBytes(4).toString('hex');
  const value = `${kind === 'key' ? 'fgk' : 'fga'}_${prefix}_${randomBytes(24).toString('base64url')}`;
  return { value, prefix, hash: hashCredential(value) };
}

/** SHA-256, one-shot: half the cost of a Hash object per request (the gateway hashes each API key it checks). */
export function hashCredential(value: string): Buffer {
  return hash('sha256', value, 'buffer');
}

/** Takes the credential from `Authorization: Bearer …` or `X-API-Key`. */
export function credentialOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(auth);
    return m?.[1];
  }
  const key = req.headers['x-api-key'];
  return typeof key === 'string' && key.length > 0 ? key : undefined;
}
