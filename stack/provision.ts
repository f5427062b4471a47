import { existsSync } from 'node:fs';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { hashCredential } from '../lib/credentials';
import { createKafka, ensureTopics } from '../lib/kafka';
import { connectNats, ensureStreams } from '../lib/nats';
import { createPool, migrate } from '../lib/postgres';
import { ensureWorkspace, issueAdminToken, issueApiKey } from '../lib/tenants';
import { createVault, ensureKvMount } from '../lib/vault';
import { LOCAL_CREDENTIALS, pgSuperuserUrl, processEnv, type StackLayout } from './servers';

type Layout = StackLayout & { executionIdSecret: string };

/** Idempotent: the application role and database, migrations, streams, topics and the KV mount. */
export async function provision(l: Layout, say: (msg: string) => void = () => undefined): Promise<void> {
  const env = processEnv(l);
  const su = new pg.Client({ connectionString: pgSuperuserUrl(l) });
  await su.connect();
  try {
    const role = await su.query("SELECT 1 FROM pg_roles WHERE rolname = 'flowgate'");
    if (!role.rowCount) {
      // Not a superuser and no BYPASSRLS: row-level security applies to the platform's own role.
      await su.query(`CREATE ROLE flowgate LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD '${LOCAL_CREDENTIALS.pgAppPassword}'`);
    }
    const db = await su.query("SELECT 1 FROM pg_database WHERE datname = 'flowgate'");
    if (!db.rowCount) await su.query('CREATE DATABASE flowgate OWNER flowgate');
  } finally {
    await su.end();
  }
  const pool = createPool(env.FLOWGATE_DATABASE_URL!, 2);
  try {
    const applied = await migrate(pool);
    say(`postgres migrations: ${applied.length ? applied.join(', ') : 'up to date'}`);
  } finally {
    await pool.end();
  }

  const nc = await connectNats(env.FLOWGATE_NATS_URL!, 'flowgate-provision');
  try {
    await ensureStreams(nc);
  } finally {
    await nc.close();
  }
  say('jetstream streams ready');

  await ensureTopics(createKafka(env.FLOWGATE_KAFKA_BROKERS!.split(','), 'flowgate-provision'));
  say('kafka topics ready');

  await ensureKvMount(createVault(env.FLOWGATE_VAULT_ADDR!, env.FLOWGATE_VAULT_TOKEN));
  say('openbao kv v2 mount ready');
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
      const known = await pool.query('SELECT 1 FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL', [hashCredential(creds.FLOWGATE_API_KEY)]);
      if (known.rowCount) return creds;
    }
    const tenant = 'demo';
    await ensureWorkspace(pool, tenant, 'Demo tenant');
    const { key } = await issueApiKey(pool, tenant, 'demo-client');
    const creds: DemoCredentials = {
      FLOWGATE_TENANT: tenant,
      FLOWGATE_API_KEY: key,
      FLOWGATE_ADMIN_TOKEN: await issueAdminToken(pool, null, 'demo-admin', 'admin'),
      FLOWGATE_OPERATOR_TOKEN: await issueAdminToken(pool, tenant, 'demo-operator', 'operator'),
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
