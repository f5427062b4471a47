// HS256 secrets come from Vault: an answer (the secret, or none) is kept 5 minutes; Vault away
// is not an answer, and the next token after a few seconds asks again.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mock, test } from 'node:test';
import { pluginConfigSchemas } from '../../lib/control-plane/plugins';
import { JwtVerifier } from '../../gateway/jwt';

const SECRET = 'an-hs256-secret-of-at-least-32-bytes!!';
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
function token(kid: string, nowS: number): string {
  const head = `${b64({ alg: 'HS256', typ: 'JWT', kid })}.${b64({ sub: 'alice', tenant: 'acme', exp: nowS + 600 })}`;
  return `${head}.${createHmac('sha256', SECRET).update(head).digest('base64url')}`;
}

test('a Vault outage is remembered for seconds, not the 5 minutes an answer is', async () => {
  mock.timers.enable({ apis: ['Date'], now: 1_800_000_000_000 });
  try {
    let vaultUp = false;
    let lookups = 0;
    const verifier = new JwtVerifier(async () => {
      lookups += 1;
      if (!vaultUp) throw new Error('connect ECONNREFUSED');
      return SECRET;
    });
    const settings = pluginConfigSchemas.jwt.parse({ algorithms: ['HS256'], hs256_kids: ['k1'] });
    const jwt = () => token('k1', Math.floor(Date.now() / 1000));
    await assert.rejects(verifier.verify('acme', jwt(), settings));
    vaultUp = true;
    mock.timers.tick(1000);
    await assert.rejects(verifier.verify('acme', jwt(), settings), 'within the short pause: not asked again');
    assert.equal(lookups, 1);
    mock.timers.tick(5000);
    const ok = await verifier.verify('acme', jwt(), settings);
    assert.equal(lookups, 2, 'asked again once the pause is over');
    assert.ok(ok);
    // Vault away when a known key is due for its refresh: the key is kept meanwhile.
    vaultUp = false;
    mock.timers.tick(300_001);
    assert.ok(await verifier.verify('acme', jwt(), settings), 'still verified with the key known before');
    assert.equal(lookups, 3);
  } finally {
    mock.timers.reset();
  }
});
