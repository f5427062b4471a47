// `{vault:NAME#FIELD}` header values: read from the workspace's own path, kept for a while, kept
// while OpenBao is away, and only where the config put them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SecretRefs } from '../../gateway/secret-refs';
import { requestHeaderValue, responseHeaderValue, secretRef } from '../../lib/control-plane/plugins';
import type { ApiError } from '../../lib/errors';
import { createLogger } from '../../lib/logger';
import type { VaultClient } from '../../lib/vault';

/** A stand-in for OpenBao's KV v2 read: secrets by path, reads counted, failing on demand. */
function fakeVault(secrets: Record<string, Record<string, string>>) {
  const reads: string[] = [];
  let down = false;
  const vault = {
    read: async (path: string) => {
      reads.push(path);
      if (down) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
      const data = secrets[path];
      if (!data) throw Object.assign(new Error('not found'), { response: { statusCode: 404 } });
      return { data: { data } };
    },
  } as unknown as VaultClient;
  return { vault, reads, setDown: (d: boolean) => { down = d; } };
}

const REF = '{vault:orders-api#token}';

test('a reference is the whole value, with a name and a field; anything else is an ordinary value', () => {
  assert.deepEqual(secretRef(REF), { name: 'orders-api', field: 'token' });
  for (const v of ['Bearer {vault:orders-api#token}', '{vault:orders-api}', '{vault:../x#token}', '{vault:Orders#token}', 'plain']) assert.equal(secretRef(v), undefined, v);
});

test("configured references are filled from the workspace's own path, then kept; a client's header is left alone", async () => {
  const f = fakeVault({ 'secret/data/upstreams/acme/orders-api': { token: 'Bearer s3cret' } });
  const refs = new SecretRefs({ vault: f.vault, logger: createLogger('gateway', 'silent'), ttlMs: 60_000 });
  const headers = { authorization: REF, 'x-client': REF };
  const first = refs.resolveHeaders('acme', headers, [{ Authorization: REF }]);
  assert.ok(first instanceof Promise, 'read on first use');
  await first;
  assert.deepEqual(headers, { authorization: 'Bearer s3cret', 'x-client': REF }, "a client's own header is not filled in");
  const again = { authorization: REF };
  assert.equal(refs.resolveHeaders('acme', again, [{ authorization: REF }]), undefined, 'synchronous once known');
  assert.equal(again.authorization, 'Bearer s3cret');
  assert.deepEqual(f.reads, ['secret/data/upstreams/acme/orders-api']);
});

test("another workspace's reference reads its own path; missing is 503 credential_unavailable, remembered for the TTL", async () => {
  const f = fakeVault({ 'secret/data/upstreams/acme/orders-api': { token: 'Bearer s3cret' } });
  const refs = new SecretRefs({ vault: f.vault, logger: createLogger('gateway', 'silent'), ttlMs: 60_000 });
  for (let i = 0; i < 2; i++) {
    await assert.rejects(async () => refs.resolveHeaders('globex', { authorization: REF }, [{ authorization: REF }]), (err: ApiError) => {
      assert.equal(err.statusCode, 503);
      assert.equal(err.code, 'credential_unavailable');
      assert.match(err.message, /not in OpenBao/);
      assert.ok(!err.message.includes('s3cret'));
      return true;
    });
  }
  assert.deepEqual(f.reads, ['secret/data/upstreams/globex/orders-api'], 'one read for both');
  await assert.rejects(async () => refs.resolveHeaders('acme', { authorization: '{vault:orders-api#other}' }, [{ authorization: '{vault:orders-api#other}' }]), /no field other/);
});

test('past the TTL a kept value still serves while OpenBao is away, and a fresh read replaces it once it is back', async () => {
  const secrets = { 'secret/data/upstreams/acme/orders-api': { token: 'v1' } };
  const f = fakeVault(secrets);
  const refs = new SecretRefs({ vault: f.vault, logger: createLogger('gateway', 'silent'), ttlMs: 100 });
  const send = async () => {
    const h = { authorization: REF };
    await refs.resolveHeaders('acme', h, [{ authorization: REF }]);
    return h.authorization;
  };
  assert.equal(await send(), 'v1');
  await new Promise((r) => setTimeout(r, 150));
  f.setDown(true);
  assert.equal(await send(), 'v1', 'stale but kept');
  await new Promise((r) => setImmediate(r));
  f.setDown(false);
  secrets['secret/data/upstreams/acme/orders-api'] = { token: 'v2' };
  assert.equal(await send(), 'v1', 'the read that brings v2 starts with this request');
  await new Promise((r) => setImmediate(r));
  assert.equal(await send(), 'v2', 'rotated');
  // Never read and OpenBao away: unavailable, and said so.
  f.setDown(true);
  await assert.rejects(async () => refs.resolveHeaders('acme', { a: '{vault:other#k}' }, [{ a: '{vault:other#k}' }]), /OpenBao could not be read/);
});

test('saved config: a malformed reference is refused, and a reference in a header going to the client is refused', () => {
  assert.ok(requestHeaderValue.safeParse(REF).success);
  assert.ok(requestHeaderValue.safeParse('plain value').success);
  assert.match(requestHeaderValue.safeParse('{vault:orders-api}').error!.issues[0]!.message, /\{vault:NAME#FIELD\}/);
  assert.match(responseHeaderValue.safeParse(REF).error!.issues[0]!.message, /request headers only/);
  assert.ok(responseHeaderValue.safeParse('plain value').success);
});

test('one reference failing at once while another is still being read: one error, and no rejection left unhandled', async (t) => {
  const f = fakeVault({ 'secret/data/upstreams/acme/known': { token: 't' } });
  const refs = new SecretRefs({ vault: f.vault, logger: createLogger('gateway', 'silent'), ttlMs: 60_000 });
  await refs.resolveHeaders('acme', { a: '{vault:known#token}' }, [{ a: '{vault:known#token}' }]); // known, and kept
  const unhandled: unknown[] = [];
  const record = (err: unknown) => unhandled.push(err);
  process.on('unhandledRejection', record);
  t.after(() => process.off('unhandledRejection', record));
  const edits = { 'x-a': '{vault:never-read#k}', 'x-b': '{vault:known#nofield}' };
  await assert.rejects(async () => refs.resolveHeaders('acme', { ...edits }, [edits]), /credential \{vault:(never-read#k\} is unavailable: not in OpenBao|known#nofield\} is unavailable: no field nofield)/);
  await new Promise((r) => setTimeout(r, 20)); // the read of never-read ends (404)
  assert.deepEqual(unhandled, []);
});
