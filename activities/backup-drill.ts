import { spawn } from 'node:child_process';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import pg from 'pg';
import { primaryAddress } from '../lib/db-topology';
import { removeScratchPostgres, scratchLogin, startScratchPostgres, type ScratchInstance } from '../lib/pg-server';
import { DB_DR_SECRET } from '../lib/secrets';
import { readCurrentSecretData } from '../lib/third-party/credentials';
import type { ActivityDeps } from '.';
import { whileBeating } from './heartbeating';

export type BackupDeps = Pick<ActivityDeps, 'vault' | 'nats' | 'databaseUrl' | 'databaseCluster' | 'pgBin' | 'backupDir'>;

export type TableDigest = { table: string; rows: number; checksum: string };
const DATABASE = 'flowgate';
const RESTORED = 'flowgate_restore';

/** Row count and an order-independent checksum of every table in `public`, as one snapshot sees them. */
async function digest(c: pg.Client): Promise<TableDigest[]> {
  await c.query("SET TIME ZONE 'UTC'");
  await c.query("SET extra_float_digits = 3");
  const tables = (await c.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")).rows.map((r) => r.t);
  const out: TableDigest[] = [];
  for (const table of tables) {
    const { rows } = await c.query<{ rows: string; checksum: string | null }>(
      `SELECT count(*) AS rows, md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))) AS checksum FROM public.${c.escapeIdentifier(table)} t`);
    out.push({ table, rows: Number(rows[0]!.rows), checksum: rows[0]!.checksum ?? 'empty' });
  }
  return out;
}

/** Runs a PostgreSQL program; its password goes through the environment, never the arguments or a log. */
function run(bin: string, args: string[], password: string): Promise<void> {
  return whileBeating(() => new Promise((resolve, reject) => {
    const child = spawn(bin, args, { env: { ...process.env, PGPASSWORD: password }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0) resolve();
      else reject(new Error(`${path.basename(bin)} exited with ${code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`));
    });
  }));
}

/** The backup and restore drill: a consistent dump with its digest, a scratch instance, the restore, the comparison. */
export function backupActivities(deps: BackupDeps) {
  const bin = (name: string) => {
    if (!deps.pgBin) throw ApplicationFailure.nonRetryable('FLOWGATE_PG_BIN is not set: the worker has no PostgreSQL programs', 'NoPgPrograms');
    return path.join(deps.pgBin, name);
  };
  const root = () => {
    if (!deps.backupDir) throw ApplicationFailure.nonRetryable('FLOWGATE_BACKUP_DIR is not set', 'NoBackupDir');
    return deps.backupDir;
  };
  const drLogin = async () => (await readCurrentSecretData<{ username: string; password: string }>(deps.vault, DB_DR_SECRET)).data;
  const primary = () => primaryAddress(deps.nats, deps.databaseCluster ?? 'main', deps.databaseUrl);

  return {
    /** Read-only (a dry run): the tables and their row counts, where the dump would go. */
    async planBackup(): Promise<{ primary: string; tables: number; rows: number; target: string }> {
      const login = await drLogin();
      const at = await primary();
      const c = new pg.Client({ ...at, database: DATABASE, user: login.username, password: login.password });
      await c.connect();
      try {
        const d = await whileBeating(() => digest(c));
        return { primary: `${at.host}:${at.port}`, tables: d.length, rows: d.reduce((n, t) => n + t.rows, 0), target: root() };
      } finally {
        await c.end().catch(() => undefined);
      }
    },

    /**
     * pg_dump in the snapshot of an open repeatable-read transaction, whose digest of every table is
     * taken in that same snapshot: what the restore must reproduce exactly, however busy the primary.
     */
    async backupDatabase(p: { run_id: string }): Promise<{ file: string; bytes: number; backup_ms: number; tables: TableDigest[] }> {
      const t0 = Date.now();
      const login = await drLogin();
      const at = await primary();
      // A dump holds the whole control plane (webhook secrets included): the file is for this user
      // only (the directory also holds the scratch instance, which runs as the postgres user).
      await mkdir(root(), { recursive: true });
      const file = path.join(root(), `${p.run_id}.dump`);
      const c = new pg.Client({ ...at, database: DATABASE, user: login.username, password: login.password });
      await c.connect();
      try {
        await c.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
        const { rows } = await c.query<{ s: string }>('SELECT pg_export_snapshot() AS s');
        const tables = await whileBeating(() => digest(c));
        await writeFile(file, '', { mode: 0o600 }); // pg_dump writes into it, keeping the mode
        try {
          await run(bin('pg_dump'), ['-h', at.host, '-p', String(at.port), '-U', login.username, '-d', DATABASE, '-Fc', `--snapshot=${rows[0]!.s}`, '-f', file], login.password);
        } catch (err) {
          await rm(file, { force: true }); // a partial dump is not left behind
          throw err;
        }
        await c.query('COMMIT');
        return { file, bytes: (await stat(file)).size, backup_ms: Date.now() - t0, tables };
      } finally {
        await c.end().catch(() => undefined);
      }
    },

    async startScratchInstance(p: { run_id: string }): Promise<ScratchInstance & { start_ms: number }> {
      const t0 = Date.now();
      const s = await whileBeating(() => startScratchPostgres(path.dirname(bin('postgres')), path.join(root(), `scratch-${p.run_id}`)));
      return { ...s, start_ms: Date.now() - t0 };
    },

    /** Into a fresh database on the scratch instance (owners and grants left out: its roles are not the platform's). */
    async restoreBackup(p: { file: string; scratch: ScratchInstance }): Promise<{ restore_ms: number }> {
      const t0 = Date.now();
      const login = await scratchLogin(p.scratch);
      const c = new pg.Client(login);
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${RESTORED}`);
        await c.query(`CREATE DATABASE ${RESTORED}`);
      } finally {
        await c.end().catch(() => undefined);
      }
      await run(bin('pg_restore'), ['-h', '127.0.0.1', '-p', String(p.scratch.port), '-U', 'postgres', '-d', RESTORED, '--no-owner', '--no-privileges', '--exit-on-error', p.file], String(login.password));
      return { restore_ms: Date.now() - t0 };
    },

    /** Every table's row count and checksum on the scratch instance against the backup's. */
    async verifyRestore(p: { scratch: ScratchInstance; expected: TableDigest[] }): Promise<{ tables: number; rows: number; verify_ms: number }> {
      const t0 = Date.now();
      const c = new pg.Client(await scratchLogin(p.scratch, RESTORED));
      await c.connect();
      try {
        const got = new Map((await whileBeating(() => digest(c))).map((t) => [t.table, t]));
        const wrong = p.expected.filter((e) => got.get(e.table)?.rows !== e.rows || got.get(e.table)?.checksum !== e.checksum)
          .map((e) => `${e.table}: ${e.rows} rows expected, ${got.get(e.table)?.rows ?? 'no table'} restored${got.get(e.table)?.rows === e.rows ? ' (checksum differs)' : ''}`);
        const extra = [...got.keys()].filter((t) => !p.expected.some((e) => e.table === t));
        if (wrong.length || extra.length) {
          throw ApplicationFailure.nonRetryable(`the restore differs from the backup: ${[...wrong, ...extra.map((t) => `${t}: not in the backup`)].join('; ')}`, 'RestoreMismatch');
        }
        return { tables: p.expected.length, rows: p.expected.reduce((n, t) => n + t.rows, 0), verify_ms: Date.now() - t0 };
      } finally {
        await c.end().catch(() => undefined);
      }
    },

    /** Stops and deletes the scratch instance, and the dump unless kept. */
    async removeScratchInstance(p: { run_id: string; file?: string; keep_backup: boolean }): Promise<{ removed: string[] }> {
      const scratch = path.join(root(), `scratch-${p.run_id}`);
      await removeScratchPostgres(scratch);
      const removed = [scratch];
      if (p.file && !p.keep_backup) {
        await rm(p.file, { force: true });
        removed.push(p.file);
      }
      return { removed };
    },
  };
}
