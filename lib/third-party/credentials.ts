import type { VaultClient } from '../vault';

/** The KV v2 secret of a third party's API key (DESIGN.md "Vault paths"), mount `secret/`. */
export const thirdPartySecretPath = (service: string) => `3rdparty/${service}/api_key`;

/**
 * The labels a secret's versions carry, kept in the secret's custom metadata: `current` is the
 * version clients use; `pending` and `previous` exist during and after a rotation.
 */
export type SecretLabels = { current?: string; pending?: string; previous?: string };

export class CredentialUnavailable extends Error {
  constructor(readonly service: string, reason: string) {
    super(`no credential for ${service}: ${reason}`);
    this.name = 'CredentialUnavailable';
  }
}

/** The data of a KV v2 secret's version labelled `current` (the newest version when unlabelled). */
export async function readCurrentSecretData<T = Record<string, unknown>>(vault: VaultClient, path: string): Promise<{ data: T; version: number }> {
  let version: string | undefined;
  try {
    const meta = (await vault.read(`secret/metadata/${path}`)) as { data?: { custom_metadata?: SecretLabels | null } };
    version = meta.data?.custom_metadata?.current;
  } catch (err) {
    if ((err as { response?: { statusCode?: number } }).response?.statusCode !== 404) throw err;
  }
  const res = (await vault.read(`secret/data/${path}${version ? `?version=${encodeURIComponent(version)}` : ''}`)) as {
    data?: { data?: T | null; metadata?: { version?: number } };
  };
  if (!res.data?.data) throw new Error('the secret has no data');
  return { data: res.data.data, version: res.data.metadata?.version ?? 0 };
}

/** The `value` field of a secret's current version (an API key). */
export async function readCurrentSecret(vault: VaultClient, path: string): Promise<{ value: string; version: number }> {
  const { data, version } = await readCurrentSecretData<{ value?: unknown }>(vault, path);
  if (typeof data.value !== 'string' || !data.value) throw new Error('the secret has no string field "value"');
  return { value: data.value, version };
}

/**
 * Third-party API keys from OpenBao/Vault, cached per service (seed 000: 5 minutes). A caller
 * that gets a `401` calls `refresh` once: the key may have been rotated since it was cached.
 */
export class CredentialCache {
  private readonly cache = new Map<string, { value: string; version: number; until: number }>();
  private readonly inflight = new Map<string, Promise<{ value: string; version: number }>>();

  constructor(private readonly vault: VaultClient, private readonly ttlMs = 5 * 60_000, private readonly now = Date.now) {}

  async get(service: string): Promise<{ value: string; version: number }> {
    const hit = this.cache.get(service);
    if (hit && hit.until > this.now()) return hit;
    return this.load(service);
  }

  /** Drops the cached key and reads it again. */
  async refresh(service: string): Promise<{ value: string; version: number }> {
    this.cache.delete(service);
    return this.load(service);
  }

  private load(service: string): Promise<{ value: string; version: number }> {
    let p = this.inflight.get(service);
    if (!p) {
      p = readCurrentSecret(this.vault, thirdPartySecretPath(service))
        .then((c) => {
          this.cache.set(service, { ...c, until: this.now() + this.ttlMs });
          return c;
        })
        .catch((err: unknown) => {
          // Never the secret: Vault's error text names the path and status only.
          const status = (err as { response?: { statusCode?: number } }).response?.statusCode;
          throw new CredentialUnavailable(service, status ? `vault answered ${status}` : (err as Error).message);
        })
        .finally(() => this.inflight.delete(service));
      this.inflight.set(service, p);
    }
    return p;
  }
}
