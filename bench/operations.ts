// Operations on the local stack: how long a config change takes to be served by every gateway
// instance (the stack's gateway plus BENCH_OPS_GATEWAYS spawned ones), the wall time of the
// rotate-secret runbook for each rotatable secret, and the RTO of an automatic database failover
// (the primary SIGKILLed, the worker's watchdog runs the database-failover runbook), repeated with
// the primaries alternating. The failovers run last: they kill the primary each time and rebuild
// the old one as the new one's standby; they need a stack started with FLOWGATE_DB_FAILOVER=automatic
// (otherwise nothing is killed and the bench fails). Writes its block of bench/RESULTS.md.
import { readFileSync } from 'node:fs';
import { connect } from 'nats';
import { databaseClients, readTopology, topologyBucket } from '../lib/db-topology';
import { STREAMS } from '../lib/nats';
import { createPool } from '../lib/postgres';
import { SECRETS, type SecretDef } from '../lib/secrets';
import { connectTemporal } from '../lib/temporal';
import { issueAdminToken } from '../lib/tenants';
import { reconcileDatabase } from '../stack/database';
import type { PgServer } from '../stack/servers';
import { readStack, requirePid, serverSpec, startServer } from '../stack/stack';
import { adminTenant } from '../tests/helpers/admin';
import { eventually, readyStatus, spawnProcess, testStack, type RunningProcess } from '../tests/helpers/stack';
import { median, writeSection } from './results';

const GATEWAYS = Number(process.env.BENCH_OPS_GATEWAYS ?? 4);
const CHANGES = Number(process.env.BENCH_OPS_CHANGES ?? 30);
const ROTATIONS = Number(process.env.BENCH_OPS_ROTATIONS ?? 3);
const FAILOVERS = Number(process.env.BENCH_OPS_FAILOVERS ?? 3);
/** A change not served by every instance this long after the Admin API's answer fails the bench. */
const VISIBLE_LIMIT_MS = 30_000;
/** Pause between two polls of one instance's /info, and between two config changes. */
const POLL_GAP_MS = 2;
const CHANGE_GAP_MS = 250;
/** The watchdog's run: its id names the cluster, so every failover reuses it. */
const FAILOVER_RUN = 'rb-database-failover-cluster-main';
const stack = testStack();
const failures: string[] = [];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const pct = (xs: number[], p: number) => { const s = sorted(xs); return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN; };
const max = (xs: number[]) => (xs.length ? Math.max(...xs) : NaN);
const secs = (ms: number) => (Number.isFinite(ms) ? (ms / 1000).toFixed(1) : '—');

type Answer = { status: number; headers: Headers; body: any }; // eslint-disable-line @typescript-eslint/no-explicit-any
/** One Admin API call with a token; a timeout, since the API stalls while the database fails over. */
async function api(token: string, method: string, url: string, body?: unknown, timeoutMs = 10_000): Promise<Answer> {
  const res = await fetch(`${stack.adminUrl}${url}`, {
    method, signal: AbortSignal.timeout(timeoutMs),
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
}

type Step = { name: string; state: string; started_at?: string; ended_at?: string };
type Run = { id: string; status: string; state: string | null; started_at: string; closed_at: string | null; steps: Step[]; figures: Record<string, number>; error: string | null };
const readRun = async (operator: string, id: string): Promise<Run | undefined> => {
  const res = await api(operator, 'GET', `/runs/${id}`, undefined, 3000).catch(() => undefined);
  return res?.status === 200 ? (res.body as Run) : undefined;
};

/**
 * `hello` workflows or triggers still queued (bench/run.sh runs this bench after the trigger path,
 * whose last round leaves tens of thousands) share the worker with the runbooks, so they are
 * drained first, for at most DRAIN_LIMIT_MS. Seconds spent, and whether the backlog was gone by
 * then: if not, the block says its figures were taken beside it.
 */
const DRAIN_LIMIT_MS = 900_000;
async function drainBacklog(): Promise<{ seconds: number; drained: boolean }> {
  const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
  const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
  const t0 = Date.now();
  let drained = false;
  try {
    const jsm = await nc.jetstreamManager();
    while (!drained && Date.now() - t0 < DRAIN_LIMIT_MS) {
      const queued = (await jsm.streams.info(STREAMS.triggers)).state.messages;
      const { count } = await client.workflow.count(`ExecutionStatus = 'Running' AND WorkflowType = 'hello'`);
      drained = queued === 0 && count === 0;
      if (!drained) await sleep(1000);
    }
  } finally {
    await nc.close();
    await client.connection.close();
  }
  return { seconds: (Date.now() - t0) / 1000, drained };
}

// ---- 1. A config change served by every gateway instance --------------------------------------

type Instance = { name: string; statusUrl: string };

/** The version an instance serves for `workspace`, from its status port's /info (what its heartbeats carry). */
async function servedVersion(statusUrl: string, workspace: string): Promise<number | undefined> {
  const res = await fetch(`${statusUrl}/info`, { signal: AbortSignal.timeout(5000) });
  return ((await res.json()) as { config?: { workspaces?: Record<string, number> } }).config?.workspaces?.[workspace];
}

/**
 * Polls one instance until it serves `version`: the ms from `t0` to the arrival of the first
 * answer showing it (an upper bound: the switch happened during that poll or the one before),
 * or undefined after VISIBLE_LIMIT_MS. Poll round trips go to `rtts`.
 */
async function timeToServe(instance: Instance, workspace: string, version: number, t0: number, rtts: number[]): Promise<number | undefined> {
  while (performance.now() - t0 < VISIBLE_LIMIT_MS) {
    const sent = performance.now();
    const served = await servedVersion(instance.statusUrl, workspace).catch(() => undefined);
    const now = performance.now();
    rtts.push(now - sent);
    if (served !== undefined && served >= version) return now - t0;
    await sleep(POLL_GAP_MS);
  }
  return undefined;
}

async function spawnGateways(n: number, procs: RunningProcess[]): Promise<Instance[]> {
  for (let i = 0; i < n; i++) procs.push(await spawnProcess('gateway', stack.env, { FLOWGATE_GATEWAY_GROUP: 'bench' }));
  await Promise.all(procs.map((p, i) => eventually(`bench gateway ${i + 1} ready`, async () => (await readyStatus(p.statusUrl)).code === 200, 120_000, 250)
    .catch((err: unknown) => { throw new Error(`${(err as Error).message}\n${p.output().slice(-2000)}`); })));
  return procs.map((p, i) => ({ name: `bench-${i + 1}`, statusUrl: p.statusUrl }));
}

async function stopGateways(procs: RunningProcess[]): Promise<void> {
  await Promise.all(procs.map(async (p) => {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return;
    p.child.kill('SIGTERM');
    const gone = await Promise.race([p.exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!gone) { p.child.kill('SIGKILL'); await p.exited; }
  }));
}

/** One change through the Admin API (a new service); the version it made and when its 2xx arrived. */
async function makeChange(token: string, i: number): Promise<{ version: number; answeredAt: number; answerMs: number }> {
  const sent = performance.now();
  const res = await fetch(`${stack.adminUrl}/services`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: `bench-svc-${i}`, url: `http://127.0.0.1:9/svc-${i}` }),
  });
  const answeredAt = performance.now();
  const text = await res.text();
  if (res.status !== 201) throw new Error(`POST /services: ${res.status} ${text}`);
  return { version: Number(res.headers.get('x-flowgate-config-version')), answeredAt, answerMs: answeredAt - sent };
}

async function measureConfigChanges() {
  const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'bench-ops');
  const token = t.tokens.admin!;
  const procs: RunningProcess[] = [];
  try {
    console.log(`config: spawning ${GATEWAYS} gateway(s) (group bench)`);
    const instances: Instance[] = [{ name: 'stack', statusUrl: `http://127.0.0.1:${stack.layout.ports.gatewayStatus}` }, ...(await spawnGateways(GATEWAYS, procs))];
    const all = async (i: number, rtts: number[]) => {
      const c = await makeChange(token, i);
      const times = await Promise.all(instances.map((inst) => timeToServe(inst, t.tenant, c.version, c.answeredAt, rtts)));
      return { ...c, times };
    };
    // Warm-up: the workspace's first version reaches every instance; poll connections open.
    const warm = await all(0, []);
    if (warm.times.some((x) => x === undefined)) throw new Error('the warm-up change never reached every instance');
    console.log(`config: ${CHANGES} change(s) on ${instances.length} instance(s)`);
    const samples: number[] = [];
    const slowest: number[] = [];
    const answers: number[] = [];
    const rtts: number[] = [];
    let missed = 0;
    for (let i = 1; i <= CHANGES; i++) {
      const c = await all(i, rtts);
      answers.push(c.answerMs);
      c.times.forEach((ms, k) => {
        if (ms === undefined) { missed++; failures.push(`config version ${c.version} not served by ${instances[k]!.name} within ${VISIBLE_LIMIT_MS / 1000}s`); } else samples.push(ms);
      });
      if (c.times.every((ms) => ms !== undefined)) slowest.push(max(c.times as number[]));
      await sleep(CHANGE_GAP_MS);
    }
    return { instances: instances.length, samples, slowest, answers, rtts, missed, over1s: samples.filter((ms) => ms > 1000).length };
  } finally {
    await stopGateways(procs);
  }
}

// ---- 2. Secret rotation ------------------------------------------------------------------------

type Rotation = { secret: string; toFinishMs: number; totalMs: number };

async function awaitRun(operator: string, id: string, done: (r: Run) => boolean, timeoutMs: number, everyMs: number): Promise<Run | undefined> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const run = await readRun(operator, id);
    if (run && done(run)) return run;
    await sleep(everyMs);
  }
  return undefined;
}

async function rotateOnce(operator: string, secret: SecretDef): Promise<Rotation | undefined> {
  const started = await api(operator, 'POST', '/runbooks/rotate-secret/runs', { params: { secret: secret.path, grace_seconds: 0 } });
  if (started.status !== 201) {
    failures.push(`rotate-secret ${secret.path}: start refused, ${started.status} ${JSON.stringify(started.body)}`);
    return undefined;
  }
  const run = await awaitRun(operator, started.body.id, (r) => r.status !== 'RUNNING', 180_000, 200);
  if (run?.status !== 'COMPLETED') {
    failures.push(`rotate-secret ${secret.path}: run ${run?.status ?? 'still running after 180 s'}${run?.error ? `: ${run.error}` : ''}`);
    return undefined;
  }
  const start = Date.parse(run.started_at);
  const finish = run.steps.find((s) => s.name === 'finish')?.ended_at;
  const end = run.closed_at ?? run.steps.map((s) => s.ended_at ?? '').sort().at(-1)!;
  return { secret: secret.path, toFinishMs: finish ? Date.parse(finish) - start : NaN, totalMs: Date.parse(end) - start };
}

async function measureRotations(operator: string): Promise<Rotation[]> {
  const out: Rotation[] = [];
  for (let r = 1; r <= ROTATIONS; r++) {
    for (const secret of SECRETS) {
      console.log(`rotation ${r}/${ROTATIONS}: ${secret.path}`);
      const rot = await rotateOnce(operator, secret);
      if (rot) out.push(rot);
    }
  }
  return out;
}

// ---- 3. Database failover ----------------------------------------------------------------------

type Failover = { killed: PgServer; status: string; rtoMs: number; rpoBytes?: number; killToClosedMs: number; killToSeenMs: number; rebuildMs?: number };
const other = (s: PgServer): PgServer => (s === 'postgres' ? 'postgres-replica' : 'postgres');

/**
 * Before a kill: the topology names a primary and a standby and nothing fenced, every process
 * follows its epoch, and the watchdog's last probes of the primary succeeded.
 */
async function awaitSteadyDatabase(): Promise<void> {
  const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
  try {
    const kv = await topologyBucket(nc);
    await eventually('a steady database topology before the kill', async () => {
      const t = (await readTopology(kv, 'main'))?.topology;
      if (!t?.primary || t.standbys.length === 0 || t.fenced.length > 0) return false;
      const clients = await databaseClients(nc);
      if (clients.length < 4 || clients.some((c) => c.epoch !== t.epoch)) return false;
      const metrics = await (await fetch(`http://127.0.0.1:${stack.layout.ports.workerStatus}/metrics`)).text();
      return /^database_primary_up\{[^}]*cluster="main"[^}]*\} 1$/m.test(metrics);
    }, 60_000, 500);
  } finally {
    await nc.close();
  }
  await sleep(2000); // two more probes: the watchdog's last WAL position is fresh
}

async function failoverOnce(operator: string): Promise<Failover> {
  const killed: PgServer = readStack(stack.layout.dir).dbPrimary ?? 'postgres';
  await awaitSteadyDatabase();
  const pid = requirePid(stack.layout, killed);
  console.log(`failover: SIGKILL ${killed} (pid ${pid})`);
  const killedAt = Date.now();
  process.kill(-pid, 'SIGKILL');
  // The run id is reused: only a run started after the kill is this failover's.
  const run = await awaitRun(operator, FAILOVER_RUN, (r) => Date.parse(r.started_at) > killedAt && r.status !== 'RUNNING', 120_000, 100);
  const seenAt = Date.now();
  const result: Failover = {
    killed, status: run?.status ?? 'not closed after 120 s', rtoMs: run?.figures.rto_ms ?? NaN, rpoBytes: run?.figures.rpo_lost_wal_bytes,
    killToClosedMs: run?.closed_at ? Date.parse(run.closed_at) - killedAt : NaN, killToSeenMs: seenAt - killedAt,
  };
  if (run?.status !== 'COMPLETED') {
    failures.push(`database failover after killing ${killed}: ${result.status}${run?.error ? `: ${run.error}` : ''}`);
    return result;
  }
  // Reinstate: the killed server back, rebuilt as the new primary's synchronous standby.
  const t0 = Date.now();
  await startServer(readStack(stack.layout.dir), serverSpec(killed));
  await reconcileDatabase(readStack(stack.layout.dir), () => undefined);
  return { ...result, rebuildMs: Date.now() - t0 };
}

/**
 * The stack's worker fails over on its own only with FLOWGATE_DB_FAILOVER=automatic in the
 * environment of `stack up`: read from the worker's own environment, else assumed to be ours.
 */
function workerFailoverMode(): string {
  try {
    const pid = requirePid(stack.layout, 'worker');
    const env = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0');
    return env.find((e) => e.startsWith('FLOWGATE_DB_FAILOVER='))?.slice('FLOWGATE_DB_FAILOVER='.length) ?? 'approval';
  } catch {
    return process.env.FLOWGATE_DB_FAILOVER ?? 'approval';
  }
}

async function measureFailovers(operator: string): Promise<{ mode: string; runs: Failover[] }> {
  const mode = workerFailoverMode();
  if (mode !== 'automatic') {
    // With approval the run waits for an operator, and the Admin API cannot take the approval
    // while the primary is down (it authenticates against it): nothing is killed.
    failures.push(`database failover not measured: the stack's worker runs with FLOWGATE_DB_FAILOVER=${mode}; start the stack with FLOWGATE_DB_FAILOVER=automatic`);
    return { mode, runs: [] };
  }
  const runs: Failover[] = [];
  for (let i = 1; i <= FAILOVERS; i++) {
    const f = await failoverOnce(operator);
    runs.push(f);
    console.log(`failover ${i}/${FAILOVERS}: ${f.status}, RTO ${f.rtoMs} ms, kill → closed ${f.killToClosedMs} ms`);
    if (f.status !== 'COMPLETED') break;
  }
  return { mode, runs };
}

// ---- Report ------------------------------------------------------------------------------------

type ConfigFigures = Awaited<ReturnType<typeof measureConfigChanges>>;

function configMarkdown(c: ConfigFigures, drain: { seconds: number; drained: boolean }): string {
  const row = (label: string, xs: number[]) => `| ${label} | ${xs.length} | **${pct(xs, 50).toFixed(0)}** | ${pct(xs, 99).toFixed(0)} | ${max(xs).toFixed(0)} |`;
  return `## Config change → served by every gateway instance (issue: operations)

${CHANGES} changes (\`POST /services\`, a new service each; one warm-up change before) in one workspace, ${CHANGE_GAP_MS} ms
apart, on ${c.instances} gateway instances (the stack's own and ${c.instances - 1} spawned, group \`bench\`). Per change and
instance: from the arrival of the Admin API's 201 (its \`X-Flowgate-Config-Version\`) to the first answer of that
instance's status port \`/info\` (the versions it serves, what its heartbeats carry) showing the version; each instance
polled on its own, a new request ${POLL_GAP_MS} ms after the previous answer.

| samples | n | p50 ms | p99 ms | max ms |
| --- | ---: | ---: | ---: | ---: |
${row('every (change × instance)', c.samples)}
${row('per change, the last instance to serve it', c.slowest)}

- ${c.instances} instances; the Admin API answered the change in ${pct(c.answers, 50).toFixed(0)} ms (p50); a poll round trip took ${pct(c.rtts, 50).toFixed(1)} ms (p50), ${pct(c.rtts, 99).toFixed(1)} ms (p99): with the ${POLL_GAP_MS} ms gap, what a figure may overstate; ${c.over1s} sample(s) over 1 s (the periodic pull is every ${stack.env.FLOWGATE_CONFIG_REFRESH_MS ?? '30000'} ms), ${c.missed} never served within ${VISIBLE_LIMIT_MS / 1000} s; ${drain.drained ? `queued workflows took ${drain.seconds.toFixed(0)} s to drain before this bench started` : `**queued workflows were still running after ${drain.seconds.toFixed(0)} s, so these figures share the worker with them**`}.
`;
}

function rotationMarkdown(rots: Rotation[]): string {
  const rows = SECRETS.map((s) => {
    const mine = rots.filter((r) => r.secret === s.path);
    const f = mine.map((r) => r.toFinishMs);
    const t = mine.map((r) => r.totalMs);
    return `| \`${s.path}\` (${s.description}) | ${mine.length}/${ROTATIONS} | **${secs(median(f))}** | ${secs(max(f))} | ${secs(median(t))} | ${secs(max(t))} |`;
  });
  return `## Secret rotation

The \`rotate-secret\` runbook through the Admin API (operator token, \`grace_seconds: 0\`, no approval), ${ROTATIONS} time(s)
per secret, one run at a time. From the run's timeline: its start (Temporal's start time) to the end of the \`finish\`
step (the new version is current), and to the run's close (notify, then the previous version revoked).

| secret | completed | start → new secret current, median s | max s | whole run, median s | max s |
| --- | ---: | ---: | ---: | ---: | ---: |
${rows.join('\n')}

- Steps: inspect, create-pending, set-on-target, test, finish, notify, revoke-previous (after a zero grace period); the runs follow one another with no other load.
`;
}

function failoverMarkdown({ mode, runs: fos }: Awaited<ReturnType<typeof measureFailovers>>): string {
  const rows = fos.map((f, i) => `| ${i + 1} | \`${f.killed}\` → \`${other(f.killed)}\` | ${f.status} | **${secs(f.rtoMs)}** | ${secs(f.killToClosedMs)} | ${secs(f.killToSeenMs)} | ${f.rpoBytes ?? '—'} | ${f.rebuildMs === undefined ? '—' : secs(f.rebuildMs)} |`);
  const rtos = fos.filter((f) => f.status === 'COMPLETED').map((f) => f.rtoMs);
  return `## Database failover RTO

The primary PostgreSQL SIGKILLed (its process group; no shutdown, no checkpoint) on an idle platform; the worker's watchdog
(a probe every ${stack.env.FLOWGATE_DB_PROBE_MS ?? '1000'} ms, ${stack.env.FLOWGATE_DB_PROBE_FAILURES ?? '3'} failures) starts \`database-failover\` with automatic approval
(\`FLOWGATE_DB_FAILOVER=automatic\`): fence, promote the streaming standby, repoint every process, verify a write. RTO is the
run's \`rto_ms\` (the watchdog's first failed probe → the verified write); beside it the bench's own times from the kill to
the run's close (Temporal's close time) and to the bench seeing COMPLETED (\`GET /runs/${FAILOVER_RUN}\` every 100 ms).
After each, the killed server is started again and rebuilt as the new primary's synchronous standby (\`reconcileDatabase\`,
what \`stack up\` does), so the next failover goes the other way.

| # | killed → promoted | run | RTO s | kill → run closed s | kill → COMPLETED seen s | lost WAL bytes (RPO) | rebuild as standby s |
| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |
${(rows.length ? rows : ['| — | — | not measured | — | — | — | — | — |']).join('\n')}

- ${mode === 'automatic'
    ? `Median RTO **${secs(median(rtos))} s** over ${rtos.length} failover(s) (goal: under 30 s with automatic approval); max ${secs(max(rtos))} s.`
    : `**Not measured**: the stack's worker runs with \`FLOWGATE_DB_FAILOVER=${mode}\` (start the stack with \`automatic\`); nothing was killed.`}
`;
}

async function main() {
  // Every token up front: after the first failover the database URLs of stack.env point at a standby.
  const pool = createPool(stack.env.FLOWGATE_DATABASE_URL!, 1);
  const operator = (await issueAdminToken(pool, null, `bench-ops-operator-${Date.now()}`, 'operator')).token;
  await pool.end();

  const drain = await drainBacklog();
  console.log(drain.drained ? `drained the backlog in ${drain.seconds.toFixed(0)}s` : `the backlog was not drained after ${drain.seconds.toFixed(0)}s`);
  const config = await measureConfigChanges();
  const rotations = await measureRotations(operator);
  const failovers = await measureFailovers(operator);

  const md = [configMarkdown(config, drain), rotationMarkdown(rotations), failoverMarkdown(failovers)].join('\n');
  await writeSection('operations', md);
  console.log(md);
  if (failures.length) {
    console.error(`operations bench failed:\n  ${failures.join('\n  ')}`);
    process.exitCode = 1;
  }
}

main().then(() => process.exit(process.exitCode ?? 0), (err) => {
  console.error(err);
  process.exit(1);
});
