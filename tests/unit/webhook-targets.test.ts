// Where webhooks may go: public addresses only, judged on the URL's text and again on what a name resolves to.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { fetch } from 'undici';
import { callbackUrlOf } from '../../gateway/triggering';
import { ApiError } from '../../lib/errors';
import { isNonPublicAddress, NonPublicTargetError, nonPublicHost, publicOnlyDispatcher } from '../../lib/webhook-targets';

test('non-public addresses: loopback, private, CGNAT, link-local (cloud metadata), unspecified, multicast, IPv4-mapped', () => {
  for (const a of ['127.0.0.1', '127.9.9.9', '10.1.2.3', '172.16.0.1', '172.31.255.255', '192.168.1.1', '100.64.0.1', '169.254.169.254',
    '0.0.0.0', '224.0.0.1', '255.255.255.255', '::1', '::', 'fd00::1', 'fe80::1', 'ff02::1', '::ffff:127.0.0.1', '::ffff:a9fe:a9fe',
    // IPv4 inside IPv6: IPv4-compatible, NAT64 (well-known and local-use prefixes), 6to4.
    '::a00:1', '64:ff9b::a00:1', '64:ff9b:1::a00:1', '2002:a00:1::1']) {
    assert.equal(isNonPublicAddress(a), true, a);
  }
  for (const a of ['8.8.8.8', '1.1.1.1', '172.32.0.1', '192.169.0.1', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) {
    assert.equal(isNonPublicAddress(a), false, a);
  }
  assert.equal(isNonPublicAddress('example.com'), false, 'a name is judged when it resolves');
});

test('a URL names a non-public host by address or as localhost', () => {
  assert.equal(nonPublicHost('http://127.0.0.1:8200/v1/sys'), '127.0.0.1');
  assert.equal(nonPublicHost('http://[::1]:8001/'), '::1');
  assert.equal(nonPublicHost('http://169.254.169.254/latest/meta-data/'), '169.254.169.254');
  assert.equal(nonPublicHost('http://LOCALHOST./x'), 'localhost.');
  assert.equal(nonPublicHost('https://acme.gw.localhost/x'), 'acme.gw.localhost');
  assert.equal(nonPublicHost('http://2130706433/'), '127.0.0.1', 'the URL parser reads a decimal host as an address');
  assert.equal(nonPublicHost('https://hooks.example.com/x'), undefined);
  assert.equal(nonPublicHost('https://8.8.8.8/x'), undefined);
});

test('X-Callback-URL: a non-public address is a 400 naming the header, unless allowed', () => {
  const refusal = (header: string) => {
    try {
      callbackUrlOf(header, false);
    } catch (err) {
      assert.ok(err instanceof ApiError);
      return { status: err.statusCode, code: err.code, details: err.details };
    }
    return undefined;
  };
  assert.deepEqual(refusal('http://169.254.169.254/latest'), {
    status: 400, code: 'validation_failed', details: [{ field: 'headers.x-callback-url', message: 'must name a public address, not 169.254.169.254' }],
  });
  assert.equal(refusal('http://localhost:8001/plugins')?.status, 400);
  assert.equal(refusal('ftp://hooks.example.com/')?.status, 400);
  assert.equal(callbackUrlOf('https://hooks.example.com/x', false), 'https://hooks.example.com/x');
  assert.equal(callbackUrlOf('http://127.0.0.1:9999/hooks', true), 'http://127.0.0.1:9999/hooks');
});

test('the public-only dispatcher refuses a name that resolves to a non-public address, before connecting', async (t) => {
  let reached = 0;
  const server = http.createServer((_req, res) => { reached += 1; res.end('ok'); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => server.close(() => r())));
  const port = (server.address() as AddressInfo).port;
  const dispatcher = publicOnlyDispatcher();
  t.after(() => dispatcher.close());
  // `localhost` resolves to the loopback address: the check is on what the name resolved to.
  const err = await fetch(`http://localhost:${port}/`, { dispatcher }).then(() => undefined, (e: Error) => e);
  assert.ok(err?.cause instanceof NonPublicTargetError, String(err?.cause ?? err));
  assert.match(err.cause.message, /localhost resolves to (127\.0\.0\.1|::1), not a public address/);
  assert.equal(reached, 0, 'nothing reached the server');
  // The same server without the dispatcher: it was there to be reached.
  assert.equal(await (await fetch(`http://localhost:${port}/`)).text(), 'ok');
  assert.equal(reached, 1);
});
