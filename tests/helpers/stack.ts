import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../../stack/paths';
import { processEnv } from '../../stack/servers';
import { freePorts, openStack, readStack, serverSpec, startServer, stopServer } from '../../stack/stack';

/** The stack tests/run.sh started for this run (FLOWGATE_STACK_DIR). */
export function testStack() {
  const dir = process.env.FLOWGATE_STACK_DIR;
  if (!dir) throw new Error('FLOWGATE_STACK_DIR is not set: run integration tests through `make test` or tests/run.sh integration');
  const layout = readStack(dir);
  const env = processEnv(layout);
  return {
    layout,
    env,
    gatewayUrl: `http://127.0.0.1:${layout.ports.gateway}`,
    adminUrl: `http://127.0.0.1:${layout.ports.admin}`,
  };
}

/**
 * A directory of its own for a test's files, inside the test stack's directory when there is one
 * (tests/run.sh removes that directory with the stack, pass or fail), else in the system's.
 */
export function scratchDir(prefix: string): Promise<string> {
  const stackDir = process.env.FLOWGATE_STACK_DIR;
  return mkdtemp(stackDir ? path.join(stackDir, `${prefix}-`) : path.join(os.tmpdir(), `flowgate-${prefix}-`));
}

/** A private server (e.g. a NATS a test may stop) in a directory of its own, on free ports. */
export async function privateServer(name: 'nats' | 'postgres' | 'temporal' | 'redis' | 'kafka' | 'openbao') {
  const dir = await scratchDir(`p-${name}`);
  const layout = await openStack(dir, 'test', await freePorts());
  const spec = serverSpec(name);
  await startServer(layout, spec);
  return {
    layout,
    env: processEnv(layout),
    start: () => startServer(layout, spec),
    stop: () => stopServer(layout, name),
  };
}

export type RunningProcess = {
  child: ChildProcess;
  statusUrl: string;
  publicUrl?: string;
  output: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
};

/** Spawns one Flowgate process (gateway, admin, triggers, worker) as its own OS process. */
export async function spawnProcess(name: 'gateway' | 'admin' | 'triggers' | 'worker', env: Record<string, string>, overrides: Record<string, string> = {}): Promise<RunningProcess> {
  const ports = await freePorts();
  const fullEnv = {
    ...process.env,
    FLOWGATE_LOG_LEVEL: 'info',
    ...env,
    // Own ports always: the stack's processes hold theirs.
    FLOWGATE_STATUS_PORT: String(ports.gatewayStatus),
    // A Kafka consumer group of its own: a process a test kills must not hold partitions of the
    // stack's api.events group until Kafka's session timeout (events meanwhile would wait).
    FLOWGATE_EVENT_RULES_GROUP: `test-${name}-${randomUUID()}`,
    FLOWGATE_GATEWAY_PORT: String(ports.gateway),
    FLOWGATE_ADMIN_PORT: String(ports.admin),
    // A worker starts from the bundle tests/run.sh built from this tree once, if there is one.
    ...(name === 'worker' && process.env.FLOWGATE_TEST_WORKFLOW_BUNDLE ? { FLOWGATE_WORKFLOW_BUNDLE: process.env.FLOWGATE_TEST_WORKFLOW_BUNDLE } : {}),
    ...overrides,
  };
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(REPO_ROOT, name === 'worker' ? 'worker/main.ts' : `${name}/main.ts`)], {
    env: fullEnv,
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const publicPort = name === 'gateway' ? fullEnv.FLOWGATE_GATEWAY_PORT : name === 'admin' ? fullEnv.FLOWGATE_ADMIN_PORT : undefined;
  return {
    child,
    statusUrl: `http://127.0.0.1:${fullEnv.FLOWGATE_STATUS_PORT}`,
    publicUrl: publicPort ? `http://127.0.0.1:${publicPort}` : undefined,
    output: () => out,
    exited,
  };
}

/** Polls until `fn` returns true, or fails with `what` after the timeout. */
export async function eventually(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 20_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await fn()) return;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

export async function readyStatus(statusUrl: string): Promise<{ code: number; body: { status: string; failing: string[] } | null }> {
  try {
    const res = await fetch(`${statusUrl}/readyz`, { signal: AbortSignal.timeout(3000) });
    return { code: res.status, body: (await res.json()) as { status: string; failing: string[] } };
  } catch {
    return { code: 0, body: null };
  }
}

/** A process's metric from its status port's /metrics: the first line of `name` with `labels` (0 when none). */
export async function metric(statusUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${statusUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(name) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)));
  return line ? Number(line.split(' ').at(-1)) : 0;
}
