import assert from 'node:assert/strict';
import { test } from 'node:test';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError, loadConfig } from '../../lib/config';
import { findRunbook } from '../../lib/runbooks';

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

test("third parties default to seed 000's numbers; a bad list is refused naming the variable", () => {
  const [svc] = loadConfig('worker', {}).FLOWGATE_THIRD_PARTIES;
  assert.equal(svc!.name, 'payments-sandbox');
  assert.equal(svc!.timeout_ms, 5000);
  assert.deepEqual(svc!.retry_delays_ms, [100, 200, 400]);
  assert.deepEqual(svc!.breaker, { error_threshold_percentage: 50, rolling_window_ms: 30_000, volume_threshold: 5, reset_timeout_ms: 60_000 });
  assert.deepEqual(svc!.auth, { scheme: 'bearer' });
  const custom = loadConfig('worker', { FLOWGATE_THIRD_PARTIES: '[{"name":"x","base_url":"https://x.example","breaker":{"reset_timeout_ms":2000}}]' }).FLOWGATE_THIRD_PARTIES[0]!;
  assert.equal(custom.breaker.reset_timeout_ms, 2000);
  assert.equal(custom.breaker.error_threshold_percentage, 50, 'unset settings keep their defaults');
  for (const bad of ['not json', '[{"name":"Bad Name","base_url":"https://x"}]', '[{"name":"a","base_url":"ftp://x"}]', '[{"name":"a","base_url":"http://x"},{"name":"a","base_url":"http://y"}]']) {
    assert.throws(() => loadConfig('worker', { FLOWGATE_THIRD_PARTIES: bad }), (err: unknown) => {
      assert.ok(err instanceof ConfigError);
      assert.deepEqual(err.issues.map((i) => i.variable), ['FLOWGATE_THIRD_PARTIES']);
      return true;
    });
  }
});

test('FLOWGATE_X_FILE sets FLOWGATE_X from a file (a mounted secret); both set, or an unreadable file, is refused by name', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-config-'));
  const file = path.join(dir, 'token');
  writeFileSync(file, 's.file-token-value\n');
  assert.equal(loadConfig('worker', { FLOWGATE_VAULT_TOKEN_FILE: file }).FLOWGATE_VAULT_TOKEN, 's.file-token-value', 'trailing newline trimmed');
  assert.throws(() => loadConfig('worker', { FLOWGATE_VAULT_TOKEN_FILE: file, FLOWGATE_VAULT_TOKEN: 'other' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.issues.map((i) => i.variable), ['FLOWGATE_VAULT_TOKEN_FILE']);
    return true;
  });
  assert.throws(() => loadConfig('worker', { FLOWGATE_EXECUTION_ID_SECRET_FILE: path.join(dir, 'missing') }), /FLOWGATE_EXECUTION_ID_SECRET_FILE: cannot read .*ENOENT/);
  // The value read is validated like any other.
  writeFileSync(file, 'short');
  assert.throws(() => loadConfig('gateway', { FLOWGATE_EXECUTION_ID_SECRET_FILE: file }), /FLOWGATE_EXECUTION_ID_SECRET: must be at least 16 characters/);
});

test("FLOWGATE_DB_PROBE_MS is refused above what the failover runbook's probe_interval_ms takes (the watchdog could never start a run)", () => {
  const failover = findRunbook('database-failover')!;
  const params = (ms: number) => ({ cluster: 'main', automatic: true, probes: 1, probe_interval_ms: ms });
  const highest = loadConfig('worker', { FLOWGATE_DB_PROBE_MS: '10000' }).FLOWGATE_DB_PROBE_MS;
  assert.equal(highest, 10_000);
  assert.doesNotThrow(() => failover.params.parse(params(highest)), 'the highest value the config takes, the runbook takes');
  assert.throws(() => failover.params.parse(params(highest + 1)));
  assert.throws(() => loadConfig('worker', { FLOWGATE_DB_PROBE_MS: String(highest + 1) }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.issues.map((i) => i.variable), ['FLOWGATE_DB_PROBE_MS']);
    assert.match(err.message, /FLOWGATE_DB_PROBE_MS: .*10000.*database-failover/);
    return true;
  });
});

test('the TLS listener is all or nothing: a port without a certificate and key is refused, naming what is missing', () => {
  assert.throws(() => loadConfig('gateway', { FLOWGATE_TLS_PORT: '8443' }), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.deepEqual(err.issues.map((i) => i.variable), ['FLOWGATE_TLS_CERT', 'FLOWGATE_TLS_KEY']);
    assert.match(err.message, /together \(FLOWGATE_TLS_PORT given\)/);
    return true;
  });
  assert.throws(() => loadConfig('gateway', { FLOWGATE_TLS_CLIENT_CA: '/ca.pem' }), /FLOWGATE_TLS_PORT: the TLS listener needs/);
  assert.equal(loadConfig('gateway', { FLOWGATE_TLS_PORT: '8443', FLOWGATE_TLS_CERT: 'c', FLOWGATE_TLS_KEY: 'k' }).FLOWGATE_TLS_PORT, 8443);
  assert.equal(loadConfig('gateway', {}).FLOWGATE_TLS_PORT, undefined, 'none: no TLS listener');
});

test('trusted proxies are addresses or CIDRs; anything else is named', () => {
  assert.deepEqual(loadConfig('gateway', { FLOWGATE_TRUSTED_PROXIES: '10.0.0.0/8, 127.0.0.1,::1, fd00::/8' }).FLOWGATE_TRUSTED_PROXIES, ['10.0.0.0/8', '127.0.0.1', '::1', 'fd00::/8']);
  assert.deepEqual(loadConfig('gateway', {}).FLOWGATE_TRUSTED_PROXIES, []);
  for (const bad of ['ingress.local', '10.0.0.0/33', '10.0.0.0/8/1', '::1/129', '0.0.0.0/0', '::/0']) {
    assert.throws(() => loadConfig('gateway', { FLOWGATE_TRUSTED_PROXIES: bad }), new RegExp(`FLOWGATE_TRUSTED_PROXIES: "${bad.replace(/[./]/g, '\\$&')}" is neither`), bad);
  }
});
