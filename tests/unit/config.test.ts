import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, loadConfig } from '../../lib/config';

test('defaults match the local stack and the status port follows the process', () => {
  const c = loadConfig('triggers', {});
  assert.equal(c.FLOWGATE_NATS_URL, 'nats://127.0.0.1:4222');
  assert.deepEqual(c.FLOWGATE_KAFKA_BROKERS, ['127.0.0.1:9092']);
  assert.equal(c.statusPort, 9402);
  assert.equal(loadConfig('gateway', {}).statusPort, 9400);
  assert.equal(loadConfig('worker', { FLOWGATE_STATUS_PORT: '19403' }).statusPort, 19403);
});

test('every bad variable is named, with what was wrong', () => {
  assert.throws(
    () => loadConfig('gateway', { FLOWGATE_NATS_URL: 'http://x', FLOWGATE_KAFKA_BROKERS: 'nohostport', FLOWGATE_GATEWAY_PORT: '70000', FLOWGATE_EXECUTION_ID_SECRET: 'short' }),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      const vars = err.issues.map((i) => i.variable).sort();
      assert.deepEqual(vars, ['FLOWGATE_EXECUTION_ID_SECRET', 'FLOWGATE_GATEWAY_PORT', 'FLOWGATE_KAFKA_BROKERS', 'FLOWGATE_NATS_URL']);
      assert.match(err.message, /FLOWGATE_NATS_URL: must be a URL with scheme nats: or tls:/);
      assert.match(err.message, /FLOWGATE_EXECUTION_ID_SECRET: must be at least 16 characters/);
      return true;
    },
  );
});
