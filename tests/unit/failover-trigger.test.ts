// The DB watchdog's decision to start a failover, apart from its probing (lib/db-watchdog.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FailoverTrigger } from '../../lib/db-watchdog';

test('three failures in a row start one failover per epoch', () => {
  const t = new FailoverTrigger(3);
  assert.deepEqual([t.failed(1), t.failed(1), t.failed(1), t.failed(1), t.failed(1)], [false, false, true, false, false]);
  assert.equal(t.failed(2), true, 'a new epoch (after a failover) starts its own');
});

test('an answer resets the count, and a later outage of the same epoch starts a run again', () => {
  const t = new FailoverTrigger(3);
  t.failed(1);
  t.failed(1);
  t.answered();
  assert.equal(t.failed(1), false, 'counted from zero again');
  t.failed(1);
  assert.equal(t.failed(1), true);
  // That run found the primary healthy (a blip) and ended; the primary answers again, then dies for real.
  t.answered();
  assert.deepEqual([t.failed(1), t.failed(1), t.failed(1)], [false, false, true], 'the real outage still starts a failover');
});

test('a start that failed is tried again on the next failure', () => {
  const t = new FailoverTrigger(1);
  assert.equal(t.failed(4), true);
  t.startFailed();
  assert.equal(t.failed(4), true);
});
