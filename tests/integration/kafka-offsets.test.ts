// pinUncommittedPartitions against the real broker. The events consumer subscribes with
// `fromBeginning: false`; a partition its group has no offset for is read from the end, so a record
// landing there while no member runs would be skipped. Pinned first, it is read on the next start.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import type { Consumer } from 'kafkajs';
import { createKafka, pinUncommittedPartitions } from '../../lib/kafka';
import { eventually, testStack } from '../helpers/stack';

const stack = testStack();
const brokers = stack.env.FLOWGATE_KAFKA_BROKERS!.split(',');
const kafka = createKafka(brokers, 'offsets-test');
const admin = kafka.admin();
const topic = `offsets-${randomUUID()}`;
const PARTITIONS = 3;
const producer = kafka.producer();

before(async () => {
  await Promise.all([admin.connect(), producer.connect()]);
  await admin.createTopics({ topics: [{ topic, numPartitions: PARTITIONS, replicationFactor: 1 }], waitForLeaders: true });
});

after(async () => {
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await Promise.all([admin.disconnect(), producer.disconnect()]);
});

/** One record on each partition, tagged. */
const sendToEach = (tag: string) => producer.send({ topic, messages: Array.from({ length: PARTITIONS }, (_, partition) => ({ partition, value: `${tag}-${partition}` })) });

/**
 * Joins `groupId` as the events consumer does (from the end where it has no offset) and collects
 * what it reads. Returns after its first fetch: by then it has resolved where each partition starts.
 */
async function join(groupId: string): Promise<{ consumer: Consumer; seen: string[] }> {
  const seen: string[] = [];
  const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 3000, maxWaitTimeInMs: 500 });
  let fetched = false;
  consumer.on(consumer.events.FETCH, () => { fetched = true; });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: false });
  await consumer.run({ eachMessage: async ({ message }) => { seen.push(message.value!.toString()); } });
  await eventually('the consumer joined its group and fetched', () => fetched, 30_000, 100);
  return { consumer, seen };
}

const committed = async (groupId: string) => (await admin.fetchOffsets({ groupId, topics: [topic] }))[0]!.partitions
  .sort((a, b) => a.partition - b.partition).map((p) => Number(p.offset));

test('a group without offsets skips what lands while no member runs; pinned first, it reads it', async () => {
  await sendToEach('before-any-member');

  // Unpinned (kafkajs alone): the first member starts at the end and commits nothing (nothing to
  // read); what lands before the next member joins is lost to the group.
  const bare = `offsets-bare-${randomUUID()}`;
  await (await join(bare)).consumer.disconnect();
  await sendToEach('bare-while-down');
  const bareAgain = await join(bare);
  await sendToEach('bare-after-rejoin');
  await eventually('the bare group read the records sent after it rejoined', () => bareAgain.seen.length >= PARTITIONS, 30_000, 100);
  await new Promise((r) => setTimeout(r, 1000));
  await bareAgain.consumer.disconnect();
  assert.deepEqual(bareAgain.seen.filter((v) => v.startsWith('bare-while-down')), [], 'the unpinned group skips the records sent while it was down');

  // Pinned: each partition gets an offset at its end now (what was there before is not replayed),
  // so the records sent while no member runs are read when one joins.
  const group = `offsets-pinned-${randomUUID()}`;
  assert.deepEqual(await committed(group), Array(PARTITIONS).fill(-1));
  const first = await pinUncommittedPartitions(kafka, brokers, group, topic);
  assert.deepEqual(first, { pinned: [0, 1, 2], groupRunning: false });
  const ends = (await admin.fetchTopicOffsets(topic)).sort((a, b) => a.partition - b.partition).map((p) => Number(p.high));
  assert.deepEqual(await committed(group), ends, 'each partition pinned at its end');

  await (await join(group)).consumer.disconnect();
  await sendToEach('pinned-while-down');
  const again = await join(group);
  await eventually('the pinned group read the records sent while it was down', () => again.seen.length >= PARTITIONS, 30_000, 100);
  await new Promise((r) => setTimeout(r, 1000));
  assert.deepEqual(again.seen.sort(), ['pinned-while-down-0', 'pinned-while-down-1', 'pinned-while-down-2'], 'each record once, nothing from before the pin');

  // With every partition committed, nothing to do; a group with a member running is left alone.
  const read = ends.map((end) => end + 1);
  await eventually('the pinned group committed what it read', async () => JSON.stringify(await committed(group)) === JSON.stringify(read), 15_000, 200);
  assert.deepEqual(await pinUncommittedPartitions(kafka, brokers, group, topic), { pinned: [], groupRunning: false });
  await again.consumer.disconnect();
  const other = `offsets-running-${randomUUID()}`;
  const running = await join(other);
  try {
    assert.deepEqual(await pinUncommittedPartitions(kafka, brokers, other, topic), { pinned: [], groupRunning: true });
    assert.deepEqual(await committed(other), Array(PARTITIONS).fill(-1), 'a running group is not touched');
  } finally {
    await running.consumer.disconnect();
  }
});
