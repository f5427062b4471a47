import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { reconcileDatabase } from './database';
import { provision } from './provision';
import { APPS, DEFAULT_PORTS, INFRA, postgresUid, processEnv, type ServerSpec, type StackLayout, type StackPorts } from './servers';

export { processEnv };

const localhost = '127.0.0.1';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export const logPath = (l: StackLayout, name: string) => path.join(l.dir, 'logs', `${name}.log`);
const pidPath = (l: StackLayout, name: string) => path.join(l.dir, 'run', `${name}.pid`);
const stateFile = (dir: string) => path.join(dir, 'stack.json');

type StackState = { ports: StackPorts; profile: StackLayout['profile']; executionIdSecret: string; dbPrimary?: StackLayout['dbPrimary'] };

/** Picks distinct free loopback ports for every server (the test stack runs beside `make up`). */
export async function freePorts(): Promise<StackPorts> {
  const servers: net.Server[] = [];
  const take = () => new Promise<number>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, localhost, () => { servers.push(s); resolve((s.address() as net.AddressInfo).port); });
  });
  const ports = {} as StackPorts;
  for (const key of Object.keys(DEFAULT_PORTS) as (keyof StackPorts)[]) ports[key] = await take();
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/** Opens (or creates) a stack directory: the ports and secrets it was first given are kept. */
export async function openStack(dir: string, profile: StackLayout['profile'], ports?: StackPorts): Promise<StackLayout & { executionIdSecret: string }> {
  await mkdir(path.join(dir, 'logs'), { recursive: true });
  await mkdir(path.join(dir, 'run'), { recursive: true });
  let state: StackState;
  if (existsSync(stateFile(dir))) {
    state = JSON.parse(await readFile(stateFile(dir), 'utf8')) as StackState;
  } else {
    state = { ports: ports ?? (profile === 'dev' ? DEFAULT_PORTS : await freePorts()), profile, executionIdSecret: randomBytes(24).toString('base64url') };
    await writeFile(stateFile(dir), JSON.stringify(state, null, 2));
  }
  // Ports added since the directory was made take their defaults.
  return { dir, ports: { ...DEFAULT_PORTS, ...state.ports }, profile: state.profile, executionIdSecret: state.executionIdSecret, dbPrimary: state.dbPrimary };
}

/** Records which PostgreSQL server is the primary (after a failover) in the stack's state file. */
export async function saveDbPrimary(l: StackLayout): Promise<void> {
  const state = JSON.parse(await readFile(stateFile(l.dir), 'utf8')) as StackState;
  await writeFile(stateFile(l.dir), JSON.stringify({ ...state, dbPrimary: l.dbPrimary }, null, 2));
}

export function readStack(dir: string): StackLayout & { executionIdSecret: string } {
  const state = JSON.parse(readFileSync(stateFile(dir), 'utf8')) as StackState;
  return { dir, ports: { ...DEFAULT_PORTS, ...state.ports }, profile: state.profile, executionIdSecret: state.executionIdSecret, dbPrimary: state.dbPrimary };
}

const statusPortOf: Record<string, keyof StackPorts> = {
  gateway: 'gatewayStatus', admin: 'adminStatus', triggers: 'triggersStatus', worker: 'workerStatus',
};

/** When `pid` started (clock ticks since boot, /proc/PID/stat field 22): a pid file names one process, not whoever has its pid later. */
function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/**
 * The pid a server's pid file names, while that very process runs: after a reboot or a container
 * restart the number may belong to another process, which must never be signalled (stopServer
 * signals the whole process group) nor taken for the server.
 */
/** The pid of a server that must be running (tests and benches that kill one). */
export function requirePid(l: StackLayout, name: string): number {
  const pid = readPid(l, name);
  if (pid === undefined) throw new StackError(`${name} is not running`);
  return pid;
}

export function readPid(l: StackLayout, name: string): number | undefined {
  try {
    const [pidText, started] = readFileSync(pidPath(l, name), 'utf8').trim().split(' ');
    const pid = Number(pidText);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    return started === undefined || startTimeOf(pid) === started ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The port each server serves on, checked free before it is prepared and started: another
 * process there would take its clients (and, where readiness is asked on it, pass for it). The
 * apps' status ports and the servers' side ports are not in it.
 */
const LISTEN_PORT: Partial<Record<string, keyof StackPorts>> = {
  temporal: 'temporal', nats: 'nats', postgres: 'postgres', 'postgres-replica': 'postgresReplica', kafka: 'kafka', openbao: 'openbao',
  redis: 'redis', 'payment-sandbox': 'paymentSandbox', prometheus: 'prometheus', gateway: 'gateway', admin: 'admin',
};

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export function isRunning(l: StackLayout, name: string): boolean {
  const pid = readPid(l, name);
  return pid !== undefined && alive(pid);
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export class StackError extends Error {}

/** Starts one server detached (it outlives this command), then waits until it is ready. */
export async function startServer(l: StackLayout & { executionIdSecret: string }, spec: ServerSpec): Promise<void> {
  const log = logPath(l, spec.name);
  if (isRunning(l, spec.name)) {
    if (await spec.ready(l)) return;
  } else {
    const portKey = LISTEN_PORT[spec.name];
    if (portKey && !(await portFree(l.ports[portKey]))) {
      throw new StackError(`${spec.name}: port ${l.ports[portKey]} is in use by another process (another stack, or a system service); stop it or choose other ports`);
    }
    try {
      await spec.prepare?.(l);
    } catch (err) {
      throw new StackError(`${spec.name}: preparation failed: ${(err as Error).message}\n  log: ${log}`);
    }
    const env: NodeJS.ProcessEnv = { ...process.env, ...processEnv(l) };
    if (spec.kind === 'app') env.FLOWGATE_STATUS_PORT = String(l.ports[statusPortOf[spec.name]!]);
    const s = spec.spawn(l, env);
    const fd = openSync(log, 'a');
    const child = spawn(s.command, s.args, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: { ...env, ...s.env },
      cwd: s.cwd,
      ...(s.runAsPostgres ? postgresUid() ?? {} : {}),
    });
    closeSync(fd);
    child.on('error', () => undefined);
    if (child.pid === undefined) throw new StackError(`${spec.name}: could not start ${s.command}\n  log: ${log}`);
    await writeFile(pidPath(l, spec.name), `${child.pid} ${startTimeOf(child.pid) ?? ''}`.trim());
    child.unref();
  }
  const deadline = Date.now() + spec.readyTimeoutMs;
  while (Date.now() < deadline) {
    if (await spec.ready(l)) return;
    const pid = readPid(l, spec.name);
    if (pid === undefined || !alive(pid)) {
      throw new StackError(`${spec.name}: exited during start-up\n  log: ${log}\n${tail(log)}`);
    }
    await sleep(250);
  }
  throw new StackError(`${spec.name}: not ready after ${spec.readyTimeoutMs / 1000}s\n  log: ${log}\n${tail(log)}`);
}

/** Stops one server: its stop signal to the whole process group, then SIGKILL after the timeout. */
export async function stopServer(l: StackLayout, name: string, timeoutMs = 20_000): Promise<void> {
  const pid = readPid(l, name);
  if (pid === undefined) return;
  const spec = [...INFRA, ...APPS].find((s) => s.name === name);
  const signal = spec?.stopSignal ?? 'SIGTERM';
  const kill = (sig: NodeJS.Signals) => {
    try { process.kill(-pid, sig); } catch { try { process.kill(pid, sig); } catch { /* gone */ } }
  };
  kill(signal);
  const deadline = Date.now() + timeoutMs;
  while (alive(pid) && Date.now() < deadline) await sleep(100);
  if (alive(pid)) {
    kill('SIGKILL');
    // A zombie (no init reaping it) or a process stuck in the kernel never goes: do not wait for ever.
    const killDeadline = Date.now() + 10_000;
    while (alive(pid) && Date.now() < killDeadline) await sleep(50);
  }
  await rm(pidPath(l, name), { force: true });
}

export const serverSpec = (name: string): ServerSpec => {
  const spec = [...INFRA, ...APPS].find((s) => s.name === name);
  if (!spec) throw new StackError(`unknown server ${name}`);
  return spec;
};

export type UpOptions = { apps: boolean; onProgress?: (msg: string) => void };

/** Starts servers in parallel; fails with every server's error (and log) if any did not come up. */
async function startAll(l: StackLayout & { executionIdSecret: string }, specs: ServerSpec[], say: (msg: string) => void): Promise<void> {
  const started = new Map<string, Promise<void>>();
  for (const spec of specs) {
    started.set(spec.name, (async () => {
      for (const dep of spec.after ?? []) {
        await started.get(dep)?.catch(() => { throw new StackError(`${spec.name}: not started, ${dep} did not start`); });
      }
      const t0 = Date.now();
      await startServer(l, spec);
      say(`${spec.name} ready (${((Date.now() - t0) / 1000).toFixed(1)}s)${spec.url ? ` ${spec.url(l)}` : ''}`);
    })());
  }
  const results = await Promise.allSettled(started.values());
  const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length) throw new StackError(failed.map((f) => String((f.reason as Error).message)).join('\n'));
}

/** Starts the infrastructure in parallel, provisions it, then (optionally) Flowgate's own processes. */
export async function up(l: StackLayout & { executionIdSecret: string }, opts: UpOptions): Promise<void> {
  const say = opts.onProgress ?? (() => undefined);
  await startAll(l, INFRA, say);
  await reconcileDatabase(l, say);
  await provision(l, say);
  if (opts.apps) await startAll(l, APPS, say);
}

/** Stops Flowgate's processes first (they drain), then the infrastructure. */
export async function down(l: StackLayout): Promise<void> {
  await Promise.all(APPS.map((s) => stopServer(l, s.name)));
  await Promise.all(INFRA.map((s) => stopServer(l, s.name)));
}

export async function status(l: StackLayout): Promise<{ name: string; running: boolean; ready: boolean; pid?: number; url?: string }[]> {
  return Promise.all([...INFRA, ...APPS].map(async (spec) => {
    const pid = readPid(l, spec.name);
    const running = pid !== undefined && alive(pid);
    return { name: spec.name, running, ready: running && (await spec.ready(l)), pid: running ? pid : undefined, url: spec.url?.(l) };
  }));
}
