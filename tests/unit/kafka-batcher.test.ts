// KafkaBatcher while no broker answers (a port nothing listens on): every record stays queued
// and is counted, and flushes never overlap (they once did, and the queue gauge then lied).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createKafka } from '../../lib/kafka';
import { KafkaBatcher } from '../../lib/kafka-batcher';
import { createLogger } from '../../lib/logger';

test('records sent while Kafka is unreachable all stay queued, one flush at a time', async () => {
  const batcher = new KafkaBatcher(createKafka(['127.0.0.1:1'], 'batcher-test'), createLogger('test', 'silent'), { lingerMs: 5 });
  let flushes = 0;
  let overlapped = false;
  const inner = batcher as unknown as { flush: () => Promise<void> };
  const flush = inner.flush.bind(batcher);
  inner.flush = async () => {
    flushes += 1;
    overlapped ||= flushes > 1;
    try {
      await flush();
    } finally {
      flushes -= 1;
    }
  };
  for (let i = 0; i < 50; i++) {
    void batcher.send('t', 'k', { i });
    await new Promise((r) => setTimeout(r, 3));
  }
  for (let i = 0; i < 4; i++) {
    assert.equal(batcher.queued, 50);
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.equal(overlapped, false);
  await batcher.close(100);
});
