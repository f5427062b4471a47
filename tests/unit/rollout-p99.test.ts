// The canary's p99 from histogram bucket deltas: a tail past the highest finite bucket is
// reported as that bound, flagged, never as "no p99" (which passed any p99 limit).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { windowP99 } from '../../activities/rollout';

const buckets = (counts: [number, number][]) => new Map(counts);

test('p99 is the upper bound of the bucket holding the 99th percentile; past the top it is the top, flagged', () => {
  const before = buckets([[0.1, 0], [1, 0], [2.5, 0], [Infinity, 0]]);
  assert.deepEqual(windowP99(before, buckets([[0.1, 95], [1, 100], [2.5, 100], [Infinity, 100]]), 100), { ms: 1000, overTop: false });
  assert.deepEqual(windowP99(before, buckets([[0.1, 90], [1, 94], [2.5, 95], [Infinity, 100]]), 100), { ms: 2500, overTop: true });
  assert.deepEqual(windowP99(before, buckets([[0.1, 0], [Infinity, 0]]), 0), { ms: null, overTop: false });
});
