// lib/jetstream-worker.ts against the stack's NATS, on a stream of its own: what counts towards
// dead-lettering a message, and what does not.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { AckPolicy, connect, nanos, RetentionPolicy, type JsMsg, type NatsConnection } from 'nats';
import { DependencyUnavailableError, MessageCounts, startJetStreamWorker } from '../../lib/jetstream-worker';
import { KV_BUCKETS } from '../../lib/nats';
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

/**
 * Runs a worker whose handler answers each delivery of the one message published with
 * `outcome(n)`; `publish: false` for a second worker on the same durable.
 */
async function run(name: string, outcome: (delivery: number) => 'ok' | 'outage' | 'error', opts: { publish?: boolean; ackWaitMs?: number; ledgerBucket?: string } = {}) {
  const deliveries: number[] = [];
  const handled: string[] = [];
  const deadLettered: string[] = [];
  const worker = await startJetStreamWorker({
    js: nc.jetstream(), jsm: await nc.jetstreamManager(), stream, durable: name, concurrency: 4, maxDeliver: 3, maxLost: 3, ackWaitMs: opts.ackWaitMs, ledgerBucket: opts.ledgerBucket, logger,
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
  if (opts.publish !== false) await nc.jetstream().publish(`${stream}.${name}`, 'work');
  return { deliveries, handled, deadLettered, stop: worker.stop };
}

/** The ledger's record of the one message of `name`, if any. */
async function ledgerOf(name: string) {
  const kv = await nc.jetstream().views.kv(KV_BUCKETS.deliveries.name);
  const seq = (await (await nc.jetstreamManager()).streams.getMessage(stream, { last_by_subj: `${stream}.${name}` })).seq;
  const e = await kv.get(`${stream}.${name}.${seq}`);
  return e?.operation === 'PUT' ? e.json<{ answered: number; failed: number }>() : undefined;
}

/** A delivery ledger bucket of its own whose every write is refused (an entry is larger than 1 byte); reads still answer, with nothing. */
async function writeRefusingLedger() {
  const bucket = `fg_jsw_test_${randomUUID().slice(0, 8)}`;
  await nc.jetstream().views.kv(bucket, { history: 1 });
  const jsm = await nc.jetstreamManager();
  const info = await jsm.streams.info(`KV_${bucket}`);
  await jsm.streams.update(`KV_${bucket}`, { ...info.config, max_msg_size: 1 });
  return { bucket, remove: () => jsm.streams.delete(`KV_${bucket}`).then(() => undefined, () => undefined) };
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
      // Handled: its ledger entry is gone.
      await eventually('the ledger entry removed', async () => (await ledgerOf('outage')) === undefined, 5000);
    } finally {
      await w.stop();
    }
  });

  test('ordinary failures are counted across processes: a second worker takes over the count', async () => {
    const first = await run('handover', () => 'error');
    await eventually('two failures in the first worker', () => first.deliveries.length === 2, 10_000, 20);
    await first.stop();
    assert.deepEqual(await ledgerOf('handover'), { answered: 2, failed: 2 });
    const second = await run('handover', () => 'error', { publish: false });
    try {
      await eventually('dead-lettered by the second worker', async () => second.deadLettered.length === 1, 30_000);
      assert.match(second.deadLettered[0]!, /gave up after 3 failed deliveries/);
      assert.equal(second.deliveries.length, 1, 'one failure there was the third in all');
    } finally {
      await second.stop();
    }
  });

  test('a message whose consumers die holding it is dead-lettered once maxLost deliveries went unanswered, unhandled', async () => {
    const name = 'killer';
    await (await nc.jetstreamManager()).consumers.add(stream, { durable_name: name, ack_policy: AckPolicy.Explicit, ack_wait: nanos(300), filter_subject: `${stream}.${name}` });
    await nc.jetstream().publish(`${stream}.${name}`, 'work');
    // Three consumers that take the message and die before answering: the ack wait runs out each time.
    const consumer = await nc.jetstream().consumers.get(stream, name);
    for (let i = 1; i <= 3; i++) {
      const m = await consumer.next({ expires: 5000 });
      assert.equal(m?.info.deliveryCount, i);
      await new Promise((r) => setTimeout(r, 400));
    }
    const w = await run(name, () => 'ok', { publish: false, ackWaitMs: 300 });
    try {
      await eventually('dead-lettered', async () => w.deadLettered.length === 1, 10_000);
      assert.match(w.deadLettered[0]!, /delivered 4 times and 3 of them never answered/);
      assert.deepEqual(w.handled, [], 'not handled a fourth time');
    } finally {
      await w.stop();
    }
  });

  test("answers the ledger could not record are not deliveries nobody answered: an outage with NATS KV refusing writes dead-letters nothing", async () => {
    const { bucket, remove } = await writeRefusingLedger();
    // Six deliveries while the dependency is away (maxLost is 3), then it is back.
    const w = await run('kvdown', (n) => (n <= 6 ? 'outage' : 'ok'), { ledgerBucket: bucket });
    try {
      await eventually('handled once the dependency is back', async () => w.handled.length === 1 || w.deadLettered.length > 0, 30_000);
      assert.deepEqual(w.deadLettered, [], 'not taken for a message that kills its consumer');
      assert.deepEqual(w.deliveries, [1, 2, 3, 4, 5, 6, 7]);
    } finally {
      await w.stop();
      await remove();
    }
  });

  test('the same with two workers on one durable: neither takes the answers the other could not record for lost ones', async () => {
    const { bucket, remove } = await writeRefusingLedger();
    const outcome = (n: number): 'outage' | 'ok' => (n <= 8 ? 'outage' : 'ok');
    const a = await run('kvdown2', outcome, { ledgerBucket: bucket });
    const b = await run('kvdown2', outcome, { ledgerBucket: bucket, publish: false });
    try {
      await eventually('handled once the dependency is back', async () => a.handled.length + b.handled.length === 1 || a.deadLettered.length + b.deadLettered.length > 0, 40_000);
      assert.deepEqual([...a.deadLettered, ...b.deadLettered], []);
      assert.deepEqual([...a.deliveries, ...b.deliveries].sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    } finally {
      await a.stop();
      await b.stop();
      await remove();
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

test('message counts are per message, forgotten on success, and bounded', () => {
  const counts = new MessageCounts(3);
  assert.equal(counts.add(10), 1);
  assert.equal(counts.add(10), 2);
  assert.equal(counts.get(10), 2);
  assert.equal(counts.add(11), 1);
  counts.forget(10);
  assert.equal(counts.get(10), 0);
  assert.equal(counts.add(10), 1);
  counts.add(12);
  counts.add(13);
  assert.equal(counts.size, 3);
  assert.equal(counts.add(11), 1, 'the oldest entry went first');
});
