// A failed Vault call must not carry the Vault token into a log line or a serialized error:
// node-vault passes axios's errors on, and those hold the request's headers.
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import { Writable } from 'node:stream';
import pino from 'pino';
import { test } from 'node:test';
import { REDACT_PATHS } from '../../lib/logger';
import { createVault, VaultRequestError } from '../../lib/vault';

const TOKEN = 'hvs.unit-test-token-that-must-not-leak';

test('a Vault that cannot be reached: the error names the failure, never the token, however it is logged', async () => {
  // Nothing listens on port 1: a refused connection, as when OpenBao is down.
  const vault = createVault('http://127.0.0.1:1', TOKEN);
  const err = await vault.read('secret/data/3rdparty/x/api_key').then(() => assert.fail('read should fail'), (e: unknown) => e);
  assert.ok(err instanceof VaultRequestError);
  assert.equal(err.code, 'ECONNREFUSED');
  let logged = '';
  const logger = pino({ redact: REDACT_PATHS }, new Writable({ write(chunk, _enc, done) { logged += String(chunk); done(); } }));
  logger.error({ err }, 'vault failed');
  logger.error({ error: err }, 'activity failed');
  for (const shown of [logged, inspect(err, { depth: 10 }), JSON.stringify(err), String(err.stack)]) {
    assert.ok(!shown.includes(TOKEN), `the token leaked: ${shown.slice(0, 300)}`);
  }
  assert.match(logged, /ECONNREFUSED/);
});

test("Vault's own refusal keeps its status and message", async () => {
  const { createServer } = await import('node:http');
  const server = createServer((_req, res) => res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: ['permission denied'] })));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  try {
    const port = (server.address() as { port: number }).port;
    const err = await createVault(`http://127.0.0.1:${port}`, TOKEN).read('secret/data/x').then(() => assert.fail('read should fail'), (e: unknown) => e);
    assert.ok(err instanceof VaultRequestError);
    assert.equal(err.response?.statusCode, 403);
    assert.equal(err.message, 'permission denied');
    assert.ok(!inspect(err, { depth: 10 }).includes(TOKEN));
  } finally {
    server.close();
  }
});
