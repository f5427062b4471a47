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

test('with a spool file, records queued while Kafka is away survive the process: the next one recovers them', async () => {
  const { mkdtempSync, readFileSync, existsSync, rmSync } = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-spool-'));
  const spoolFile = path.join(dir, 'audit.jsonl');
  try {
    const first = new KafkaBatcher(createKafka(['127.0.0.1:1'], 'spool-test'), createLogger('test', 'silent'), { lingerMs: 5, spoolFile });
    for (let i = 0; i < 20; i++) void first.send('api.audit-trail', 'acme', { request_id: `r${i}` });
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 20; i < 30; i++) void first.send('api.audit-trail', 'acme', { request_id: `r${i}` });
    // The first failed send starts the spool; later records follow within 100 ms. No close(): the process "dies".
    await new Promise((r) => setTimeout(r, 1500));
    const lines = readFileSync(spoolFile, 'utf8').trim().split('\n');
    assert.deepEqual(lines.map((l) => JSON.parse(JSON.parse(l).v).request_id).sort(), Array.from({ length: 30 }, (_, i) => `r${i}`).sort());

    const second = new KafkaBatcher(createKafka(['127.0.0.1:1'], 'spool-test'), createLogger('test', 'silent'), { lingerMs: 5, spoolFile });
    assert.equal(second.recover(), 30);
    assert.equal(second.queued, 30);
    await second.close(50);
    assert.ok(existsSync(spoolFile), 'unsent at shutdown: still in the spool');
    await first.close(50);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
