// The canary bake reads each gateway's own http_request_duration_seconds: only the rolled-out
// workspace's series count, so other tenants' traffic on the same instance cannot hide its errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Registry, Histogram } from 'prom-client';
import { CancelledFailure } from '@temporalio/common';
import { MockActivityEnvironment } from '@temporalio/testing';
import type { NatsConnection } from 'nats';
import type { Pool } from 'pg';
import { readHistogram, rolloutActivities } from '../../activities/rollout';
import type { KafkaBatcher } from '../../lib/kafka-batcher';

test("readHistogram counts the workspace's requests, 5xx and buckets only", async () => {
  const registry = new Registry();
  const h = new Histogram({ name: 'http_request_duration_seconds', help: 'x', labelNames: ['method', 'path', 'status', 'tenant'], buckets: [0.01, 0.1, 1], registers: [registry] });
  for (let i = 0; i < 90; i++) h.observe({ method: 'GET', path: '/shop', status: '200', tenant: 'other' }, 0.005);
  for (let i = 0; i < 6; i++) h.observe({ method: 'GET', path: '/shop', status: '502', tenant: 'roll' }, 0.5);
  for (let i = 0; i < 4; i++) h.observe({ method: 'GET', path: '/shop', status: '200', tenant: 'roll' }, 0.005);
  h.observe({ method: 'GET', path: '/shop', status: '200', tenant: 'roll2' }, 0.005);
  const text = await registry.metrics();

  const roll = readHistogram(text, 'roll');
  assert.equal(roll.count, 10);
  assert.equal(roll.errors, 6, 'a 60 % error rate, not 6 %');
  assert.equal(roll.buckets.get(0.01), 4);
  assert.equal(roll.buckets.get(1), 10);
  const all = readHistogram(text);
  assert.equal(all.count, 101);
  assert.equal(all.errors, 6);
});

test('an abort ends an hour-long bake at once, so the canary is restored without waiting it out', async () => {
  // No gateway answers (requestMany yields nothing): the bake only waits out its seconds.
  const nats = { requestMany: async () => (async function* () {})() } as unknown as NatsConnection;
  const acts = rolloutActivities({ pool: undefined as unknown as Pool, nats, events: undefined as unknown as KafkaBatcher });
  const env = new MockActivityEnvironment();
  const started = Date.now();
  const bake = env.run(acts.bakeCanary, { canary_group: 'canary', seconds: 3600, workspace: 'acme' });
  setTimeout(() => env.cancel(), 200);
  await assert.rejects(Promise.race([bake, new Promise((_, reject) => setTimeout(() => reject(new Error('still baking after 5 s')), 5000))]), (err: unknown) => err instanceof CancelledFailure);
  assert.ok(Date.now() - started < 3000, `ended after ${Date.now() - started} ms`);
});
