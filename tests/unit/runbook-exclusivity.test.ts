// Which runbook runs may not overlap: runs with the same exclusive key share one workflow id, so
// Temporal refuses the second start while the first is open.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { findRunbook } from '../../lib/runbooks';

test('instance-loss drills are one at a time in the whole fleet, whatever group or instance they name', () => {
  const drill = findRunbook('gateway-instance-loss')!;
  const keys = [{ group: 'a' }, { instance: 'gateway@host:42' }, { group: 'b', instance: 'gateway@host:7' }, {}].map((p) => drill.exclusiveKey!(p));
  assert.equal(new Set(keys).size, 1, `one key for all: ${keys.join(', ')}`);
});
