import { createHash, createSecretKey, type KeyObject } from 'node:crypto';
import {
  createLocalJWKSet, createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors, jwtVerify,
  type JWTPayload, type JWTVerifyGetKey,
} from 'jose';
import { ApiError } from '../lib/errors';
import type { UpstreamPolicy } from '../lib/upstream-policy';
import { policyAgent, UpstreamNotAllowedError } from './upstream-connect';
import type { pluginConfigSchemas } from '../lib/control-plane/plugins';
import type { z } from 'zod';

/**
 * Bearer JWT verification for the data plane (the workspace's `jwt` plugin).
 *
 * - The token's `alg` picks the key source, and the key source fixes the algorithm: HS256 only
 *   with a Vault secret named by `kid`, RS256/ES256 only with a JWKS key. So a token signed
 *   with an RSA public key used as an HMAC secret (algorithm confusion) finds no key, and
 *   `alg: none` is refused by name before anything else.
 * - `exp` is required; `nbf`, `iss` and `aud` are checked when configured, with the skew.
 * - A verified token is remembered for at most 2 minutes (the seed's auth cache), never past its
 *   `exp` nor past the age `max_lifetime_seconds` allows; a refused one is not cached, so a
 *   clock or key fix applies at once.
 * - A `jwks_url` is fetched only where the upstream policy allows (lib/upstream-policy.ts).
 */

export type JwtSettings = z.infer<(typeof pluginConfigSchemas)['jwt']>;
export type VerifiedJwt = { claims: JWTPayload; alg: string; kid?: string };

/** Reads an HS256 secret (Vault, secret/data/jwt/{workspace}/{kid}); undefined when there is none. */
export type HsSecretSource = (workspace: string, kid: string) => Promise<string | undefined>;

const CACHE_MS = 120_000;
/** How long a remote JWKS is trusted before it is fetched again: the same 2 minutes. */
export const JWKS_MAX_AGE_MS = CACHE_MS;
const ASYMMETRIC = new Set(['RS256', 'ES256']);

export function looksLikeJwt(credential: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(credential);
}

/** The claims without checking anything: only to find the tenant whose keys will check them. */
export function unverifiedClaims(token: string): JWTPayload | undefined {
  try {
    return decodeJwt(token);
  } catch {
    return undefined;
  }
}

const refuse = (reason: string, message: string) =>
  new ApiError(401, 'invalid_token', message, [{ field: 'headers.authorization', message: reason }], { 'WWW-Authenticate': `Bearer error="invalid_token"` });

export class JwtVerifier {
  private cache = new Map<string, { result: VerifiedJwt; until: number; settings: JwtSettings }>();
  private remoteSets = new Map<string, JWTVerifyGetKey>();
  private localSets = new WeakMap<object, JWTVerifyGetKey>();
  private hsSecrets = new Map<string, { key: KeyObject | undefined; until: number }>();

  /**
   * `policy`: where a workspace's `jwks_url` may point (lib/upstream-policy.ts), as its services:
   * a tenant's URL must not make the gateway fetch from the platform's own ports or a metadata
   * endpoint.
   */
  constructor(private readonly hsSecret: HsSecretSource, private readonly maxEntries = 10_000, private readonly policy?: UpstreamPolicy) {}

  async verify(workspace: string, token: string, settings: JwtSettings): Promise<VerifiedJwt> {
    const cacheKey = createHash('sha256').update(workspace).update('\0').update(token).digest('base64');
    const hit = this.cache.get(cacheKey);
    // The settings object is replaced whenever the workspace's config changes: a cached result
    // is only good for the config it was checked against.
    if (hit && hit.until > Date.now() && hit.settings === settings) return hit.result;

    let header: { alg?: unknown; kid?: unknown };
    try {
      header = decodeProtectedHeader(token);
    } catch {
      throw refuse('malformed', 'the bearer token is not a well-formed JWT');
    }
    // The header is the sender's JSON: `alg: 1` or `kid: {}` is malformed, not a crash.
    if ((header.alg !== undefined && typeof header.alg !== 'string') || (header.kid !== undefined && typeof header.kid !== 'string')) {
      throw refuse('malformed', 'the token header\'s alg and kid must be strings');
    }
    const alg = header.alg ?? '';
    if (alg.toLowerCase() === 'none') throw refuse('alg_none', 'unsigned tokens (alg: none) are refused');
    if (!(settings.algorithms as string[]).includes(alg)) throw refuse('alg_not_allowed', `alg ${alg || '(missing)'} is not allowed here`);

    let key: JWTVerifyGetKey | KeyObject;
    if (alg === 'HS256') {
      if (!header.kid || !settings.hs256_kids.includes(header.kid)) throw refuse('unknown_kid', 'the token names no known key (kid)');
      const secret = await this.hsKey(workspace, header.kid);
      if (!secret) throw refuse('unknown_kid', 'the token names no known key (kid)');
      key = secret;
    } else {
      key = this.keySet(settings);
    }
    let verified;
    try {
      verified = await jwtVerify(token, key as JWTVerifyGetKey, {
        algorithms: alg === 'HS256' ? ['HS256'] : settings.algorithms.filter((a) => ASYMMETRIC.has(a)),
        issuer: settings.issuers.length ? settings.issuers : undefined,
        audience: settings.audiences.length ? settings.audiences : undefined,
        clockTolerance: settings.clock_skew_seconds,
        maxTokenAge: settings.max_lifetime_seconds,
        requiredClaims: ['exp'],
      });
    } catch (err) {
      throw this.reason(err);
    }
    const result: VerifiedJwt = { claims: verified.payload, alg, kid: header.kid };
    const exp = (verified.payload.exp ?? 0) * 1000;
    // Never kept past what verification would refuse: `exp`, and with max_lifetime_seconds the
    // token's age limit (jose checks it only when it verifies).
    const iat = verified.payload.iat;
    const aged = settings.max_lifetime_seconds !== undefined && typeof iat === 'number'
      ? (iat + settings.max_lifetime_seconds + settings.clock_skew_seconds) * 1000 : Infinity;
    if (this.cache.size >= this.maxEntries) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(cacheKey, { result, until: Math.min(Date.now() + CACHE_MS, exp, aged), settings });
    return result;
  }

  private keySet(settings: JwtSettings): JWTVerifyGetKey {
    if (settings.jwks) {
      let set = this.localSets.get(settings.jwks);
      if (!set) {
        set = createLocalJWKSet(settings.jwks as unknown as Parameters<typeof createLocalJWKSet>[0]);
        this.localSets.set(settings.jwks, set);
      }
      return set;
    }
    const url = settings.jwks_url!;
    let set = this.remoteSets.get(url);
    if (!set) {
      // Refetched at most every 30 s when an unknown kid shows up (key rotation), and at least
      // every 2 minutes: a key the IdP withdrew verifies no new token after that, and a token it
      // verified stays in the 2-minute auth cache, so it is refused within 4 minutes at most.
      const u = new URL(url);
      const via = this.policy ? policyAgent(this.policy, u) : undefined;
      set = via && 'refused' in via
        ? async () => { throw new UpstreamNotAllowedError(`${url}: ${via.refused}`); }
        : createRemoteJWKSet(u, { cooldownDuration: 30_000, cacheMaxAge: JWKS_MAX_AGE_MS, timeoutDuration: 3000, agent: via?.agent });
      this.remoteSets.set(url, set);
    }
    return set;
  }

  private async hsKey(workspace: string, kid: string): Promise<KeyObject | undefined> {
    const id = `${workspace}/${kid}`;
    const hit = this.hsSecrets.get(id);
    if (hit && hit.until > Date.now()) return hit.key;
    let secret: string | undefined;
    try {
      secret = await this.hsSecret(workspace, kid);
    } catch {
      // Vault away is not "no such secret": a key known before is kept, and either way Vault is
      // asked again in seconds, not after the 5 minutes an answer is kept.
      this.hsSecrets.set(id, { key: hit?.key, until: Date.now() + 5000 });
      return hit?.key;
    }
    // HS256 needs at least 256 bits of secret (RFC 7518 §3.2); a shorter one is treated as absent.
    const key = secret && Buffer.byteLength(secret) >= 32 ? createSecretKey(Buffer.from(secret)) : undefined;
    this.hsSecrets.set(id, { key, until: Date.now() + 300_000 });
    return key;
  }

  private reason(err: unknown): ApiError {
    if (err instanceof errors.JWTExpired) return refuse('expired', 'the token has expired');
    if (err instanceof errors.JWTClaimValidationFailed) {
      const what = err.claim === 'nbf' ? 'not_yet_valid' : `claim_${err.claim}`;
      return refuse(what, err.claim === 'nbf' ? 'the token is not valid yet' : `the token's ${err.claim} claim is not accepted`);
    }
    if (err instanceof errors.JWKSNoMatchingKey) return refuse('unknown_kid', 'the token names no known key (kid)');
    if (err instanceof errors.JWSSignatureVerificationFailed) return refuse('bad_signature', 'the token signature does not verify');
    if (err instanceof errors.JOSEAlgNotAllowed) return refuse('alg_not_allowed', 'the token algorithm is not allowed here');
    if (err instanceof errors.JWKSTimeout || err instanceof errors.JOSEError) return refuse('unverifiable', 'the token could not be verified');
    return refuse('unverifiable', 'the token could not be verified');
  }
}
