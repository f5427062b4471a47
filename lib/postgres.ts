import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';

export type Pool = pg.Pool;

/** True when PostgreSQL answers a query (a readiness check). */
export async function postgresHealthy(pool: pg.Pool): Promise<boolean> {
  return (await pool.query('SELECT 1')).rowCount === 1;
}

/** Runs `fn` in one transaction: committed if it resolves, rolled back if it throws. */
export async function withTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * Runs `fn` in a transaction confined by row-level security to one workspace: every query in it
 * sees and writes only that workspace's rows (migration 004).
 */
export function inWorkspace<T>(pool: pg.Pool, workspace: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withTransaction(pool, async (client) => {
    await client.query("SELECT set_config('flowgate.workspace', $1, true)", [workspace]);
    return fn(client);
  });
}

/**
 * Runs `fn` in a transaction that sees every workspace: only for what is cross-tenant by nature
 * (credential lookups by hash, the data plane's config pull, creating a workspace, the outbox).
 */
export function asPlatform<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  return withTransaction(pool, async (client) => {
    await client.query("SELECT set_config('flowgate.scope', 'platform', true)");
    return fn(client);
  });
}

export function createPool(connectionString: string, max = 10): pg.Pool {
  // Connections are recycled after 5 minutes, so a rotated credential (lib/db-credentials.ts)
  // replaces the old one everywhere well within a rotation's grace period.
  const pool = new pg.Pool({ connectionString, max, connectionTimeoutMillis: 3000, idleTimeoutMillis: 30_000, maxLifetimeSeconds: 300 });
  // An idle connection dropped by the server (a restart, a failover) is discarded by the pool;
  // without a listener Node would treat the event as fatal. The next query reconnects, or fails
  // where it is made and is handled there.
  pool.on('error', () => undefined);
  // The same for a connection ended while checked out between two queries (a revoked login's
  // session, a failover): the next query on it fails where it is made; the process lives on.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** Where a connection URL points (host, port, database), without its login. */
export function serverOf(url: string): { host: string; port: number; database: string } {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432), database: decodeURIComponent(u.pathname.slice(1)) };
}

const MIGRATIONS_DIR = path.join(__dirname, 'db', 'migrations');
/** Serialises concurrent migrators (several processes starting at once). */
const MIGRATION_LOCK = 4_242_001;

/**
 * The processes' own role gets data access only: no DDL, and on audit_logs only SELECT and
 * INSERT (the insert-only trigger stops the owner too). Re-applied after every migration run.
 */
async function grantAppRole(client: pg.PoolClient, role: string): Promise<void> {
  const r = pg.Client.prototype.escapeIdentifier(role);
  await client.query(`GRANT USAGE ON SCHEMA public TO ${r}`);
  await client.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ${r}`);
  await client.query(`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ${r}`);
  await client.query(`REVOKE UPDATE, DELETE, TRUNCATE ON audit_logs, config_versions, ledger_entries FROM ${r}`);
  await client.query(`REVOKE INSERT, UPDATE, DELETE ON schema_migrations FROM ${r}`);
}

/** Applies the SQL files in lib/db/migrations that are not applied yet, each in its own transaction. */
export async function migrate(pool: pg.Pool, appRole?: string): Promise<string[]> {
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
    const done = new Set((await client.query<{ version: string }>('SELECT version FROM schema_migrations')).rows.map((r) => r.version));
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => f.endsWith('.sql')).sort();
    for (const file of files) {
      if (done.has(file)) continue;
      const sql = await readFile(path.join(MIGRATIONS_DIR, file), 'utf8');
      await client.query('BEGIN');
      try {
        await client.query(sql);
        await client.query('INSERT INTO schema_migrations (version) VALUES ($1)', [file]);
        await client.query('COMMIT');
        applied.push(file);
      } catch (err) {
        await client.query('ROLLBACK');
        throw new Error(`migration ${file} failed: ${(err as Error).message}`);
      }
    }
    if (appRole) await grantAppRole(client, appRole);
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
  return applied;
}
