// Provisioning makes Flowgate's JetStream streams and KV buckets (each a stream, KV_<name>) with
// FLOWGATE_NATS_STREAM_REPLICAS, on a NATS server of its own; a process starting makes none of the
// buckets and scales nothing.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { test } from 'node:test';
import { connectNats, ensureStreams, KV_BUCKETS, STREAMS } from '../../lib/nats';
import { privateServer } from '../helpers/stack';

test('provisioning with a replica count makes every stream and every KV bucket, with the options the processes open them with', async (t) => {
  const nats = await privateServer('nats');
  const nc = await connectNats(nats.env.FLOWGATE_NATS_URL!, 'provisioning-test');
  t.after(async () => {
    await nc.close();
    await nats.stop();
    await rm(nats.layout.dir, { recursive: true, force: true });
  });
  const jsm = await nc.jetstreamManager();
  const names = async () => (await jsm.streams.names().next()).sort();
  await ensureStreams(nc);
  assert.deepEqual(await names(), Object.values(STREAMS).sort(), 'a process starting: the streams only');
  await ensureStreams(nc, 1);
  const buckets = Object.values(KV_BUCKETS);
  assert.deepEqual(await names(), [...Object.values(STREAMS), ...buckets.map((b) => `KV_${b.name}`)].sort());
  for (const b of buckets) {
    const info = await jsm.streams.info(`KV_${b.name}`);
    assert.equal(info.config.num_replicas, 1, b.name);
    assert.equal(info.config.max_msgs_per_subject, b.history, `${b.name}: history`);
    assert.equal(info.config.max_age, 'ttl' in b ? b.ttl * 1e6 : 0, `${b.name}: ttl (ns)`);
  }
});
