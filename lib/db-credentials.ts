import { hostname } from 'node:os';
import type { NatsConnection } from 'nats';
import type pg from 'pg';
import type { Config } from './config';
import type { Logger } from './logger';
import { createPool } from './postgres';
import { poolOptions, retireConnections } from './pg-pool-internals';
import { followTopology } from './db-topology';
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
export async function followDbCredentials(pool: pg.Pool, vault: VaultClient, path: string, opts: { nats?: NatsConnection; logger?: Logger; recheckMs?: number } = {}): Promise<() => void> {
  const options = poolOptions(pool);
  let version = -1;
  const read = async () => {
    const { data, version: v } = await readCurrentSecretData<{ username: string; password: string }>(vault, path);
    if (v === version) return;
    options.user = data.username;
    Object.defineProperty(options, 'password', { configurable: true, enumerable: false, writable: true, value: data.password });
    if (version !== -1) retireConnections(pool, (c) => (c as unknown as { user?: string }).user === data.username);
    version = v;
    opts.logger?.info({ path, version: v, user: data.username }, 'database credential in use');
  };
  // One read at a time: the minute's re-read and a rotation message overlapping could otherwise
  // apply the older answer last and go back to the login the rotation replaced.
  let turn: Promise<void> = Promise.resolve();
  const apply = () => (turn = turn.catch(() => undefined).then(read));
  await apply();
  const onError = (err: unknown) => opts.logger?.error({ err: (err as Error).message, path }, 'could not read the database credential; keeping the last one');
  const timer = setInterval(() => void apply().catch(onError), opts.recheckMs ?? RECHECK_MS);
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

/** The processes' pool: the URL's login, or with FLOWGATE_DATABASE_CREDENTIALS the rotated one from Vault. */
export async function createAppPool(config: Config, max: number, opts: { nats?: NatsConnection; logger?: Logger } = {}): Promise<pg.Pool> {
  const pool = createPool(config.FLOWGATE_DATABASE_URL, max);
  if (config.FLOWGATE_DATABASE_CREDENTIALS) {
    await followDbCredentials(pool, createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN), config.FLOWGATE_DATABASE_CREDENTIALS, opts);
  }
  // With a topology in NATS (the local stack writes one), the primary it names wins over the URL's host.
  if (opts.nats) {
    await followTopology(pool, opts.nats, config.FLOWGATE_DATABASE_CLUSTER, { process: config.process, instance: `${config.process}@${hostname()}:${process.pid}`, logger: opts.logger });
  }
  return pool;
}
