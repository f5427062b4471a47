import { execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { freeLoopbackPort } from './free-port';

const execFileAsync = promisify(execFile);

/** As root, PostgreSQL runs as the `postgres` user (it refuses to run as root). */
export function postgresUid(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim());
  return { uid, gid };
}

/** An empty directory owned by the user PostgreSQL runs as (a data directory must be 0700). */
export async function freshPgDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await chmod(dir, 0o700);
  const owner = postgresUid();
  if (owner) await chown(dir, owner.uid, owner.gid);
}

export type ScratchInstance = { dir: string; port: number };
const SECRET_FILE = 'scratch.pw';

/** The superuser login of a scratch instance: its password lives in a 0600 file beside its data, never in a workflow's history. */
export async function scratchLogin(s: ScratchInstance, database = 'postgres'): Promise<pg.ClientConfig> {
  const password = (await readFile(path.join(s.dir, SECRET_FILE), 'utf8')).trim();
  return { host: '127.0.0.1', port: s.port, user: 'postgres', password, database, connectionTimeoutMillis: 3000 };
}

/** True when a PostgreSQL server takes a connection and a query (a readiness check). */
export async function pgAnswers(login: pg.ClientConfig | string): Promise<boolean> {
  const c = new pg.Client(typeof login === 'string' ? { connectionString: login, connectionTimeoutMillis: 1500 } : login);
  c.on('error', () => undefined);
  try {
    await c.connect();
    await c.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await c.end().catch(() => undefined);
  }
}

/**
 * A throwaway PostgreSQL server in `root` (initdb, a free loopback port, a random superuser
 * password, no durability settings), for restoring a backup into. Idempotent: a scratch instance
 * already running there is reused.
 */
export async function startScratchPostgres(pgBin: string, root: string): Promise<ScratchInstance> {
  const dir = path.join(root, 'data');
  const portFile = path.join(root, 'port');
  if (existsSync(portFile)) {
    const running = { dir: root, port: Number(await readFile(portFile, 'utf8')) };
    if (await pgAnswers(await scratchLogin(running))) return running;
  }
  await rm(root, { recursive: true, force: true });
  await mkdir(root, { recursive: true, mode: 0o755 });
  const owner = postgresUid();
  const password = randomBytes(24).toString('base64url');
  await writeFile(path.join(root, SECRET_FILE), password, { mode: 0o600 });
  const pwfile = path.join(root, 'initdb.pw');
  await writeFile(pwfile, password, { mode: 0o600 });
  if (owner) await chown(pwfile, owner.uid, owner.gid);
  await freshPgDir(dir);
  try {
    // Not execFileSync: this runs in the worker, whose event loop (heartbeats, other activities) must not stop for seconds.
    await execFileAsync(path.join(pgBin, 'initdb'), ['-D', dir, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${pwfile}`, '-E', 'UTF8', '--locale=C'], { ...(owner ?? {}) });
  } finally {
    await rm(pwfile, { force: true });
  }
  const port = await freeLoopbackPort();
  await writeFile(portFile, String(port));
  const log = openSync(path.join(root, 'postgres.log'), 'a');
  if (owner) await chown(path.join(root, 'postgres.log'), owner.uid, owner.gid);
  const child = spawn(path.join(pgBin, 'postgres'), ['-D', dir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=',
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'], { detached: true, stdio: ['ignore', log, log], ...(owner ?? {}) });
  closeSync(log);
  child.on('error', () => undefined);
  child.unref();
  const s = { dir: root, port };
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (await pgAnswers(await scratchLogin(s))) return s;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`the scratch instance in ${root} did not start within 30 s (see postgres.log there)`);
}

/** Stops a scratch instance (fast shutdown) and deletes it. */
export async function removeScratchPostgres(root: string): Promise<void> {
  const pidFile = path.join(root, 'data', 'postmaster.pid');
  if (existsSync(pidFile)) {
    const pid = Number((await readFile(pidFile, 'utf8')).split('\n')[0]);
    try { process.kill(pid, 'SIGINT'); } catch { /* gone */ }
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      try { process.kill(pid, 0); } catch { break; }
      await new Promise((r) => setTimeout(r, 100));
    }
    try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
  }
  await rm(root, { recursive: true, force: true });
}
