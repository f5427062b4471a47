import vaultFactory from 'node-vault';

export type VaultClient = ReturnType<typeof vaultFactory>;

/** Vault paths (DESIGN.md, "Contracts"), relative to the KV v2 mount `secret/`. */
export const vaultPaths = {
  thirdPartyApiKey: (service: string) => `secret/data/3rdparty/${service}/api_key`,
  oauthClientSecret: (provider: string) => `secret/data/oauth/${provider}/client_secret`,
  cert: (service: string) => `secret/data/certs/${service}`,
  dbCredentials: (environment: string, role: string) => `secret/data/db/${environment}/${role}`,
} as const;

export function createVault(endpoint: string, token: string | undefined): VaultClient {
  return vaultFactory({ apiVersion: 'v1', endpoint, token, requestOptions: { timeout: 5000 } });
}

/** Mounts KV v2 at `secret/` unless it is there already (dev mode mounts it itself). */
export async function ensureKvMount(vault: VaultClient): Promise<void> {
  const mounts = (await vault.mounts()) as Record<string, { type: string; options?: { version?: string } }>;
  const current = mounts['secret/'] ?? (mounts as { data?: Record<string, { type: string }> }).data?.['secret/'];
  if (!current) await vault.mount({ mount_point: 'secret', type: 'kv', options: { version: '2' } });
}
