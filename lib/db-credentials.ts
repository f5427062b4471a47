import type { NatsConnection } from 'nats';
import type pg from 'pg';
import type { Config } from './config';
import type { Logger } from './logger';
import { createPool, serverOf } from './postgres';
import { readCurrentSecretData } from './third-party/credentials';
import { createVault, type VaultClient } from './vault';

/** Published by the rotation runbook when a secret's `current` version changes. */
export const SECRET_ROTATED_SUBJECT = 'secrets.rotated';
export type SecretRotated = { path: string; version: number; previous?: number; at: string };

const RECHECK_MS = 60_000;

/**
 * Points a pool's *new* connections at the current version of a Vault credential
 * (`{username, password}`) and follows its rotations (NATS `secrets.rotated`, and a re-read every
 * minute in case a message was missed). Open connections stay as they are and are recycled by the
 * pool's max lifetime, so a rotation drops no request.
 */
export async function followDbCredentials(pool: pg.Pool, vault: VaultClient, path: string, opts: { nats?: NatsConnection; logger?: Logger } = {}): Promise<() => void> {
  const options = (pool as unknown as { options: pg.PoolConfig }).options;
  // A connection string's parts (its user included, even empty) win over the fields: use fields only.
  if (options.connectionString) {
    Object.assign(options, serverOf(options.connectionString));
    delete options.connectionString;
  }
  let version = -1;
  const apply = async () => {
    const { data, version: v } = await readCurrentSecretData<{ username: string; password: string }>(vault, path);
    if (v === version) return;
    options.user = data.username;
    Object.defineProperty(options, 'password', { configurable: true, enumerable: false, writable: true, value: data.password });
    if (version !== -1) retireConnections(pool, data.username);
    version = v;
    opts.logger?.info({ path, version: v, user: data.username }, 'database credential in use');
  };
  await apply();
  const onError = (err: unknown) => opts.logger?.error({ err: (err as Error).message, path }, 'could not read the database credential; keeping the last one');
  const timer = setInterval(() => void apply().catch(onError), RECHECK_MS);
  timer.unref();
  const sub = opts.nats?.subscribe(SECRET_ROTATED_SUBJECT);
  if (sub) {
    void (async () => {
      for await (const m of sub) {
        if (m.json<SecretRotated>().path === path) await apply().catch(onError);
      }
    })();
  }
  return () => {
    clearInterval(timer);
    sub?.unsubscribe();
  };
}

type PoolInternals = { _clients?: pg.PoolClient[]; _idle?: { client: pg.PoolClient }[]; _expired?: WeakSet<object>; _remove?: (c: pg.PoolClient) => void };

/**
 * Retires the pool's connections made with another login: idle ones close now, busy ones when
 * they are released — what pg-pool does itself when a connection outlives maxLifetimeSeconds
 * (its `_expired` set). Without this, a pool under steady traffic keeps reusing old-login
 * connections until their lifetime ends. If pg-pool's internals ever change, this does nothing
 * and the max lifetime (5 minutes) retires them instead.
 */
function retireConnections(pool: pg.Pool, keepUser: string): void {
  const p = pool as unknown as PoolInternals;
  if (!Array.isArray(p._clients) || !Array.isArray(p._idle) || !(p._expired instanceof WeakSet) || typeof p._remove !== 'function') return;
  const idle = new Set(p._idle.map((i) => i.client));
  for (const c of [...p._clients]) {
    if ((c as unknown as { user?: string }).user === keepUser) continue;
    if (idle.has(c)) p._remove.call(pool, c);
    else p._expired.add(c);
  }
}

/** The processes' pool: the URL's login, or with FLOWGATE_DATABASE_CREDENTIALS the rotated one from Vault. */
export async function createAppPool(config: Config, max: number, opts: { nats?: NatsConnection; logger?: Logger } = {}): Promise<pg.Pool> {
  const pool = createPool(config.FLOWGATE_DATABASE_URL, max);
  if (config.FLOWGATE_DATABASE_CREDENTIALS) {
    await followDbCredentials(pool, createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN), config.FLOWGATE_DATABASE_CREDENTIALS, opts);
  }
  return pool;
}
