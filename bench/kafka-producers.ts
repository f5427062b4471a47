// CPU per audit record for the two Kafka clients under KafkaBatcher, against the stack's broker:
// kafkajs (most processes) and @platformatic/kafka (the gateway's producer thread). Records like
// the gateway's audit entries, already serialized, are handed to the batcher at a steady rate (as
// a gateway under load does) with the gateway's linger and batch size; the process's CPU time
// (every thread: the garbage collector's too) over the window is divided by the records sent.
// A pacing window with no producer gives the loop's own cost, subtracted from both. Rounds of
// the three alternate, so all see the same machine. Writes its block of bench/RESULTS.md.
import { createKafka, ensureTopics, TOPICS } from '../lib/kafka';
import { KafkaBatcher, kafkajsTransport, type TransportFactory } from '../lib/kafka-batcher';
import { platformaticTransport } from '../lib/kafka-platformatic';
import { createLogger } from '../lib/logger';
import { testStack } from '../tests/helpers/stack';
import { writeSection } from './results';

const RATE = Number(process.env.BENCH_KAFKA_RATE ?? 2000);
const SECONDS = Number(process.env.BENCH_KAFKA_SECONDS ?? 8);
const ROUNDS = Number(process.env.BENCH_KAFKA_ROUNDS ?? 2);
/** As the gateway's producer thread (gateway/main.ts). */
const LINGER_MS = 50;
const MAX_BATCH = 5000;
const TICK_MS = 10;

const stack = testStack();
const brokers = stack.env.FLOWGATE_KAFKA_BROKERS!.split(',');
const logger = createLogger('bench', 'warn');

/** An audit entry as the gateway writes it (lib/kafka-thread.ts serializes on the main thread). */
function entry(i: number): string {
  return JSON.stringify({
    type: 'api.request', trace_id: i.toString(16).padStart(32, '0'), at: new Date().toISOString(), request_id: `bench-${i}`,
    tenant: `ws-${i % 7}`, consumer: 'c_0001', user: 'bench', auth_method: 'api_key', method: 'GET', route: '/v1/orders/:id',
    path: `/v1/orders/${i}`, status: 200, latency_ms: 0.812, client_ip: '127.0.0.1', upstream: 'orders 127.0.0.1:9000',
  });
}

/** One paced window; `send` undefined paces without a producer. Returns the records handed over. */
async function window(records: string[], seconds: number, send?: (key: string, value: string) => void): Promise<number> {
  const perTick = (RATE * TICK_MS) / 1000;
  const ticks = (seconds * 1000) / TICK_MS;
  let n = 0;
  await new Promise<void>((resolve) => {
    let tick = 0;
    const timer = setInterval(() => {
      for (let i = 0; i < perTick; i++, n++) send?.(`ws-${n % 7}`, records[n]!);
      if (++tick >= ticks) {
        clearInterval(timer);
        resolve();
      }
    }, TICK_MS);
  });
  return n;
}

/** The process's CPU µs per record over one window through `transport` (none: pacing only), until Kafka acknowledged all. */
async function measure(records: string[], transport: TransportFactory | undefined, seconds = SECONDS): Promise<number> {
  const batcher = transport ? new KafkaBatcher(transport, logger, { lingerMs: LINGER_MS, maxBatch: MAX_BATCH }) : undefined;
  if (batcher) await batcher.send(TOPICS.auditTrail, 'warm-up', { type: 'bench.warm-up' });
  const before = process.cpuUsage();
  const n = await window(records, seconds, batcher && ((key, value) => void batcher.sendJson(TOPICS.auditTrail, key, value)));
  while (batcher && batcher.queued > 0) await new Promise((r) => setTimeout(r, 5));
  const used = process.cpuUsage(before);
  await batcher?.close();
  return (used.user + used.system) / n;
}

async function main() {
  const kafka = createKafka(brokers, 'bench-kafka');
  await ensureTopics(kafka);
  const records = Array.from({ length: RATE * SECONDS + RATE }, (_, i) => entry(i));
  const kinds: [string, TransportFactory | undefined][] = [
    ['pacing only', undefined],
    ['kafkajs', kafkajsTransport(kafka)],
    ['@platformatic/kafka', platformaticTransport(brokers, 'bench-kafka-p')],
  ];
  // A first round of each warms the clients (connections, metadata, JIT) and is not counted.
  for (const [, t] of kinds) await measure(records, t, 1);
  const us = new Map<string, number[]>(kinds.map(([k]) => [k, []]));
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? kinds : [...kinds].reverse();
    for (const [name, t] of order) us.get(name)!.push(await measure(records, t));
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const base = mean(us.get('pacing only')!);
  const kjs = mean(us.get('kafkajs')!) - base;
  const plat = mean(us.get('@platformatic/kafka')!) - base;
  const fmt = (x: number) => x.toFixed(1);
  const md = `## Kafka producers (issue: gateway performance — the audit trail's cost)

Audit entries (about 360 bytes of JSON, 7 tenant keys) handed to \`KafkaBatcher\` at ${RATE} records/s for ${SECONDS} s per window,
linger ${LINGER_MS} ms and batches of up to ${MAX_BATCH} as in the gateway's producer thread, acks=all, against the stack's
single Kafka broker. CPU is the whole process's (every thread, the garbage collector's too) over the window, per
record; "pacing only" is the same loop with no producer, subtracted below. ${ROUNDS} rounds, alternating order.

| client | CPU per record, µs (rounds) | less pacing, µs |
| --- | --- | ---: |
| pacing only | ${us.get('pacing only')!.map(fmt).join(', ')} | — |
| kafkajs 2.2.4 | ${us.get('kafkajs')!.map(fmt).join(', ')} | ${fmt(kjs)} |
| @platformatic/kafka 1.35.0 | ${us.get('@platformatic/kafka')!.map(fmt).join(', ')} | ${fmt(plat)} |

- @platformatic/kafka costs **${(plat / kjs).toFixed(2)}×** kafkajs's CPU per record. The gateway's producer thread uses it; at one audit
  entry per request that is about ${fmt(kjs - plat)} µs of CPU saved per request on the same cores as the gateway.
- Reproduce: \`FLOWGATE_STACK_DIR=DIR node --import tsx bench/kafka-producers.ts\` (part of \`make bench\`), on the
  same stack as the other blocks of a \`make bench\` run; versions are the ones package-lock.json pins.
`;
  await writeSection('kafka-producers', md);
  console.log(md);
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
