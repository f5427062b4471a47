// primaryAddress with a fake topology bucket: between a failover's fence and its repoint the
// topology names no primary, and a rotation or a backup drill must then wait (a retryable error),
// not fall back to the URL's host, which is usually the fenced old primary.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NatsConnection } from 'nats';
import { NoPrimaryError, primaryAddress, topologyKey, type DbTopology } from '../../lib/db-topology';
import { KV_BUCKETS } from '../../lib/nats';

const URL_ = 'postgres://flowgate_app:pw@old-primary:5432/flowgate';
const topology = (primary: DbTopology['primary']): DbTopology => ({
  cluster: 'main', epoch: 4, primary, standbys: [], fenced: [{ name: 'pg-a', host: 'old-primary', port: 5432 }],
  changed_at: '2024-01-01T00:00:00.000Z', changed_by: 'failover',
});

/** A NATS connection whose topology bucket holds `stored` under the cluster's key (nothing when undefined). */
function natsWith(stored: DbTopology | undefined): NatsConnection {
  const kv = {
    get: async (key: string) => {
      assert.equal(key, topologyKey('main'));
      if (!stored) return null;
      const value = new TextEncoder().encode(JSON.stringify(stored));
      return { operation: 'PUT', value, revision: 7, json: () => JSON.parse(new TextDecoder().decode(value)) as DbTopology };
    },
  };
  return {
    jetstream: () => ({ views: { kv: async (bucket: string) => { assert.equal(bucket, KV_BUCKETS.platform.name); return kv; } } }),
  } as unknown as NatsConnection;
}

test("the topology's primary when it names one", async () => {
  assert.deepEqual(await primaryAddress(natsWith(topology({ name: 'pg-b', host: 'new-primary', port: 5433 })), 'main', URL_), { host: 'new-primary', port: 5433 });
});

test("no topology (or no NATS): the URL's host", async () => {
  assert.deepEqual(await primaryAddress(natsWith(undefined), 'main', URL_), { host: 'old-primary', port: 5432 });
  assert.deepEqual(await primaryAddress(undefined, 'main', 'postgres://u:p@db.example/flowgate'), { host: 'db.example', port: 5432 });
});

test('a topology with no primary (a failover between fence and repoint): NoPrimaryError, never the fenced URL host', async () => {
  await assert.rejects(primaryAddress(natsWith(topology(null)), 'main', URL_), (err: unknown) => {
    assert.ok(err instanceof NoPrimaryError);
    // What Temporal takes as the failure's type: not in any retry policy's nonRetryableErrorTypes.
    assert.equal(err.constructor.name, 'NoPrimaryError');
    assert.equal(err.name, 'NoPrimaryError');
    assert.match(err.message, /main.*no primary.*epoch 4/);
    return true;
  });
});
