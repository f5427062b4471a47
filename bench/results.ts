// bench/RESULTS.md is shared by every bench: each owns one block between
// `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, which starts with the line of its own run
// (date, machine, command): a bench run alone does not restamp the others' figures.
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');

/** The median of `xs` (the mean of the middle two for an even count); NaN for none. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length === 0 ? NaN : s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * The command that produced the figures, with the BENCH_* variables it ran with: `make bench`
 * (bench/run.sh sets FLOWGATE_BENCH_VIA_MAKE) or the one bench script run alone.
 */
function command(): string {
  const vars = Object.entries(process.env)
    .filter(([k]) => k.startsWith('BENCH_'))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`);
  const script = path.relative(path.join(__dirname, '..'), process.argv[1] ?? 'bench');
  return [...vars, process.env.FLOWGATE_BENCH_VIA_MAKE ? 'make bench' : `node --import tsx ${script}`].join(' ');
}

/** The line each block starts with: when, on what and by which command its figures were made. */
function runLine(): string {
  const cpus = os.cpus();
  const cpu = cpus[0]?.model ?? 'unknown CPU';
  return `_Run ${new Date().toISOString()} on ${cpus.length} × ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${os.type()} ${os.release()}; command: \`${command()}\`._`;
}

const HEADER = `# Benchmark results

\`make bench\` runs bench/run.sh → bench/breaker.ts, bench/gateway.ts, bench/kafka-producers.ts, bench/payments.ts,
bench/trigger-path.ts, bench/operations.ts, one run each; each block below starts with the date, machine and
command of its own run. Everything — Temporal dev server (SQLite), NATS, PostgreSQL, Kafka, OpenBao, Redis, the
sandbox payment provider, Flowgate's four processes and the load generator — shares the machine's cores, so
figures are noisy; ratios are from one run.

`;

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Replaces the block of `name` in bench/RESULTS.md (or appends it), its run line under its title.
 * Whatever else lies between the blocks is kept as it is.
 */
export async function writeSection(name: string, markdown: string, file = RESULTS_FILE): Promise<void> {
  if (!/^[a-z0-9-]+$/.test(name)) throw new Error(`bench section name ${name}: lower-case letters, digits and dashes`);
  let text = '';
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Everything before the first block is the header; a file without blocks is all header (replaced).
  const first = text.search(/<!-- bench:[a-z0-9-]+ -->/);
  let body = first < 0 ? '' : text.slice(first);
  const [title, ...rest] = markdown.trim().split('\n');
  const block = `<!-- bench:${name} -->\n${[title, '', runLine(), ...rest].join('\n')}\n<!-- /bench:${name} -->`;
  const existing = new RegExp(`<!-- bench:${escape(name)} -->[\\s\\S]*?<!-- /bench:${escape(name)} -->`);
  if (existing.test(body)) body = body.replace(existing, () => block);
  else body = body ? `${body.trimEnd()}\n\n${block}` : block;
  await writeFile(file, `${HEADER}${body.trimEnd()}\n`);
}
