// KafkaBatcher while no broker answers (a port nothing listens on): every record stays queued
// and is counted, and flushes never overlap (they once did, and the queue gauge then lied).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createKafka } from '../../lib/kafka';
import { KafkaBatcher } from '../../lib/kafka-batcher';
import { createLogger } from '../../lib/logger';

/** A fresh directory for a spool file; the test removes it (`rmSync(dir, …)`) when done. */
function spoolDir() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-spool-'));
  return { dir, spoolFile: path.join(dir, 'audit.jsonl') };
}

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
  const { dir, spoolFile } = spoolDir();
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

/** A transport that acknowledges after `latencyMs`, failing the sends `failing()` says to. */
function transport(latencyMs: number, failing: () => boolean) {
  const acked: string[] = [];
  const connect = async () => ({
    send: async (batches: { topic: string; messages: { value: unknown }[] }[]) => {
      await new Promise((r) => setTimeout(r, latencyMs));
      if (failing()) throw new Error('broker unavailable');
      for (const b of batches) for (const m of b.messages) acked.push(String(m.value));
    },
    close: async () => undefined,
  });
  return { acked, connect };
}

test('spooling ends once Kafka keeps up again, even though steady traffic never empties the queue', async () => {
  const { dir, spoolFile } = spoolDir();
  let down = true;
  const t = transport(15, () => down);
  const batcher = new KafkaBatcher(t.connect, createLogger('test', 'silent'), { lingerMs: 5, spoolFile });
  try {
    let i = 0;
    let traffic = true;
    const load = (async () => { while (traffic) { void batcher.send('api.audit-trail', 'acme', { n: i++ }); await new Promise((r) => setTimeout(r, 5)); } })();
    await new Promise((r) => setTimeout(r, 1500)); // Kafka away: the spool starts
    assert.ok(existsSync(spoolFile), 'spooling while Kafka is away');
    down = false;
    // Back: every send takes 15 ms while a record comes every 5 ms, so the queue is never empty.
    let ended = false;
    for (let w = 0; w < 60 && !ended; w++) {
      await new Promise((r) => setTimeout(r, 100));
      ended = !existsSync(spoolFile);
    }
    traffic = false;
    await load;
    assert.ok(ended, 'the spool file is gone once Kafka keeps up');
    await batcher.close(2000);
    assert.equal(new Set(t.acked).size, i, 'every record acknowledged once Kafka was back');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('recovery: a line the crash cut short is skipped, and what is appended after it is read at the next start', async () => {
  const { dir, spoolFile } = spoolDir();
  const line = (n: number) => `${JSON.stringify({ t: 'api.audit-trail', k: 'acme', v: JSON.stringify({ n }) })}\n`;
  try {
    writeFileSync(spoolFile, `${line(1)}${line(2)}{"t":"api.audit-trail","k":"ac`); // the crash cut the third
    const t = transport(1, () => true); // Kafka still away
    const second = new KafkaBatcher(t.connect, createLogger('test', 'silent'), { lingerMs: 5, spoolFile });
    assert.equal(second.recover(), 2);
    void second.send('api.audit-trail', 'acme', { n: 3 });
    await new Promise((r) => setTimeout(r, 400)); // the failed send appends n: 3 to the spool
    const third = new KafkaBatcher(t.connect, createLogger('test', 'silent'), { lingerMs: 5, spoolFile });
    assert.equal(third.recover(), 3, readFileSync(spoolFile, 'utf8'));
    await second.close(50);
    await third.close(50);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('recovery queues up to maxQueued records and reads the rest back from the file as the queue drains', async () => {
  const { dir, spoolFile } = spoolDir();
  try {
    writeFileSync(spoolFile, Array.from({ length: 10 }, (_, n) => `${JSON.stringify({ t: 't', k: 'k', v: String(n) })}\n`).join(''));
    const t = transport(1, () => false);
    const b = new KafkaBatcher(t.connect, createLogger('test', 'silent'), { lingerMs: 5, spoolFile, maxQueued: 4 });
    assert.equal(b.recover(), 10);
    assert.equal(b.queued, 10);
    await b.close(2000);
    assert.deepEqual(t.acked, ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9']);
    assert.equal(b.dropped, 0);
    assert.equal(existsSync(spoolFile), false, 'all acknowledged: the spool is gone');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an outage longer than the memory bound loses nothing: past maxQueued records wait in the spool file only, and come back in order', async () => {
  const { dir, spoolFile } = spoolDir();
  let down = true;
  const t = transport(2, () => down);
  const b = new KafkaBatcher(t.connect, createLogger('test', 'silent'), { lingerMs: 5, spoolFile, maxQueued: 5 });
  try {
    const sent = [];
    for (let n = 0; n < 40; n++) {
      sent.push(b.send('t', 'k', n));
      await new Promise((r) => setTimeout(r, 2));
    }
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(b.queued, 40, 'five in memory, the rest in the file');
    assert.equal(b.dropped, 0);
    assert.equal(readFileSync(spoolFile, 'utf8').trim().split('\n').length, 40, 'every record is in the spool');
    down = false;
    for (let w = 0; w < 100 && (b.queued > 0 || existsSync(spoolFile)); w++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(t.acked, Array.from({ length: 40 }, (_, n) => String(n)), 'each record once, in order');
    assert.equal(existsSync(spoolFile), false, 'the spool is gone once all of it was acknowledged');
    assert.deepEqual((await Promise.all(sent)).slice(0, 5), [true, true, true, true, true], 'those held in memory are reported acknowledged');
    // New records go to memory again.
    assert.equal(await b.send('t', 'k', 'after'), true);
  } finally {
    await b.close(500);
    rmSync(dir, { recursive: true, force: true });
  }
});

test('close keeps its deadline while a send still waits for the broker: that batch is spooled, its records resolve false', async () => {
  const { dir, spoolFile } = spoolDir();
  try {
    // A broker that accepts the connection and never answers the send.
    const hung = async () => ({ send: () => new Promise<void>(() => undefined), close: async () => undefined });
    const b = new KafkaBatcher(hung, createLogger('test', 'silent'), { lingerMs: 5, spoolFile });
    const sent = Array.from({ length: 5 }, (_, n) => b.send('api.audit-trail', 'acme', { n }));
    await new Promise((r) => setTimeout(r, 50)); // the batch is in flight
    assert.equal(b.queued, 5);
    const t0 = Date.now();
    await b.close(200);
    assert.ok(Date.now() - t0 < 1000, `close(200) took ${Date.now() - t0} ms`);
    assert.deepEqual(await Promise.all(sent), [false, false, false, false, false]);
    const spooled = readFileSync(spoolFile, 'utf8').trim().split('\n').map((l) => JSON.parse(JSON.parse(l).v).n);
    assert.deepEqual(spooled, [0, 1, 2, 3, 4]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a record dropped from a full queue is not reported as sent', async () => {
  const t = transport(1, () => true); // Kafka away
  const b = new KafkaBatcher(t.connect, createLogger('test', 'silent'), { lingerMs: 5, maxQueued: 2 });
  const first = b.send('t', 'k', { n: 1 });
  void b.send('t', 'k', { n: 2 });
  const third = b.sendWithin(300, 't', 'k', { n: 3 }); // pushes n: 1 out
  assert.equal(await first, false);
  assert.equal(b.dropped, 1);
  assert.equal(await third, false, 'still queued after 300 ms: not acknowledged');
  await b.close(50);
});

test('a connection that comes up after close() gave up on it is closed, not left open', async () => {
  let closed = 0;
  let sent = 0;
  const slow = async () => {
    await new Promise((r) => setTimeout(r, 300));
    return { send: async () => { sent += 1; }, close: async () => { closed += 1; } };
  };
  const b = new KafkaBatcher(slow, createLogger('test', 'silent'), { lingerMs: 5 });
  const record = b.send('t', 'k', { n: 1 });
  await new Promise((r) => setTimeout(r, 50)); // connecting
  await b.close(100);
  assert.equal(await record, false);
  await new Promise((r) => setTimeout(r, 400));
  assert.equal(closed, 1, 'the late connection was closed');
  assert.equal(sent, 0, 'and nothing was sent on it after close');
});
