// Keys the served config does not know are looked up in PostgreSQL (one issued since the last
// pull), within a budget: random keys must not cost a query each and drain the pool.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import type { FastifyRequest } from 'fastify';
import type { Pool } from 'pg';
import { Authenticator } from '../../gateway/auth';
import type { ConfigStore } from '../../gateway/config-store';
import type { JwtVerifier } from '../../gateway/jwt';

/** A pool whose every key lookup finds nothing, counting them. */
function countingPool() {
  const counts = { lookups: 0 };
  const client = {
    query: async (sql: string) => {
      if (sql.includes('api_keys')) counts.lookups += 1;
      return { rows: [], rowCount: 0 };
    },
    release: () => undefined,
  };
  return { counts, pool: { connect: async () => client } as unknown as Pool };
}

const request = (key: string) => ({ headers: { authorization: `Bearer ${key}` }, raw: { socket: {} } }) as unknown as FastifyRequest;

test('unknown keys cost at most the lookup budget in PostgreSQL, however many a client sends', async () => {
  const { counts, pool } = countingPool();
  const store = { keyOwner: () => undefined, view: () => undefined } as unknown as ConfigStore;
  const auth = new Authenticator({ store, pool, jwt: {} as JwtVerifier, unknownKeyLookupsPerS: 20 });
  let refused = 0;
  for (let i = 0; i < 1000; i++) {
    await Promise.resolve(auth.authenticate(request(`fgk_${randomBytes(4).toString('hex')}_${randomBytes(16).toString('hex')}`))).catch((err: { statusCode?: number }) => {
      assert.equal(err.statusCode, 401);
      refused += 1;
    });
  }
  assert.equal(refused, 1000);
  assert.ok(counts.lookups <= 25, `${counts.lookups} lookups for 1000 unknown keys (budget 20 per second)`);
  assert.ok(counts.lookups >= 20, 'the budget is used: a key issued since the last pull is still found');
});

test('a key found in PostgreSQL stops working once a newer config of its workspace leaves it out (revoked), not 10 s later', async () => {
  let revoked = false;
  let lookups = 0;
  let version = 7; // the config the gateway serves for acme
  let dbVersion = 7; // acme's config version in PostgreSQL
  let duringLookup = () => undefined as void;
  const client = {
    query: async (sql: string) => {
      if (!sql.includes('api_keys')) return { rows: [], rowCount: 0 };
      lookups += 1;
      const rows = revoked ? [] : [{ id: 'k1', workspace_id: 'acme', consumer_id: 'c1', username: 'alice', roles: ['developer'], config_version: dbVersion }];
      duringLookup();
      return { rows, rowCount: rows.length };
    },
    release: () => undefined,
  };
  const store = { keyOwner: () => undefined, view: () => undefined, versionOf: (ws: string) => (ws === 'acme' ? version : undefined) } as unknown as ConfigStore;
  const auth = new Authenticator({ store, pool: { connect: async () => client } as unknown as Pool, jwt: {} as JwtVerifier });
  const key = `fgk_${randomBytes(4).toString('hex')}_${randomBytes(16).toString('hex')}`;
  assert.equal((await auth.authenticate(request(key))).tenant, 'acme', 'issued since the last pull: found in PostgreSQL');
  assert.equal((await auth.authenticate(request(key))).tenant, 'acme');
  assert.equal(lookups, 1, 'remembered while the config is the same');
  revoked = true;
  version = 8; // the revocation's config, which no longer lists the key
  await assert.rejects(Promise.resolve(auth.authenticate(request(key))), (err: { statusCode?: number }) => err.statusCode === 401);
  assert.equal(lookups, 2, 'asked again under the new config');

  // The revocation's config arrives while a lookup is reading the key as it was before: the entry
  // belongs to the version that lookup saw, and the newer config still sends the next one to PostgreSQL.
  const other = `fgk_${randomBytes(4).toString('hex')}_${randomBytes(16).toString('hex')}`;
  revoked = false;
  dbVersion = 8;
  duringLookup = () => { version = 9; duringLookup = () => undefined; };
  assert.equal((await auth.authenticate(request(other))).tenant, 'acme', 'read before the revocation');
  revoked = true;
  await assert.rejects(Promise.resolve(auth.authenticate(request(other))), (err: { statusCode?: number }) => err.statusCode === 401);
  assert.equal(lookups, 4);
});
