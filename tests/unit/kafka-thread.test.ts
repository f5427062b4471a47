// The producer thread with Kafka away (a port nothing listens on): records wait in the thread,
// a shutdown spools them, and the next thread recovers them from the spool file.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import pino from 'pino';
import { freeLoopbackPort } from '../../lib/free-port';
import { KafkaProducerThread } from '../../lib/kafka-thread';

const dirs: string[] = [];
after(async () => { await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))); });

async function until(what: string, fn: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('records reach the thread, wait there while Kafka is away, are spooled at shutdown and recovered by the next thread', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'flowgate-kafka-thread-'));
  dirs.push(dir);
  const spoolFile = path.join(dir, 'audit.jsonl');
  const opts = { brokers: [`127.0.0.1:${await freeLoopbackPort()}`], clientId: 'test', service: 'test', logLevel: 'silent', lingerMs: 10, spoolFile };
  const logger = pino({ level: 'silent' });

  const first = new KafkaProducerThread(opts, logger);
  for (let i = 0; i < 25; i++) first.send('api.audit-trail', 'acme', { type: 'api.request', request_id: `r-${i}` });
  assert.equal(first.queued, 25, 'counted while still on this side');
  // The thread reports its queue every 250 ms: all 25 are there, none acknowledged.
  await new Promise((r) => setTimeout(r, 600));
  assert.equal(first.queued, 25);
  await first.close(500);
  first.send('api.audit-trail', 'acme', { request_id: 'late' });
  assert.equal(first.dropped, 1, 'a record after close is counted, not thrown');

  const spooled = (await readFile(spoolFile, 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as { t: string; k: string; v: string });
  const ids = spooled.map((r) => (JSON.parse(r.v) as { request_id: string }).request_id);
  assert.deepEqual([...new Set(ids)].sort(), Array.from({ length: 25 }, (_, i) => `r-${i}`).sort(), 'every record is in the spool file');
  assert.ok(spooled.every((r) => r.t === 'api.audit-trail' && r.k === 'acme'));

  const second = new KafkaProducerThread(opts, logger);
  try {
    await until('the next thread queued the spooled records again', () => second.queued === 25);
  } finally {
    await second.close(200);
  }
});

test('what a thread dropped stays counted after the thread is replaced (each new thread counts from 0)', async () => {
  // No spool file and a queue of 5: with Kafka away, the oldest records are dropped and counted.
  const opts = { brokers: [`127.0.0.1:${await freeLoopbackPort()}`], clientId: 'test', service: 'test', logLevel: 'silent', lingerMs: 10, maxQueued: 5 };
  const t = new KafkaProducerThread(opts, pino({ level: 'silent' }));
  try {
    // A few at a time, so the thread drops them (its queue is full), not this side's buffer.
    const sendSlowly = async (from: number, n: number) => {
      for (let i = 0; i < n; i++) {
        t.send('api.audit-trail', 'acme', { n: from + i });
        if (i % 3 === 2) await new Promise((r) => setTimeout(r, 150));
      }
    };
    await sendSlowly(0, 30);
    await until('the thread reports its drops', () => t.dropped > 10);
    await new Promise((r) => setTimeout(r, 600));
    const before = t.dropped;
    // The thread dies; the next one starts with a count of its own (0).
    const inner = t as unknown as { worker?: { terminate(): Promise<number> } };
    const first = inner.worker!;
    await first.terminate();
    await until('a new thread', () => inner.worker !== undefined && inner.worker !== first, 30_000);
    // The new thread drops a few of 9 more, and reports them: they add to the first thread's.
    await sendSlowly(100, 9);
    await until('the new thread reports its drops', () => t.dropped !== before, 30_000);
    await new Promise((r) => setTimeout(r, 600));
    assert.ok(t.dropped > before, `the first thread's ${before} drops are still counted (now ${t.dropped})`);
  } finally {
    await t.close(200);
  }
});
