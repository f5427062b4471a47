// The circuit breaker's added latency per call (goal: under 0.1 ms at p50), in process: the
// same action called directly and through BreakerRegistry.fire (no NATS, no metrics registry,
// no logger), first an action that is already resolved (the breaker's own cost), then a real
// loopback HTTP request to a tiny node:http server (the cost next to a real call). Batches of
// the two are interleaved so both see the same machine. Writes its block of bench/RESULTS.md.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { BreakerRegistry } from '../lib/third-party/breakers';
import { thirdPartyService } from '../lib/third-party/services';
import { writeSection } from './results';

const WARMUP = Number(process.env.BENCH_BREAKER_WARMUP ?? 20_000);
const BATCH = 1000;
const BATCHES = Number(process.env.BENCH_BREAKER_BATCHES ?? 300);
const HTTP_WARMUP = 500;
const HTTP_BATCH = 100;
const HTTP_BATCHES = Number(process.env.BENCH_BREAKER_HTTP_BATCHES ?? 100);

type Action<T> = () => Promise<T>;
const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

/** Per-call µs of `batches` batches of `size` sequential awaited calls, direct and through the breaker, interleaved. */
async function measure<T>(action: Action<T>, fire: (a: Action<T>) => Promise<T>, warmup: number, size: number, batches: number) {
  for (let i = 0; i < warmup; i++) {
    await action();
    await fire(action);
  }
  const direct: number[] = [];
  const breaker: number[] = [];
  const batch = async (call: () => Promise<T>) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < size; i++) await call();
    return Number(process.hrtime.bigint() - t0) / 1000 / size;
  };
  for (let b = 0; b < batches; b++) {
    // Alternate which goes first, so neither always follows the other's garbage.
    if (b % 2 === 0) {
      direct.push(await batch(action));
      breaker.push(await batch(() => fire(action)));
    } else {
      breaker.push(await batch(() => fire(action)));
      direct.push(await batch(action));
    }
  }
  direct.sort((x, y) => x - y);
  breaker.sort((x, y) => x - y);
  return {
    direct: { p50: pct(direct, 50), p99: pct(direct, 99) },
    breaker: { p50: pct(breaker, 50), p99: pct(breaker, 99) },
  };
}

const us = (n: number) => (n < 10 ? n.toFixed(3) : n.toFixed(1));

async function main() {
  const svc = thirdPartyService.parse({ name: 'bench', base_url: 'http://127.0.0.1:1' });
  const breakers = new BreakerRegistry([svc], { instance: 'bench' });

  // The breaker's own cost: an action that returns an already-resolved promise.
  const resolved: Action<number> = async () => 1;
  console.log(`breaker vs direct, resolved action: ${WARMUP} warm-up, ${BATCHES} batches of ${BATCH}`);
  const cpu = await measure(resolved, (a) => breakers.fire(svc.name, a), WARMUP, BATCH, BATCHES);

  // Next to a real call: a loopback HTTP request (fetch, keep-alive) to a server in this process.
  const server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.end('ok');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  const request: Action<string> = async () => {
    const res = await fetch(url);
    return res.text();
  };
  console.log(`breaker vs direct, loopback HTTP: ${HTTP_WARMUP} warm-up, ${HTTP_BATCHES} batches of ${HTTP_BATCH}`);
  const http = await measure(request, (a) => breakers.fire(svc.name, a), HTTP_WARMUP, HTTP_BATCH, HTTP_BATCHES);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  breakers.shutdown();

  const added = cpu.breaker.p50 - cpu.direct.p50;
  const addedHttp = http.breaker.p50 - http.direct.p50;
  const md = `## Circuit breaker overhead (issue: third-party calls)

\`BreakerRegistry.fire(service, action)\` (opossum, closed breaker, the service's default settings; no NATS,
metrics registry or logger) against calling \`action()\` directly, in one process. Per-call time is a batch of
sequential awaited calls divided by its size; p50/p99 are over batches; direct and breaker batches are interleaved.

| action | calls | direct p50 µs | direct p99 µs | through the breaker p50 µs | p99 µs | added at p50 µs |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| already resolved (\`async () => 1\`) | ${WARMUP} warm-up + ${BATCHES} × ${BATCH} | ${us(cpu.direct.p50)} | ${us(cpu.direct.p99)} | ${us(cpu.breaker.p50)} | ${us(cpu.breaker.p99)} | **${us(added)}** |
| loopback HTTP GET (\`fetch\`, keep-alive, \`node:http\` server in the same process) | ${HTTP_WARMUP} warm-up + ${HTTP_BATCHES} × ${HTTP_BATCH} | ${us(http.direct.p50)} | ${us(http.direct.p99)} | ${us(http.breaker.p50)} | ${us(http.breaker.p99)} | ${us(addedHttp)} |

- Added latency per call at p50: **${us(added)} µs = ${(added / 1000).toFixed(4)} ms** (goal < 0.1 ms: ${added < 100 ? 'met' : 'NOT met'}).
- Next to a real loopback request of ${us(http.direct.p50)} µs at p50, the breaker's own cost is ${((100 * added) / http.direct.p50).toFixed(1)} % of it; the
  HTTP rows themselves differ by ${us(addedHttp)} µs at p50 (${((100 * addedHttp) / http.direct.p50).toFixed(1)} %), which includes the noise of real requests
  on a shared machine.
`;
  await writeSection('breaker', md);
  console.log(md);
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
