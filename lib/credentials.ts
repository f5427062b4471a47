import { createHash, randomBytes } from 'node:crypto';

/** A new secret credential: `fg_<8 hex prefix>_<random>`; only its hash is stored. */
export function newCredential(kind: 'key' | 'admin'): { value: string; prefix: string; hash: Buffer } {
  const prefix = randomBytes(4).toString('hex');
  const value = `${kind === 'key' ? 'fgk' : 'fga'}_${prefix}_${randomBytes(24).toString('base64url')}`;
  return { value, prefix, hash: hashCredential(value) };
}

export function hashCredential(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}
