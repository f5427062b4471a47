// The request audit's own bookkeeping: each entry gets an id of its own (a client may reuse its
// X-Request-ID), and entries the producer dropped are counted where an alert can see them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry } from 'prom-client';
import { RequestAudit } from '../../gateway/request-audit';
import { createLogger } from '../../lib/logger';

const entry = (request_id: string) => ({ at: new Date().toISOString(), request_id, method: 'GET', path: '/x', status: 200, latency_ms: 1, client_ip: '127.0.0.1' });

test('every entry has an audit_id of its own; drops by the producer are a counter that only grows', async () => {
  const sent: Record<string, unknown>[] = [];
  const producer = { queued: 0, dropped: 0, send: (_topic: string, _key: string, value: unknown) => { sent.push(value as Record<string, unknown>); } };
  const registry = new Registry();
  const audit = new RequestAudit({ kafka: producer, logger: createLogger('gateway', 'silent'), registry, successSample: 0 });
  try {
    audit.record(entry('same'));
    audit.record(entry('same'));
    assert.equal(sent.length, 2);
    assert.notEqual(sent[0]!.audit_id, sent[1]!.audit_id);
    assert.match(String(sent[0]!.audit_id), /^[0-9a-f-]{36}$/);
    const dropped = async () => (await registry.getSingleMetric('gateway_audit_dropped_total')!.get()).values[0]?.value ?? 0;
    assert.equal(await dropped(), 0);
    producer.dropped = 3;
    assert.equal(await dropped(), 3);
    producer.dropped = 5;
    assert.equal(await dropped(), 5);
    // A producer whose own count went back (a new producer thread) adds nothing until it passes
    // what was already counted: the counter never goes back and counts nothing twice.
    producer.dropped = 2;
    assert.equal(await dropped(), 5);
    producer.dropped = 4;
    assert.equal(await dropped(), 5);
  } finally {
    await audit.close();
  }
});
