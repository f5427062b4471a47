// JwtVerifier's cache of verified tokens: a token verified once is answered from the cache (its
// key is not looked up again) for the config it was checked against; a config change verifies it
// again. Real signatures: HS256 with a counting secret source, RS256 with a JWKS served over HTTP.
//
// The key sources keep their own answers (an HS256 secret 5 minutes, a remote JWKS 2 minutes), so
// a second verification would not ask them either while those are fresh. Each test lets the key
// source's answer go stale while the token's cache entry is still young: from then on, a token
// that is verified again must ask the key source, and one answered from the cache does not.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { hostname } from 'node:os';
import { mock, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { pluginConfigSchemas } from '../../lib/control-plane/plugins';
import { JWKS_MAX_AGE_MS, JwtVerifier } from '../../gateway/jwt';
import { parseDenyEntry, UpstreamPolicy } from '../../lib/upstream-policy';

const SECRET = 'an-hs256-secret-of-at-least-32-bytes!!';
const HS_SECRET_KEPT_MS = 300_000;
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
function hsToken(n: number): string {
  const head = `${b64({ alg: 'HS256', typ: 'JWT', kid: 'k1' })}.${b64({ sub: 'alice', tenant: 'acme', n, exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}
const refusedAs = (reason: string) => (err: unknown) => {
  assert.equal((err as { statusCode?: number }).statusCode, 401, (err as Error).message);
  assert.match(JSON.stringify(err), new RegExp(reason));
  return true;
};

test('HS256: a verified token is not verified again (its secret is not looked up) until the config changes', async () => {
  mock.timers.enable({ apis: ['Date'], now: 1_800_000_000_000 });
  try {
    let lookups = 0;
    const verifier = new JwtVerifier(async () => {
      lookups += 1;
      return SECRET;
    });
    const config = { algorithms: ['HS256'], hs256_kids: ['k1'] };
    const settings = pluginConfigSchemas.jwt.parse(config);
    assert.equal((await verifier.verify('acme', hsToken(1), settings)).claims.n, 1);
    assert.equal(lookups, 1, 'the secret is read once');

    // Shortly before the secret's answer expires, a new token: verified with the secret known.
    mock.timers.tick(HS_SECRET_KEPT_MS - 10_000);
    const token = hsToken(2);
    const first = await verifier.verify('acme', token, settings);
    assert.equal(lookups, 1);

    // The secret's answer is stale now, the token's entry 20 s old: the cache answers.
    mock.timers.tick(20_000);
    const second = await verifier.verify('acme', token, settings);
    assert.equal(lookups, 1, 'the second verification of the same token does not verify again');
    assert.deepEqual(second, first);

    // The workspace's config changed (a new settings object, same content): verified again.
    const changed = pluginConfigSchemas.jwt.parse(config);
    assert.deepEqual((await verifier.verify('acme', token, changed)).claims, first.claims);
    assert.equal(lookups, 2, 'a config change verifies the token again');
    await verifier.verify('acme', token, changed);
    assert.equal(lookups, 2, 'and then answers from the cache for the new config');

    // A config that no longer accepts the token refuses it, however recently it was verified.
    const stricter = pluginConfigSchemas.jwt.parse({ ...config, issuers: ['https://idp.example'] });
    await assert.rejects(verifier.verify('acme', token, stricter), refusedAs('claim_iss'));
    // The same token in another workspace is not the first one's cache entry.
    await verifier.verify('other', token, changed);
    assert.equal(lookups, 3, 'the cache is per workspace');
  } finally {
    mock.timers.reset();
  }
});

/** An RS256 key pair and an HTTP server of its JWKS on `host`, counting fetches. */
async function jwksServer(host: string) {
  const pair = await generateKeyPair('RS256');
  const keys = [{ ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }];
  const out = { pair, fetches: 0, server: createServer((_req, res) => {
    out.fetches += 1;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
  }) };
  await new Promise<void>((r) => out.server.listen(0, host, r));
  return out;
}

test('RS256 with a remote JWKS: a verified token is not verified again (no JWKS fetch) until the config changes', async () => {
  const jwks = await jwksServer('127.0.0.1');
  const { pair, server } = jwks;
  mock.timers.enable({ apis: ['Date'], now: 1_800_000_000_000 });
  try {
    const verifier = new JwtVerifier(async () => undefined);
    const config = { algorithms: ['RS256'], jwks_url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks` };
    const settings = pluginConfigSchemas.jwt.parse(config);
    const signed = (n: number) => new SignJWT({ sub: 'alice', tenant: 'acme', n }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuedAt().setExpirationTime('1h').sign(pair.privateKey);
    await verifier.verify('acme', await signed(1), settings);
    assert.equal(jwks.fetches, 1, 'the JWKS is fetched once');

    // Shortly before the JWKS goes stale, a new token: verified with the keys fetched.
    mock.timers.tick(JWKS_MAX_AGE_MS - 20_000);
    const token = await signed(2);
    const first = await verifier.verify('acme', token, settings);
    assert.equal(first.kid, 'k1');
    assert.equal(jwks.fetches, 1);

    // The JWKS is stale now (verifying would fetch it again), the token's entry 30 s old: the cache answers.
    mock.timers.tick(30_000);
    const second = await verifier.verify('acme', token, settings);
    assert.equal(jwks.fetches, 1, 'the second verification of the same token does not verify again');
    assert.deepEqual(second, first);

    // The workspace's config changed (a new settings object, same content): verified again.
    const changed = pluginConfigSchemas.jwt.parse(config);
    assert.deepEqual((await verifier.verify('acme', token, changed)).claims, first.claims);
    assert.equal(jwks.fetches, 2, 'a config change verifies the token again');

    // A config that no longer accepts the token refuses it, however recently it was verified.
    await assert.rejects(verifier.verify('acme', token, pluginConfigSchemas.jwt.parse({ ...config, audiences: ['payments'] })), refusedAs('claim_aud'));
  } finally {
    mock.timers.reset();
    server.close();
  }
});

test('a cached token is refused once it is older than max_lifetime_seconds, as verifying it again would', async () => {
  mock.timers.enable({ apis: ['Date'], now: 1_800_000_000_000 });
  try {
    const verifier = new JwtVerifier(async () => SECRET);
    const settings = pluginConfigSchemas.jwt.parse({ algorithms: ['HS256'], hs256_kids: ['k1'], max_lifetime_seconds: 60, clock_skew_seconds: 0 });
    const now = Math.floor(Date.now() / 1000);
    const head = `${b64({ alg: 'HS256', typ: 'JWT', kid: 'k1' })}.${b64({ sub: 'alice', tenant: 'acme', iat: now - 50, exp: now + 3600 })}`;
    const token = `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
    await verifier.verify('acme', token, settings); // 50 s old: accepted, and cached
    mock.timers.tick(20_000); // 70 s old, the cache entry 20 s
    await assert.rejects(verifier.verify('acme', token, settings), refusedAs('expired'));
  } finally {
    mock.timers.reset();
  }
});

test("a jwks_url is fetched only where the gateway's upstream policy allows: not from its own ports, by address or by name", async () => {
  // On every address, so that whatever this machine's name resolves to reaches it when allowed.
  const jwks = await jwksServer('0.0.0.0');
  const { pair, server } = jwks;
  try {
    const port = (server.address() as AddressInfo).port;
    const token = await new SignJWT({ sub: 'alice', tenant: 'acme' }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuedAt().setExpirationTime('1h').sign(pair.privateKey);
    const denied = new UpstreamPolicy({ allowLoopback: true, deny: [parseDenyEntry(`127.0.0.1:${port}`)!], ownPorts: [] });
    for (const host of ['127.0.0.1', 'localhost', hostname()]) { // hostname(): a name only the lookup judges
      const verifier = new JwtVerifier(async () => undefined, 10_000, denied);
      const settings = pluginConfigSchemas.jwt.parse({ algorithms: ['RS256'], jwks_url: `http://${host}:${port}/jwks` });
      await assert.rejects(verifier.verify('acme', token, settings), refusedAs('unverifiable'), host);
    }
    assert.equal(jwks.fetches, 0, 'the key set was never fetched');
    // The same URLs where the policy allows them are fetched: what refused them was the policy.
    for (const host of ['localhost', hostname()]) {
      const allowed = new JwtVerifier(async () => undefined, 10_000, new UpstreamPolicy({ allowLoopback: true, deny: [], ownPorts: [] }));
      const settings = pluginConfigSchemas.jwt.parse({ algorithms: ['RS256'], jwks_url: `http://${host}:${port}/jwks` });
      assert.equal((await allowed.verify('acme', token, settings)).kid, 'k1', `where allowed, ${host} is fetched through the same kind of agent`);
    }
    assert.equal(jwks.fetches, 2);
  } finally {
    server.close();
  }
});
