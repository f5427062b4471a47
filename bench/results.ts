// bench/RESULTS.md is shared by every bench: each owns one block between
// `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and the header above the first block
// (machine, date, command) is rewritten by whichever bench writes last.
import { readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

export const RESULTS_FILE = path.join(__dirname, 'RESULTS.md');

/** The command that produced the figures: `make bench` with the BENCH_* variables it ran with. */
function command(): string {
  const vars = Object.entries(process.env)
    .filter(([k]) => k.startsWith('BENCH_'))
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`);
  return [...vars, 'make bench'].join(' ');
}

export function header(): string {
  const cpus = os.cpus();
  const cpu = cpus[0]?.model ?? 'unknown CPU';
  return `# Benchmark results

Machine: ${cpus.length} × ${cpu}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, ${os.type()} ${os.release()}
Date: ${new Date().toISOString()}
Command: \`${command()}\` (bench/run.sh → bench/breaker.ts, bench/gateway.ts, bench/kafka-producers.ts, bench/payments.ts, bench/trigger-path.ts, bench/operations.ts; one run each; a block names its own command when it was run alone)
Everything — Temporal dev server (SQLite), NATS, PostgreSQL, Kafka, OpenBao, Redis, the sandbox payment
provider, Flowgate's four processes and the load generator — shares the same ${cpus.length} cores, so figures
are noisy; ratios are from one run.

`;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/**
 * Replaces the block of `name` in bench/RESULTS.md (or appends it) and refreshes the header.
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
  const block = `<!-- bench:${name} -->\n${markdown.trim()}\n<!-- /bench:${name} -->`;
  const existing = new RegExp(`<!-- bench:${escape(name)} -->[\\s\\S]*?<!-- /bench:${escape(name)} -->`);
  if (existing.test(body)) body = body.replace(existing, () => block);
  else body = body ? `${body.trimEnd()}\n\n${block}` : block;
  await writeFile(file, `${header()}${body.trimEnd()}\n`);
}
