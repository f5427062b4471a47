// Fails unless every component of the stack is the real server (issue: foundation).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { connect, type NatsConnection, RetentionPolicy, StorageType, nanos } from 'nats';
import { Redis } from 'ioredis';
import { connectTemporal } from '../../lib/temporal';
import { createKafka, TOPICS } from '../../lib/kafka';
import { asPlatform, createPool } from '../../lib/postgres';
import { createVault, vaultPaths } from '../../lib/vault';
import { testStack } from '../helpers/stack';

const { env } = testStack();

describe('smoke: the real stack', () => {
  test('a workflow runs on the Temporal server (hello, on the stack worker)', async () => {
    const client = await connectTemporal(env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
    try {
      const info = await client.workflowService.getSystemInfo({});
      assert.ok(info.serverVersion, 'a real server reports its version');
      const id = `smoke-${randomBytes(6).toString('hex')}`;
      const result = await client.workflow.execute('hello', { taskQueue: 'flowgate', workflowId: id, args: [{ name: 'smoke' }] });
      assert.deepEqual(result, { greeting: 'Hello, smoke!' });
      const d = await client.workflow.getHandle(id).describe();
      assert.equal(d.status.name, 'COMPLETED');
      assert.ok(d.historyLength >= 5, 'history recorded by the server');
    } finally {
      await client.connection.close();
    }
  });

  describe('NATS JetStream', () => {
    let nc: NatsConnection;
    const stream = `SMOKE_${randomBytes(4).toString('hex').toUpperCase()}`;
    before(async () => {
      nc = await connect({ servers: env.FLOWGATE_NATS_URL });
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({ name: stream, subjects: [`smoke.${stream}.>`], storage: StorageType.File, retention: RetentionPolicy.Limits, duplicate_window: nanos(60_000) });
    });
    after(async () => {
      await (await nc.jetstreamManager()).streams.delete(stream);
      await nc.close();
    });

    test('a publish is acked and a second one with the same Nats-Msg-Id is deduplicated', async () => {
      const js = nc.jetstream();
      const first = await js.publish(`smoke.${stream}.a`, 'one', { msgID: 'same-id' });
      const second = await js.publish(`smoke.${stream}.a`, 'two', { msgID: 'same-id' });
      assert.equal(first.duplicate, false);
      assert.equal(second.duplicate, true);
      assert.equal(second.seq, first.seq);
      const info = await (await nc.jetstreamManager()).streams.info(stream);
      assert.equal(info.state.messages, 1);
    });

    test('the contract streams exist on the server', async () => {
      const jsm = await nc.jetstreamManager();
      const trig = await jsm.streams.info('FLOWGATE_TRIGGERS');
      assert.deepEqual(trig.config.subjects, ['workflow.triggers.*']);
      assert.equal(trig.config.retention, RetentionPolicy.Workqueue);
      assert.ok((await jsm.streams.info('FLOWGATE_SIGNALS')).config.subjects.includes('workflow.signals.*'));
    });
  });

  test('PostgreSQL has the migrations applied and refuses to change audit rows', async () => {
    const pool = createPool(env.FLOWGATE_DATABASE_URL!, 1);
    try {
      const versions = (await pool.query<{ version: string }>('SELECT version FROM schema_migrations ORDER BY version')).rows.map((r) => r.version);
      assert.ok(versions.includes('001_control_plane.sql') && versions.includes('004_admin_api.sql'), versions.join(','));
      const tables = (await pool.query<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")).rows.map((r) => r.table_name);
      for (const t of ['workspaces', 'rbac_roles', 'api_keys', 'audit_logs', 'api_calls', 'workflow_triggers']) assert.ok(tables.includes(t), `table ${t}`);
      // The application role may insert audit rows, never change them (admin-api.test.ts covers the owner too).
      const id = await asPlatform(pool, async (db) => (await db.query<{ id: string }>("INSERT INTO audit_logs (actor, action, entity_type) VALUES ('smoke', 'test', 'none') RETURNING id")).rows[0]!.id);
      await assert.rejects(asPlatform(pool, (db) => db.query('UPDATE audit_logs SET actor = $1 WHERE id = $2', ['x', id])), /permission denied/);
      await assert.rejects(asPlatform(pool, (db) => db.query('DELETE FROM audit_logs WHERE id = $1', [id])), /permission denied/);
    } finally {
      await pool.end();
    }
  });

  test('Kafka: a produce/consume round trip on a contract topic, keyed by tenant', async () => {
    const kafka = createKafka(env.FLOWGATE_KAFKA_BROKERS!.split(','), 'smoke');
    const producer = kafka.producer();
    const groupId = `smoke-${randomBytes(4).toString('hex')}`;
    const consumer = kafka.consumer({ groupId });
    const marker = randomBytes(8).toString('hex');
    await producer.connect();
    await consumer.connect();
    try {
      await consumer.subscribe({ topic: TOPICS.workflowEvents, fromBeginning: true });
      const received = new Promise<{ key: string; value: string }>((resolve) => {
        void consumer.run({
          eachMessage: async ({ message }) => {
            const value = message.value?.toString() ?? '';
            if (value.includes(marker)) resolve({ key: message.key?.toString() ?? '', value });
          },
        });
      });
      await producer.send({ topic: TOPICS.workflowEvents, messages: [{ key: 'smoke-tenant', value: JSON.stringify({ marker }) }] });
      const got = await Promise.race([received, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no message within 30s')), 30_000))]);
      assert.equal(got.key, 'smoke-tenant');
      assert.equal(JSON.parse(got.value).marker, marker);
      const admin = kafka.admin();
      await admin.connect();
      const topics = await admin.listTopics();
      await admin.disconnect();
      for (const t of Object.values(TOPICS)) assert.ok(topics.includes(t), `topic ${t}`);
    } finally {
      await consumer.disconnect();
      await producer.disconnect();
    }
  });

  test('OpenBao: a KV v2 write and read through node-vault', async () => {
    const vault = createVault(env.FLOWGATE_VAULT_ADDR!, env.FLOWGATE_VAULT_TOKEN);
    const path = vaultPaths.thirdPartyApiKey(`smoke-${randomBytes(4).toString('hex')}`);
    const first = await vault.write(path, { data: { api_key: 'v1' } });
    const second = await vault.write(path, { data: { api_key: 'v2' } });
    assert.equal(second.data.version, first.data.version + 1, 'KV v2 keeps versions');
    const read = await vault.read(path);
    assert.equal(read.data.data.api_key, 'v2');
    assert.equal(read.data.metadata.version, 2);
  });

  test('Redis answers', async () => {
    const redis = new Redis(env.FLOWGATE_REDIS_URL!);
    try {
      assert.equal(await redis.ping(), 'PONG');
      const key = `smoke:${randomBytes(4).toString('hex')}`;
      await redis.set(key, 'v', 'PX', 10_000);
      assert.equal(await redis.get(key), 'v');
      assert.match(await redis.info('server'), /redis_version:/);
    } finally {
      redis.disconnect();
    }
  });
});
