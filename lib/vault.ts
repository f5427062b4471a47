import vaultFactory from 'node-vault';

export type VaultClient = ReturnType<typeof vaultFactory>;

/** Vault paths (DESIGN.md, "Contracts"), relative to the KV v2 mount `secret/`. */
export const vaultPaths = {
  thirdPartyApiKey: (service: string) => `secret/data/3rdparty/${service}/api_key`,
  oauthClientSecret: (provider: string) => `secret/data/oauth/${provider}/client_secret`,
  cert: (service: string) => `secret/data/certs/${service}`,
  dbCredentials: (environment: string, role: string) => `secret/data/db/${environment}/${role}`,
  /** A workspace's credentials its routes send upstream by reference (gateway/secret-refs.ts). */
  upstreamSecret: (workspace: string, name: string) => `secret/data/upstreams/${workspace}/${name}`,
} as const;

/**
 * A failed Vault call, with nothing of the request in it: node-vault passes axios's errors on
 * as they are (a refused connection, a timeout), and those carry the request's headers, the
 * Vault token among them, into whatever logs or serializes the error. Vault's own refusals keep
 * their status (`response.statusCode`) and message.
 */
export class VaultRequestError extends Error {
  constructor(message: string, readonly code?: string, readonly response?: { statusCode: number }) {
    super(message);
    this.name = 'VaultRequestError';
  }
}

const cleanError = (err: unknown): VaultRequestError => {
  const e = (err ?? {}) as { message?: unknown; code?: unknown; response?: { statusCode?: unknown } };
  const status = e.response?.statusCode;
  return new VaultRequestError(typeof e.message === 'string' ? e.message : 'vault request failed', typeof e.code === 'string' ? e.code : undefined,
    typeof status === 'number' ? { statusCode: status } : undefined);
};

/** A node-vault client whose calls reject with VaultRequestError only. */
export function createVault(endpoint: string, token: string | undefined): VaultClient {
  const client = vaultFactory({ apiVersion: 'v1', endpoint, token, requestOptions: { timeout: 5000 } });
  // Every node-vault call (read, write, mounts…) goes through client.request.
  const request = client.request.bind(client);
  client.request = (options) => request(options).catch((err: unknown) => { throw cleanError(err); });
  return client;
}

/** Mounts KV v2 at `secret/` unless it is there already (dev mode mounts it itself). */
export async function ensureKvMount(vault: VaultClient): Promise<void> {
  const mounts = (await vault.mounts()) as Record<string, { type: string; options?: { version?: string } }>;
  const current = mounts['secret/'] ?? (mounts as { data?: Record<string, { type: string }> }).data?.['secret/'];
  if (!current) await vault.mount({ mount_point: 'secret', type: 'kv', options: { version: '2' } });
}
