import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { hashCredential } from '../lib/credentials';
import { loadConfig } from '../lib/config';
import { asPlatform, createPool } from '../lib/postgres';
import { provisionPlatform } from '../lib/provision';
import { ensureWorkspace, issueAdminToken, issueApiKey } from '../lib/tenants';
import { createVault } from '../lib/vault';
import { ensureSandboxCredential } from '../sandboxes/payment-provider/bootstrap';
import { LOCAL_CREDENTIALS, pgSuperuserUrl, processEnv, type StackLayout } from './servers';

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
  } finally {
    await su.end();
  }
  const config = loadConfig('admin', { ...process.env, ...env });
  await provisionPlatform(config, say);
  const sandboxKey = await ensureSandboxCredential(createVault(config.FLOWGATE_VAULT_ADDR, config.FLOWGATE_VAULT_TOKEN), `http://127.0.0.1:${l.ports.paymentSandbox}`);
  say(`payment sandbox API key in Vault (${sandboxKey})`);
}

export type DemoCredentials = {
  FLOWGATE_TENANT: string;
  FLOWGATE_API_KEY: string;
  FLOWGATE_ADMIN_TOKEN: string;
  FLOWGATE_OPERATOR_TOKEN: string;
  FLOWGATE_GATEWAY_URL: string;
  FLOWGATE_ADMIN_URL: string;
};

/**
 * The demo tenant of `make up`: workspace `demo`, an API key, an admin and an operator token.
 * Credentials are kept in the stack directory and reused while the database still knows them.
 */
export async function ensureDemoTenant(l: Layout): Promise<DemoCredentials> {
  const file = path.join(l.dir, 'demo-credentials.json');
  const pool = createPool(processEnv(l).FLOWGATE_DATABASE_URL!, 2);
  try {
    if (existsSync(file)) {
      const creds = JSON.parse(await readFile(file, 'utf8')) as DemoCredentials;
      const known = await asPlatform(pool, (db) => db.query('SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL', [hashCredential(creds.FLOWGATE_API_KEY)]));
      if (known.rowCount) return creds;
    }
    const tenant = 'demo';
    await ensureWorkspace(pool, tenant, 'Demo tenant');
    const { key } = await issueApiKey(pool, tenant, 'demo-client');
    const creds: DemoCredentials = {
      FLOWGATE_TENANT: tenant,
      FLOWGATE_API_KEY: key,
      FLOWGATE_ADMIN_TOKEN: (await issueAdminToken(pool, null, 'demo-admin', 'admin')).token,
      FLOWGATE_OPERATOR_TOKEN: (await issueAdminToken(pool, tenant, 'demo-operator', 'operator')).token,
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
