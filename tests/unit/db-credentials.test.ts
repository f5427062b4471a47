// followDbCredentials with a Vault that answers slowly: the minute's re-read and a rotation
// message must not overlap, or the older answer can be applied last.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { NatsConnection } from 'nats';
import pg from 'pg';
import { followDbCredentials, SECRET_ROTATED_SUBJECT } from '../../lib/db-credentials';
import { poolOptions } from '../../lib/pg-pool-internals';
import type { VaultClient } from '../../lib/vault';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('a rotation message during a slow re-read: the newer login is the one left in use', async () => {
  let current = 1;
  let slowNext = false;
  const vault = {
    read: async (path: string) => {
      if (path.startsWith('secret/metadata/')) {
        const seen = current; // what Vault says when the read starts
        const slow = slowNext;
        slowNext = false;
        if (slow) await sleep(300);
        return { data: { custom_metadata: { current: String(seen) } } };
      }
      const v = Number(new URL(path, 'http://x').searchParams.get('version'));
      return { data: { data: { username: `user${v}`, password: `pw${v}` }, metadata: { version: v } } };
    },
  } as unknown as VaultClient;
  const messages: { path: string }[] = [];
  let wake: (() => void) | undefined;
  const nats = {
    subscribe: (subject: string) => {
      assert.equal(subject, SECRET_ROTATED_SUBJECT);
      return {
        unsubscribe: () => undefined,
        async *[Symbol.asyncIterator]() {
          for (;;) {
            while (!messages.length) await new Promise<void>((r) => { wake = r; });
            const m = messages.shift()!;
            yield { json: () => m };
          }
        },
      };
    },
  } as unknown as NatsConnection;
  const pool = new pg.Pool({ host: '127.0.0.1', port: 1 });
  const stop = await followDbCredentials(pool, vault, 'db/test/app', { nats, recheckMs: 100 });
  assert.equal(poolOptions(pool).user, 'user1');
  slowNext = true; // the re-read at 100 ms starts while version 1 is current and answers at 400 ms
  await sleep(130);
  stop(); // no further re-read could put things right
  current = 2;
  messages.push({ path: 'db/test/app' });
  wake?.();
  await sleep(500);
  assert.equal(poolOptions(pool).user, 'user2');
  await pool.end();
});
