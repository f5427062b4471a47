// The two transports under KafkaBatcher against the real broker: kafkajs (most processes) and
// @platformatic/kafka (the gateway's producer thread) write the same records, and a key lands on
// the same partition whichever wrote it, so a tenant's audit entries stay in one ordered stream.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, test } from 'node:test';
import { createKafka } from '../../lib/kafka';
import { KafkaBatcher } from '../../lib/kafka-batcher';
import { platformaticTransport } from '../../lib/kafka-platformatic';
import { createLogger } from '../../lib/logger';
import { eventually, testStack } from '../helpers/stack';

const stack = testStack();
const brokers = stack.env.FLOWGATE_KAFKA_BROKERS!.split(',');
const kafka = createKafka(brokers, 'transports-test');
const logger = createLogger('test', 'silent');
const topic = `transports-${randomUUID()}`;
const admin = kafka.admin();

after(async () => {
  await admin.deleteTopics({ topics: [topic] }).catch(() => undefined);
  await admin.disconnect();
});

test('kafkajs and @platformatic/kafka put each key on the same partition, with the same key, value and headers', async () => {
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6, replicationFactor: 1 }], waitForLeaders: true });
  const keys = Array.from({ length: 24 }, (_, i) => `ws-${i}-${randomUUID().slice(0, 8)}`);
  const viaKafkajs = new KafkaBatcher(kafka, logger, { lingerMs: 5 });
  const viaPlatformatic = new KafkaBatcher(platformaticTransport(brokers, 'transports-test-p'), logger, { lingerMs: 5 });
  try {
    await Promise.all(keys.flatMap((key) => [
      viaKafkajs.send(topic, key, { key, by: 'kafkajs' }, { 'x-request-id': `k-${key}` }),
      viaPlatformatic.send(topic, key, { key, by: 'platformatic' }, { 'x-request-id': `p-${key}` }),
    ]));
  } finally {
    await Promise.all([viaKafkajs.close(), viaPlatformatic.close()]);
  }

  const seen: { key: string; partition: number; by: string; value: { key: string }; requestId: string }[] = [];
  const consumer = kafka.consumer({ groupId: `transports-${randomUUID()}` });
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message, partition }) => {
        const value = JSON.parse(message.value!.toString()) as { key: string; by: string };
        seen.push({ key: message.key!.toString(), partition, by: value.by, value, requestId: String(message.headers?.['x-request-id']) });
      },
    });
    await eventually('every record read back', () => seen.length >= keys.length * 2, 30_000, 100);
  } finally {
    await consumer.disconnect();
  }

  assert.equal(seen.length, keys.length * 2);
  for (const key of keys) {
    const k = seen.find((r) => r.key === key && r.by === 'kafkajs')!;
    const p = seen.find((r) => r.key === key && r.by === 'platformatic')!;
    assert.ok(k && p, `both records of ${key}`);
    assert.equal(p.partition, k.partition, `${key}: the same partition from both clients`);
    assert.equal(p.value.key, key);
    assert.equal(k.requestId, `k-${key}`);
    assert.equal(p.requestId, `p-${key}`);
  }
  assert.ok(new Set(seen.map((r) => r.partition)).size > 1, 'the keys spread over several partitions, so the comparison means something');
});
