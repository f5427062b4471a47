import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { hashCredential } from '../lib/credentials';
import { loadConfig } from '../lib/config';
import { asPlatform, createPool } from '../lib/postgres';
import { provisionPlatform } from '../lib/provision';
import { ensureWorkspace, issueAdminToken, issueApiKey } from '../lib/tenants';
import { randomBytes } from 'node:crypto';
import { DB_APP_SECRET, DB_APP_USERS, DB_DR_SECRET, DB_ROTATOR_SECRET, writeLabels } from '../lib/secrets';
import { readCurrentSecretData } from '../lib/third-party/credentials';
import { createVault, type VaultClient } from '../lib/vault';
import { ensureSandboxCredential } from '../sandboxes/payment-provider/bootstrap';
import { LOCAL_CREDENTIALS, pgPort, pgSuperuserUrl, processEnv, type StackLayout } from './servers';

type Layout = StackLayout & { executionIdSecret: string };

/** Idempotent: the application role and database, then everything provisionPlatform creates. */
export async function provision(l: Layout, say: (msg: string) => void = () => undefined): Promise<void> {
  const env = processEnv(l);
  const su = new pg.Client({ connectionString: pgSuperuserUrl(l) });
  await su.connect();
  try {
    // Neither role is a superuser or has BYPASSRLS: row-level security applies to both. `flowgate`
    // owns the schema (migrations); the processes run as `flowgate_app`, with data access only.
    for (const [role, password] of [['flowgate', LOCAL_CREDENTIALS.pgOwnerPassword], ['flowgate_app', LOCAL_CREDENTIALS.pgAppPassword]]) {
      const exists = await su.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
      if (!exists.rowCount) await su.query(`CREATE ROLE ${role} LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${password}'`);
    }
    const db = await su.query("SELECT 1 FROM pg_database WHERE datname = 'flowgate'");
    if (!db.rowCount) await su.query('CREATE DATABASE flowgate OWNER flowgate');
    // A commit returns once the synchronous standby has it (stack/database.ts): a failover loses
    // no acknowledged write. remote_write: in the standby's memory, not yet on its disk.
    await su.query("ALTER DATABASE flowgate SET synchronous_commit = 'remote_write'");
  } finally {
    await su.end();
  }
  const config = loadConfig('admin', { ...process.env, ...env });
  await provisionPlatform(config, say);
  const vault = createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN);
  const sandboxKey = await ensureSandboxCredential(vault, `http://127.0.0.1:${l.ports.paymentSandbox}`);
  say(`payment sandbox API key in Vault (${sandboxKey})`);
  say(`rotated database logins in Vault (${await ensureDbCredentials(l, vault)})`);
}

/**
 * The processes log in as one of two roles that alternate at each rotation (both members of
 * flowgate_app, which holds the grants), with the current one in Vault at DB_APP_SECRET; the
 * rotation runbook changes them as flowgate_rotator (CREATEROLE, not a superuser), whose login is
 * in Vault too. Vault in dev mode forgets everything on restart: then both are set afresh.
 */
async function ensureDbCredentials(l: Layout, vault: VaultClient): Promise<'kept' | 'created'> {
  const su = new pg.Client({ connectionString: pgSuperuserUrl(l, 'flowgate') });
  await su.connect();
  try {
    for (const user of DB_APP_USERS) {
      if (!(await su.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [user])).rowCount) {
        await su.query(`CREATE ROLE ${user} NOLOGIN NOSUPERUSER NOBYPASSRLS INHERIT IN ROLE flowgate_app`);
      }
    }
    // The grants run every time (granting again changes nothing): a run stopped between a role's
    // creation and its grants must not leave a role that later runs skip.
    if (!(await su.query("SELECT 1 FROM pg_roles WHERE rolname = 'flowgate_rotator'")).rowCount) {
      await su.query('CREATE ROLE flowgate_rotator LOGIN CREATEROLE NOSUPERUSER NOBYPASSRLS');
    }
    await su.query('GRANT pg_signal_backend TO flowgate_rotator');
    // The DR login: reads everything for a backup (BYPASSRLS: pg_dump refuses row-level security),
    // sees replication, promotes a standby, fences a primary (read-only, sessions ended) and turns
    // synchronous replication off when the standby is gone. Not a superuser.
    if (!(await su.query("SELECT 1 FROM pg_roles WHERE rolname = 'flowgate_dr'")).rowCount) {
      await su.query('CREATE ROLE flowgate_dr LOGIN NOSUPERUSER BYPASSRLS');
    }
    await su.query('GRANT pg_read_all_data, pg_monitor, pg_signal_backend TO flowgate_dr');
    await su.query('GRANT EXECUTE ON FUNCTION pg_promote(boolean, integer) TO flowgate_dr');
    await su.query('GRANT EXECUTE ON FUNCTION pg_reload_conf() TO flowgate_dr');
    await su.query('GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names, default_transaction_read_only TO flowgate_dr');
    const works = async (path: string) => {
      const current = await readCurrentSecretData<{ username: string; password: string }>(vault, path).catch(() => undefined);
      if (!current) return false;
      const c = new pg.Client({ host: '127.0.0.1', port: pgPort(l, l.dbPrimary ?? 'postgres'), database: 'flowgate', user: current.data.username, password: current.data.password });
      try {
        await c.connect();
        return true;
      } catch {
        return false;
      } finally {
        await c.end().catch(() => undefined);
      }
    };
    if ((await works(DB_APP_SECRET)) && (await works(DB_ROTATOR_SECRET)) && (await works(DB_DR_SECRET))) return 'kept';
    const set = async (path: string, user: string) => {
      const password = randomBytes(24).toString('base64url');
      await su.query(`ALTER ROLE ${user} LOGIN PASSWORD ${su.escapeLiteral(password)}`);
      const { data } = (await vault.write(`secret/data/${path}`, { data: { username: user, password } })) as { data: { version: number } };
      await writeLabels(vault, path, { current: String(data.version) });
    };
    await set(DB_APP_SECRET, DB_APP_USERS[0]);
    await su.query(`ALTER ROLE ${DB_APP_USERS[1]} NOLOGIN PASSWORD NULL`);
    await set(DB_ROTATOR_SECRET, 'flowgate_rotator');
    await set(DB_DR_SECRET, 'flowgate_dr');
    return 'created';
  } finally {
    await su.end();
  }
}

export type DemoCredentials = {
  FLOWGATE_TENANT: string;
  FLOWGATE_API_KEY: string;
  /** Another consumer's key: approvals come from someone other than the requester. */
  FLOWGATE_APPROVER_API_KEY: string;
  FLOWGATE_ADMIN_TOKEN: string;
  FLOWGATE_OPERATOR_TOKEN: string;
  FLOWGATE_GATEWAY_URL: string;
  FLOWGATE_ADMIN_URL: string;
};

/**
 * The demo tenant of `make up`: workspace `demo`, an API key, an approver's API key, an admin
 * and an operator token.
 * Credentials are kept in the stack directory and reused while the database still knows them.
 */
export async function ensureDemoTenant(l: Layout): Promise<DemoCredentials> {
  const file = path.join(l.dir, 'demo-credentials.json');
  const pool = createPool(processEnv(l).FLOWGATE_DATABASE_URL!, 2);
  try {
    if (existsSync(file)) {
      const creds = JSON.parse(await readFile(file, 'utf8')) as DemoCredentials;
      const known = await asPlatform(pool, (db) => db.query('SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL', [hashCredential(creds.FLOWGATE_API_KEY)]));
      if (known.rowCount) {
        if (creds.FLOWGATE_APPROVER_API_KEY) return creds;
        // Kept from before the approver's key existed: add it.
        creds.FLOWGATE_APPROVER_API_KEY = (await issueApiKey(pool, creds.FLOWGATE_TENANT, 'demo-approver')).key;
        await writeFile(file, JSON.stringify(creds, null, 2), { mode: 0o600 });
        return creds;
      }
    }
    const tenant = 'demo';
    await ensureWorkspace(pool, tenant, 'Demo tenant');
    const { key } = await issueApiKey(pool, tenant, 'demo-client');
    const creds: DemoCredentials = {
      FLOWGATE_TENANT: tenant,
      FLOWGATE_API_KEY: key,
      FLOWGATE_APPROVER_API_KEY: (await issueApiKey(pool, tenant, 'demo-approver')).key,
      FLOWGATE_ADMIN_TOKEN: (await issueAdminToken(pool, null, 'demo-admin', 'admin')).token,
      // Operators run runbooks, which act on the platform: their token is platform-wide.
      FLOWGATE_OPERATOR_TOKEN: (await issueAdminToken(pool, null, 'demo-operator', 'operator')).token,
      FLOWGATE_GATEWAY_URL: `http://127.0.0.1:${l.ports.gateway}`,
      FLOWGATE_ADMIN_URL: `http://127.0.0.1:${l.ports.admin}`,
    };
    await mkdir(l.dir, { recursive: true });
    await writeFile(file, JSON.stringify(creds, null, 2), { mode: 0o600 });
    return creds;
  } finally {
    await pool.end();
  }
}
