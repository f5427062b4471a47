// The gateway's config pulls: a pull asked for while one is under way is not lost in it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigStore } from '../../gateway/config-store';
import { createLogger } from '../../lib/logger';

/** A ConfigStore whose pull reads a counter standing in for the newest version in PostgreSQL. */
function storeReading(source: { version: number }) {
  const store = new ConfigStore({ logger: createLogger('test', 'silent'), refreshMs: 30_000 });
  const seen: number[] = [];
  let running = 0;
  let overlapped = false;
  (store as unknown as { doPull: () => Promise<void> }).doPull = async () => {
    running += 1;
    overlapped ||= running > 1;
    const read = source.version; // the pull reads the version at its start...
    await new Promise((r) => setTimeout(r, 20)); // ...and takes a while to compile it
    seen.push(read);
    running -= 1;
  };
  return { store, seen, overlapped: () => overlapped };
}

test('an invalidation during a pull causes one more pull, which sees the new version', async () => {
  const source = { version: 1 };
  const { store, seen, overlapped } = storeReading(source);
  const first = store.pull();
  await new Promise((r) => setTimeout(r, 5));
  source.version = 2; // committed after the running pull read the old one
  const second = store.pull();
  const third = store.pull(); // more invalidations share the follow-up pull
  await Promise.all([first, second, third]);
  assert.deepEqual(seen, [1, 2]);
  assert.equal(overlapped(), false, 'pulls never run side by side');
});

test('a failed pull does not swallow the follow-up pull', async () => {
  const store = new ConfigStore({ logger: createLogger('test', 'silent'), refreshMs: 30_000 });
  let calls = 0;
  (store as unknown as { doPull: () => Promise<void> }).doPull = async () => {
    calls += 1;
    await new Promise((r) => setTimeout(r, 10));
    if (calls === 1) throw new Error('first pull fails');
  };
  const first = store.pull();
  const second = store.pull();
  await assert.rejects(first, /first pull fails/);
  await second;
  assert.equal(calls, 2);
});
