// lib/jetstream-worker.ts against the stack's NATS, on a stream of its own: what counts towards
// dead-lettering a message, and what does not.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { connect, RetentionPolicy, type JsMsg, type NatsConnection } from 'nats';
import { DependencyUnavailableError, FailureCounts, startJetStreamWorker } from '../../lib/jetstream-worker';
import { createLogger } from '../../lib/logger';
import { eventually, testStack } from '../helpers/stack';

const stack = testStack();
const logger = createLogger('jetstream-worker-test', 'error');
let nc: NatsConnection;
const stream = `FG_JSW_TEST_${randomUUID().slice(0, 8).toUpperCase()}`;

before(async () => {
  nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
  await (await nc.jetstreamManager()).streams.add({ name: stream, subjects: [`${stream}.>`], retention: RetentionPolicy.Limits });
});
after(async () => {
  await (await nc.jetstreamManager()).streams.delete(stream).catch(() => undefined);
  await nc.close();
});

/** Runs a worker whose handler answers each delivery of the one message published with `outcome(n)`. */
async function run(name: string, outcome: (delivery: number) => 'ok' | 'outage' | 'error') {
  const deliveries: number[] = [];
  const handled: string[] = [];
  const deadLettered: string[] = [];
  const worker = await startJetStreamWorker({
    js: nc.jetstream(), jsm: await nc.jetstreamManager(), stream, durable: name, concurrency: 4, maxDeliver: 3, logger,
    handle: async (m: JsMsg) => {
      if (m.subject !== `${stream}.${name}`) return;
      const n = m.info.deliveryCount;
      deliveries.push(n);
      const o = outcome(n);
      if (o === 'outage') throw new DependencyUnavailableError('temporal away');
      if (o === 'error') throw new Error(`failed delivery ${n}`);
      handled.push(m.string());
    },
    deadLetter: async (_m, reason) => { deadLettered.push(reason); },
  });
  await nc.jetstream().publish(`${stream}.${name}`, 'work');
  return { deliveries, handled, deadLettered, stop: worker.stop };
}

describe('jetstream worker', () => {
  test('retries during an outage do not count: the first ordinary error after a long one is retried, not dead-lettered', async () => {
    // Five deliveries while the dependency is away, one ordinary error, then success. maxDeliver is 3.
    const w = await run('outage', (n) => (n <= 5 ? 'outage' : n === 6 ? 'error' : 'ok'));
    try {
      await eventually('the message is handled', async () => w.handled.length === 1 || w.deadLettered.length > 0, 30_000);
      assert.deepEqual(w.deadLettered, [], 'not dead-lettered');
      assert.deepEqual(w.handled, ['work']);
      assert.deepEqual(w.deliveries, [1, 2, 3, 4, 5, 6, 7]);
    } finally {
      await w.stop();
    }
  });

  test('ordinary errors still dead-letter after maxDeliver of them, outage retries in between or not', async () => {
    const w = await run('failing', (n) => (n === 2 ? 'outage' : 'error'));
    try {
      await eventually('the message is dead-lettered', async () => w.deadLettered.length === 1, 30_000);
      assert.match(w.deadLettered[0]!, /gave up after 3 failed deliveries: failed delivery 4/);
      assert.deepEqual(w.deliveries, [1, 2, 3, 4]);
      assert.deepEqual(w.handled, []);
    } finally {
      await w.stop();
    }
  });
});

test('failure counts are per message, forgotten on success, and bounded', () => {
  const counts = new FailureCounts(3);
  assert.equal(counts.failed(10), 1);
  assert.equal(counts.failed(10), 2);
  assert.equal(counts.failed(11), 1);
  counts.forget(10);
  assert.equal(counts.failed(10), 1);
  counts.failed(12);
  counts.failed(13);
  assert.equal(counts.size, 3);
  assert.equal(counts.failed(11), 1, 'the oldest entry went first');
});
