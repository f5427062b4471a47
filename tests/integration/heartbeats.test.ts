// Every process beats on health.heartbeats; the stack's admin (the heartbeat monitor) reports an
// instance that falls silent within 10 s (seed 000), as a metric and an `api.events` record, and
// drops one that says it is stopping without an alarm.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, describe, test } from 'node:test';
import type { Consumer } from 'kafkajs';
import { hostname } from 'node:os';
import type { ProcessEvent } from '../../lib/heartbeat-monitor';
import { createKafka, TOPICS } from '../../lib/kafka';
import { eventually, readyStatus, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';

const stack = testStack();
const adminStatus = `http://127.0.0.1:${stack.layout.ports.adminStatus}`;

type Instance = { process: string; instance: string; state: 'alive' | 'silent' };
const instances = async (): Promise<Instance[]> => ((await (await fetch(`${adminStatus}/info`)).json()) as { processes: Instance[] }).processes;
const metric = async (name: string, process: string) => {
  const text = await (await fetch(`${adminStatus}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(`process="${process}"`) && !l.includes('process="admin"'));
  return line ? Number(line.split(" ").at(-1)) : 0; // a counter has no series before its first count
};

describe('heartbeat monitor', () => {
  const procs: RunningProcess[] = [];
  let consumer: Consumer | undefined;
  const events: ProcessEvent[] = [];
  after(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await consumer?.disconnect();
  });

  test('every process of the stack beats', async () => {
    await eventually('gateway, admin, triggers and worker alive', async () => {
      const alive = new Set((await instances()).filter((i) => i.state === 'alive').map((i) => i.process));
      return ['gateway', 'admin', 'triggers', 'worker'].every((p) => alive.has(p));
    }, 15_000);
  });

  test('a killed process is reported silent within 10 s (metric and event); a stopped one is not', async () => {
    const kafka = createKafka(stack.env.FLOWGATE_KAFKA_BROKERS!.split(','), 'heartbeat-test');
    consumer = kafka.consumer({ groupId: `heartbeats-${randomUUID()}` });
    await consumer.connect();
    await consumer.subscribe({ topic: TOPICS.events, fromBeginning: false });
    await consumer.run({ eachMessage: async ({ message }) => { events.push(JSON.parse(message.value!.toString()) as ProcessEvent); } });

    const killed = await spawnProcess('triggers', stack.env);
    const stopped = await spawnProcess('triggers', stack.env);
    procs.push(killed, stopped);
    for (const p of [killed, stopped]) await eventually('ready', async () => (await readyStatus(p.statusUrl)).code === 200, 60_000);
    const nameOf = (p: RunningProcess) => `triggers@${hostname()}:${p.child.pid}`;
    await eventually('both beating', async () => {
      const alive = (await instances()).filter((i) => i.state === 'alive').map((i) => i.instance);
      return alive.includes(nameOf(killed)) && alive.includes(nameOf(stopped));
    }, 15_000);
    const silentBefore = await metric('platform_process_silences_total', 'triggers');

    // A graceful stop says so in its last beat: dropped, never reported.
    stopped.child.kill('SIGTERM');
    await stopped.exited;
    await eventually('the stopped instance gone', async () => !(await instances()).some((i) => i.instance === nameOf(stopped)), 5000);

    const t0 = Date.now();
    killed.child.kill('SIGKILL');
    await eventually('reported silent', async () => (await instances()).some((i) => i.instance === nameOf(killed) && i.state === 'silent'), 12_000, 100);
    const detectedMs = Date.now() - t0;
    assert.ok(detectedMs < 10_000, `reported after ${detectedMs} ms`);
    assert.equal(await metric('platform_process_silences_total', 'triggers'), silentBefore + 1, 'one silence counted: the stopped instance is not one');
    assert.ok((await metric('platform_processes_silent', 'triggers')) >= 1);

    await eventually('the event on api.events', () => events.some((e) => e.type === 'platform.process_silent' && e.data.instance === nameOf(killed)), 10_000);
    const event = events.find((e) => e.type === 'platform.process_silent' && e.data.instance === nameOf(killed))!;
    assert.equal(event.tenant, '_platform');
    assert.equal(event.data.process, 'triggers');
    assert.ok(event.data.silent_for_ms >= 9000 && event.data.silent_for_ms < 13_000, `silent for ${event.data.silent_for_ms} ms when reported`);
    assert.ok(!events.some((e) => e.data.instance === nameOf(stopped)), 'no event for the instance that stopped gracefully');
  });
});
