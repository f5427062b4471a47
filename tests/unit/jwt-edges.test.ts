// JwtVerifier on inputs a caller controls: a header of the wrong JSON types, and a remote JWKS
// that withdraws a key (served by a local HTTP server).
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mock, test } from 'node:test';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { pluginConfigSchemas } from '../../lib/control-plane/plugins';
import { JWKS_MAX_AGE_MS, JwtVerifier } from '../../gateway/jwt';

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
const refusedAs = (reason: string) => (err: unknown) => {
  const e = err as { statusCode?: number; details?: { message: string }[]; message: string };
  assert.equal(e.statusCode, 401, e.message);
  assert.match(JSON.stringify(e), new RegExp(reason));
  return true;
};

test('a header whose alg or kid is not a string is a malformed token (401), not a crash', async () => {
  const verifier = new JwtVerifier(async () => undefined);
  const settings = pluginConfigSchemas.jwt.parse({ algorithms: ['HS256'], hs256_kids: ['k1'] });
  for (const header of [{ alg: 1, kid: 'k1' }, { alg: true }, { alg: [] }, { alg: {} }, { alg: 'HS256', kid: {} }, { alg: 'HS256', kid: ['k1'] }]) {
    await assert.rejects(verifier.verify('acme', `${b64(header)}.${b64({ tenant: 'acme', exp: 9_999_999_999 })}.AAAA`, settings), refusedAs('malformed'), JSON.stringify(header));
  }
});

test('a key withdrawn from a remote JWKS stops verifying new tokens within the 2-minute bound', async () => {
  const k1 = await generateKeyPair('RS256');
  const k2 = await generateKeyPair('RS256');
  const jwk = async (k: Parameters<typeof exportJWK>[0], kid: string) => ({ ...(await exportJWK(k)), kid, alg: 'RS256', use: 'sig' });
  let keys = [await jwk(k1.publicKey, 'k1'), await jwk(k2.publicKey, 'k2')];
  const server = createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  mock.timers.enable({ apis: ['Date'], now: 1_800_000_000_000 });
  try {
    const verifier = new JwtVerifier(async () => undefined);
    const settings = pluginConfigSchemas.jwt.parse({ algorithms: ['RS256'], jwks_url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks` });
    const signed = (n: number) => new SignJWT({ tenant: 'acme', n }).setProtectedHeader({ alg: 'RS256', kid: 'k1' }).setIssuedAt().setExpirationTime('10m').sign(k1.privateKey);
    assert.equal((await verifier.verify('acme', await signed(1), settings)).kid, 'k1');
    keys = [await jwk(k2.publicKey, 'k2')]; // the IdP withdraws k1
    mock.timers.tick(JWKS_MAX_AGE_MS + 1000);
    await assert.rejects(verifier.verify('acme', await signed(2), settings), (err: unknown) => (err as { statusCode?: number }).statusCode === 401);
    assert.ok(JWKS_MAX_AGE_MS <= 120_000);
  } finally {
    mock.timers.reset();
    server.close();
  }
});
