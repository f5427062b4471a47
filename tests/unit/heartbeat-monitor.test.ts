// The heartbeat monitor's rules on a fake clock: silent after the threshold, reported once,
// recovered when beats resume, a graceful stop never reported.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NatsConnection } from 'nats';
import pino from 'pino';
import { HeartbeatMonitor, type ProcessEvent } from '../../lib/heartbeat-monitor';
import type { Heartbeat } from '../../lib/heartbeats';
import { createMetricsRegistry } from '../../lib/metrics';

function monitor() {
  let now = 1_000_000;
  const events: ProcessEvent[] = [];
  const registry = createMetricsRegistry('admin');
  const m = new HeartbeatMonitor({ nc: {} as NatsConnection, registry, logger: pino({ level: 'silent' }), silentAfterMs: 9000, emit: (e) => { events.push(e); }, now: () => now });
  const beat = (instance: string, status: Heartbeat['status'] = 'up'): Heartbeat => ({ process: 'worker', instance, status_url: 'http://w:9403', at: new Date(now).toISOString(), status });
  return { m, events, registry, beat, advance: (ms: number) => { now += ms; m.sweep(); } };
}

const value = async (registry: ReturnType<typeof createMetricsRegistry>, name: string) =>
  (await registry.getSingleMetric(name)!.get()).values.find((v) => v.labels.process === 'worker')?.value;

test('an instance silent past the threshold is reported once, then as recovered when it beats again', async () => {
  const { m, events, registry, beat, advance } = monitor();
  m.observe(beat('w1'));
  advance(8999);
  assert.equal(events.length, 0, 'not yet');
  assert.equal(await value(registry, 'platform_processes_alive'), 1);
  advance(2);
  assert.deepEqual(events.map((e) => [e.type, e.data.instance, e.tenant]), [['platform.process_silent', 'w1', '_platform']]);
  assert.equal(events[0]!.data.silent_for_ms, 9001);
  advance(5000);
  assert.equal(events.length, 1, 'reported once');
  assert.equal(await value(registry, 'platform_processes_silent'), 1);
  assert.equal(await value(registry, 'platform_processes_alive'), 0);
  assert.equal(await value(registry, 'platform_process_silences_total'), 1);
  m.observe(beat('w1'));
  assert.equal(events.at(-1)!.type, 'platform.process_recovered');
  assert.equal(await value(registry, 'platform_processes_silent'), 0);
  assert.notEqual(events[0]!.id, events[1]!.id);
});

test('beats keep an instance alive; one that says it is stopping is dropped without a report', async () => {
  const { m, events, registry, beat, advance } = monitor();
  for (let i = 0; i < 10; i++) {
    m.observe(beat('w1'));
    m.observe(beat('w2'));
    advance(3000);
  }
  assert.equal(events.length, 0);
  assert.equal(await value(registry, 'platform_processes_alive'), 2);
  m.observe(beat('w2', 'stopping'));
  advance(20_000);
  assert.deepEqual(events.map((e) => e.data.instance), ['w1'], 'w1 fell silent; w2 said it stopped');
  assert.deepEqual(m.instances().map((i) => [i.instance, i.state]), [['w1', 'silent']]);
});

test("two admins report one silence with the same id: it is the instance's own beat time, not theirs", () => {
  const sent = new Date(1_000_000).toISOString();
  const ids: string[] = [];
  for (const skew of [0, 7]) {
    let now = 1_000_000 + skew;
    const m = new HeartbeatMonitor({ nc: {} as NatsConnection, registry: createMetricsRegistry('admin'), logger: pino({ level: 'silent' }), silentAfterMs: 9000, emit: (e) => { ids.push(e.id); }, now: () => now });
    m.observe({ process: 'worker', instance: 'w1', status_url: 'http://w:9403', at: sent, status: 'up' });
    now += 10_000;
    m.sweep();
  }
  assert.equal(ids.length, 2);
  assert.equal(ids[0], ids[1]);
});

test('a monitor that cannot hear reports nothing: its NATS down, or the first sweep after a stall', () => {
  let now = 1_000_000;
  let connected = true;
  const events: ProcessEvent[] = [];
  const m = new HeartbeatMonitor({ nc: {} as NatsConnection, registry: createMetricsRegistry('admin'), logger: pino({ level: 'silent' }), silentAfterMs: 9000, emit: (e) => { events.push(e); }, now: () => now, connected: () => connected });
  const beat = () => m.observe({ process: 'worker', instance: 'w1', status_url: 'http://w:9403', at: new Date(now).toISOString(), status: 'up' });
  beat();
  m.tick(500);
  // Its own connection is down: the beats stop arriving, and that says nothing about w1.
  connected = false;
  for (let i = 0; i < 30; i++) { now += 500; m.tick(500); }
  assert.equal(events.length, 0, 'deaf: nothing reported');
  connected = true;
  m.tick(500); // hearing again, before any new beat arrived: w1 gets its full silentAfterMs from now
  now += 500;
  m.tick(500);
  assert.equal(events.length, 0, 'not reported on reconnecting');
  beat();
  m.tick(500);
  // A 12 s stall of the event loop: the first sweep after it runs before the beats that came meanwhile.
  now += 12_000;
  m.tick(500);
  assert.equal(events.length, 0, 'the sweep right after the stall is skipped');
  beat(); // the buffered beat is read
  now += 500;
  m.tick(500);
  assert.equal(events.length, 0);
  // A real silence is still reported.
  for (let i = 0; i < 20; i++) { now += 500; m.tick(500); }
  assert.deepEqual(events.map((e) => e.type), ['platform.process_silent']);
});
