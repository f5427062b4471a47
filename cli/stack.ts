import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ensureDemoTenant } from '../stack/provision';
import { APPS, INFRA } from '../stack/servers';
import { REPO_ROOT } from '../stack/paths';
import { down, logPath, openStack, processEnv, readStack, status, StackError, up } from '../stack/stack';

/** The local stack of `make up` lives in .flowgate/ (data kept until `make reset`). */
export const DEV_STACK_DIR = path.join(REPO_ROOT, '.flowgate', 'stack');
const LOCAL_ENV = path.join(REPO_ROOT, '.flowgate', 'local.env');

/** A stack lives in a directory with its stack.json. */
const hasStack = (dir: string) => existsSync(path.join(dir, 'stack.json'));
const notStarted = (dir: string) => (dir === DEV_STACK_DIR ? 'not started (make up)' : `no stack in ${dir} (flowgate stack up --dir ${dir})`);

const dotenv = (vars: Record<string, string>) =>
  Object.entries(vars).map(([k, v]) => `${k}=${v}`).join('\n') + '\n';

export async function stackCommand(args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  const dirFlag = rest.indexOf('--dir');
  const dirArg = dirFlag >= 0 ? rest[dirFlag + 1] : undefined;
  if (dirFlag >= 0 && (!dirArg || dirArg.startsWith('--'))) {
    console.error('flowgate stack: --dir needs a directory');
    return 2;
  }
  const dir = dirArg !== undefined ? path.resolve(dirArg) : DEV_STACK_DIR;
  const profile = rest.includes('--test') ? 'test' : 'dev';
  const withApps = !rest.includes('--infra-only');
  switch (sub) {
    case 'up': {
      const t0 = Date.now();
      const l = await openStack(dir, profile);
      try {
        await up(l, { apps: withApps, onProgress: (m) => console.log(`  ${m}`) });
      } catch (err) {
        if (err instanceof StackError) {
          console.error(`flowgate stack up failed:\n${err.message}`);
          return 1;
        }
        throw err;
      }
      // It holds the stack's execution-id secret: for its owner only.
      await writeFile(path.join(dir, 'stack.env'), dotenv(processEnv(l)), { mode: 0o600 });
      if (profile === 'test') {
        console.log(`test stack ready in ${((Date.now() - t0) / 1000).toFixed(1)}s: ${dir}`);
        return 0;
      }
      const creds = await ensureDemoTenant(l);
      await writeFile(LOCAL_ENV, dotenv(creds), { mode: 0o600 });
      const p = l.ports;
      const [primaryPort, standbyPort] = l.dbPrimary === 'postgres-replica' ? [p.postgresReplica, p.postgres] : [p.postgres, p.postgresReplica];
      console.log(`
Flowgate is up (${((Date.now() - t0) / 1000).toFixed(1)}s). What runs where, all on 127.0.0.1:
  gateway        :${p.gateway}   (status :${p.gatewayStatus}/metrics /healthz /readyz)
  admin          :${p.admin}   (status :${p.adminStatus})
  triggers       status :${p.triggersStatus}
  worker         status :${p.workerStatus}
  temporal       :${p.temporal}   UI http://127.0.0.1:${p.temporalUi}   HTTP API :${p.temporalHttp}
  nats           :${p.nats}   (JetStream, monitor :${p.natsMonitor})
  postgres       :${primaryPort} primary, :${standbyPort} standby   kafka :${p.kafka}   openbao :${p.openbao}   redis :${p.redis}
  prometheus     http://127.0.0.1:${p.prometheus}   (API; alerts /api/v1/alerts, rules /api/v1/rules)

Demo credentials (also in .flowgate/local.env):
  tenant ${creds.FLOWGATE_TENANT}   api key ${creds.FLOWGATE_API_KEY}

Start the demo workflow, then read its status:
  curl -s -X POST ${creds.FLOWGATE_GATEWAY_URL}/api/workflows/hello -H "Authorization: Bearer ${creds.FLOWGATE_API_KEY}" -H 'content-type: application/json' -d '{"name":"world"}'
  curl -s ${creds.FLOWGATE_GATEWAY_URL}/api/workflows/<execution_id> -H "Authorization: Bearer ${creds.FLOWGATE_API_KEY}"

Logs: make logs    State: make status    Stop: make down    Wipe data: make reset`);
      return 0;
    }
    case 'down': {
      if (!hasStack(dir)) return 0;
      await down(readStack(dir));
      console.log('stopped');
      return 0;
    }
    case 'reset': {
      // Only a stack's own directory is removed: never one that merely was named (`--dir ""` is the
      // current directory, `--dir ~` the home directory).
      if (existsSync(dir) && !hasStack(dir)) {
        console.error(`flowgate stack reset: ${dir} is not a stack directory (no stack.json); nothing removed`);
        return 2;
      }
      if (hasStack(dir)) await down(readStack(dir));
      await rm(dir, { recursive: true, force: true });
      if (dir === DEV_STACK_DIR) await rm(LOCAL_ENV, { force: true }); // the demo credentials belong to the dev stack
      console.log(`removed ${dir}`);
      return 0;
    }
    case 'status': {
      if (!hasStack(dir)) {
        console.log(notStarted(dir));
        return 1;
      }
      const rows = await status(readStack(dir));
      for (const r of rows) console.log(`${r.name.padEnd(10)} ${r.running ? `running pid ${r.pid}` : 'stopped'}${r.running ? (r.ready ? ', ready' : ', NOT READY') : ''}${r.url ? ` ${r.url}` : ''}`);
      return rows.every((r) => r.ready) ? 0 : 1;
    }
    case 'logs': {
      if (!hasStack(dir)) {
        console.error(notStarted(dir));
        return 1;
      }
      const l = readStack(dir);
      const names = rest.filter((a, i) => !a.startsWith('--') && !(dirFlag >= 0 && i === dirFlag + 1));
      const files = (names.length ? names : [...APPS, ...INFRA].map((s) => s.name)).map((n) => logPath(l, n)).filter(existsSync);
      if (!files.length) {
        console.error(`no log for ${names.join(', ') || 'any server'} (servers: ${[...INFRA, ...APPS].map((s) => s.name).join(', ')})`);
        return 2;
      }
      const child = spawn('tail', ['-n', '20', '-F', ...files], { stdio: 'inherit' });
      return new Promise((resolve) => child.on('exit', (code) => resolve(code ?? 0)));
    }
    case 'env': {
      if (!hasStack(dir)) {
        console.error(notStarted(dir));
        return 1;
      }
      process.stdout.write(dotenv(processEnv(readStack(dir))));
      return 0;
    }
    default:
      console.error('usage: flowgate stack up|down|status|logs|reset|env [--dir DIR] [--test] [--infra-only]');
      return 2;
  }
}
