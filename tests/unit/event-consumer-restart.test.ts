// keepConsuming: the api.events consumer is started again when kafkajs gives up on it (a crash it
// will not restart), with a growing pause while starting fails, and never after the process closed it.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import type { Consumer } from 'kafkajs';
import { createLogger } from '../../lib/logger';
import { keepConsuming } from '../../triggers/event-rules';

const CRASH = 'consumer.crash';
/** The part of a kafkajs consumer keepConsuming uses: its CRASH event. */
function fakeConsumer() {
  const emitter = new EventEmitter();
  const consumer = { events: { CRASH }, on: (name: string, fn: (e: unknown) => void) => emitter.on(name, fn) } as unknown as Pick<Consumer, 'on' | 'events'>;
  const crash = (restart: boolean) => emitter.emit(CRASH, { payload: { error: new Error('Failed to find group coordinator'), restart } });
  return { consumer, crash };
}
const logger = createLogger('test', 'silent');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a crash kafkajs restarts itself is left to kafkajs', async () => {
  const { consumer, crash } = fakeConsumer();
  let starts = 0;
  const keeper = keepConsuming(consumer, async () => { starts += 1; }, logger, { firstMs: 5, maxMs: 20 });
  crash(true);
  await sleep(30);
  assert.equal(starts, 0);
  assert.equal(keeper.consuming(), true);
  keeper.close();
});

test('a crash kafkajs gives up on: not consuming, then started again, with a doubling pause while starting fails', async () => {
  const { consumer, crash } = fakeConsumer();
  const at: number[] = [];
  const t0 = Date.now();
  const keeper = keepConsuming(consumer, async () => {
    at.push(Date.now() - t0);
    if (at.length < 3) throw new Error('broker still loading');
  }, logger, { firstMs: 20, maxMs: 1000 });
  crash(false);
  assert.equal(keeper.consuming(), false, 'readiness says so at once');
  for (let i = 0; i < 100 && !keeper.consuming(); i++) await sleep(10);
  assert.equal(keeper.consuming(), true, 'consuming again after the third start');
  assert.equal(at.length, 3);
  // Pauses of 20, 40 and 80 ms: each start later than the last by at least the doubled pause.
  assert.ok(at[0]! >= 18 && at[1]! - at[0]! >= 38 && at[2]! - at[1]! >= 78, `starts at ${at.join(', ')} ms`);
  keeper.close();
});

test('closed (the process is shutting down): a crash starts nothing', async () => {
  const { consumer, crash } = fakeConsumer();
  let starts = 0;
  const keeper = keepConsuming(consumer, async () => { starts += 1; }, logger, { firstMs: 5, maxMs: 20 });
  keeper.close();
  crash(false);
  await sleep(30);
  assert.equal(starts, 0);
});

test('closed while a restart waits: it does not happen', async () => {
  const { consumer, crash } = fakeConsumer();
  let starts = 0;
  const keeper = keepConsuming(consumer, async () => { starts += 1; }, logger, { firstMs: 20, maxMs: 40 });
  crash(false);
  keeper.close();
  await sleep(50);
  assert.equal(starts, 0);
});
