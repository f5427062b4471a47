import type { VaultClient } from './vault';
import { PAYMENTS_SERVICE } from './third-party/services';

/**
 * The secrets Flowgate rotates (KV v2 under `secret/`), with the labels of their versions kept in
 * each secret's custom metadata: `current` (what clients use), `pending` (a rotation in progress)
 * and `previous` (still valid during the grace period, then revoked on the target).
 */
export type SecretKind = 'api-key' | 'postgres-role';
export type SecretDef = { path: string; kind: SecretKind; rotateEveryDays: number; description: string; service?: string };

export const DB_APP_SECRET = 'db/local/flowgate_app';
export const DB_ROTATOR_SECRET = 'db/local/flowgate_rotator';
/** The login of the DR runbooks (failover, backup drill) and of the worker's database watchdog. */
export const DB_DR_SECRET = 'db/local/flowgate_dr';
/** The two login roles the application's credential alternates between (members of flowgate_app). */
export const DB_APP_USERS = ['flowgate_app_a', 'flowgate_app_b'] as const;

export const SECRETS: SecretDef[] = [
  { path: `3rdparty/${PAYMENTS_SERVICE}/api_key`, kind: 'api-key', service: PAYMENTS_SERVICE, rotateEveryDays: 30, description: "the payment provider's API key" },
  { path: DB_APP_SECRET, kind: 'postgres-role', rotateEveryDays: 90, description: "the processes' PostgreSQL login (alternating users)" },
];
export const findSecret = (path: string) => SECRETS.find((s) => s.path === path);

export type Labels = { current?: string; pending?: string; previous?: string };
export type SecretMeta = { labels: Labels; latest: number };

export async function readMeta(vault: VaultClient, path: string): Promise<SecretMeta> {
  const meta = (await vault.read(`secret/metadata/${path}`)) as { data: { current_version: number; custom_metadata?: Labels | null } };
  return { labels: meta.data.custom_metadata ?? {}, latest: meta.data.current_version };
}

export async function readVersion<T = Record<string, string>>(vault: VaultClient, path: string, version: string | number): Promise<T> {
  const res = (await vault.read(`secret/data/${path}?version=${encodeURIComponent(String(version))}`)) as { data: { data: T } };
  return res.data.data;
}

/** Writes a new version only if the latest is still `cas` (check-and-set): two writers cannot both win. */
export async function writeVersion(vault: VaultClient, path: string, data: Record<string, string>, cas: number): Promise<number> {
  const res = (await vault.write(`secret/data/${path}`, { options: { cas }, data })) as { data: { version: number } };
  return res.data.version;
}

/** Replaces the labels (custom metadata) of a secret. Labels are version numbers as strings; absent ones are removed. */
export async function writeLabels(vault: VaultClient, path: string, labels: Labels): Promise<void> {
  const clean = Object.fromEntries(Object.entries(labels).filter(([, v]) => v !== undefined)) as Record<string, string>;
  // Custom metadata is merged by KV v2's PATCH but replaced by POST: POST, so removed labels go.
  await vault.write(`secret/metadata/${path}`, { custom_metadata: clean });
}
