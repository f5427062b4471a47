// The header plugins' rules (gateway/header-plugins.ts); tests/integration/gateway-traffic.test.ts
// runs them through a real gateway.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pluginConfigSchemas } from '../../lib/control-plane/plugins';
import { correlationOf, corsHeaders, corsPreflight, isPreflight, withQuery } from '../../gateway/header-plugins';
import { varyWith } from '../../gateway/security-headers';

const cors = (config: Record<string, unknown>) => pluginConfigSchemas.cors.parse(config);

test('a preflight is OPTIONS with an Origin and the method it asks for', () => {
  assert.equal(isPreflight('OPTIONS', { origin: 'https://a.example', 'access-control-request-method': 'POST' }), true);
  assert.equal(isPreflight('OPTIONS', { origin: 'https://a.example' }), false);
  assert.equal(isPreflight('GET', { origin: 'https://a.example', 'access-control-request-method': 'POST' }), false);
});

test("cors: any origin is '*' unless credentials are shared; listed headers only when the plugin lists them", () => {
  const open = cors({});
  assert.equal(corsPreflight(open, 'https://a.example', 'PATCH', 'x-one, X-Two')?.['access-control-allow-origin'], '*');
  assert.equal(corsPreflight(open, 'https://a.example', 'PATCH', 'x-one, X-Two')?.['access-control-allow-headers'], 'x-one, x-two', 'none listed: what was asked');
  const shared = cors({ credentials: true });
  assert.equal(corsPreflight(shared, 'https://a.example', 'GET', undefined)?.['access-control-allow-origin'], 'https://a.example', 'never * with credentials');
  assert.equal(corsHeaders(shared, 'https://a.example')?.['access-control-allow-credentials'], 'true');
  const strict = cors({ origins: ['https://a.example'], methods: ['GET'], headers: ['Content-Type'] });
  assert.equal(corsPreflight(strict, 'https://b.example', 'GET', undefined), undefined, 'another origin');
  assert.equal(corsPreflight(strict, 'https://a.example', 'POST', undefined), undefined, 'a method not listed');
  assert.equal(corsPreflight(strict, 'https://a.example', 'GET', 'x-other'), undefined, 'a header not listed');
  assert.equal(corsPreflight(strict, 'https://a.example', 'get', 'content-type')?.['access-control-allow-headers'], 'Content-Type');
  assert.equal(corsHeaders(strict, undefined), undefined, 'no Origin: not a cross-origin request');
});

test('request-transformer query: parameters set on the path as forwarded, a rewritten one with its own query too', () => {
  assert.equal(withQuery('/a', { v: '2' }), '/a?v=2');
  assert.equal(withQuery('/a?v=1&b=x', { v: '2' }), '/a?v=2&b=x', 'replaces one of the same name');
  assert.equal(withQuery('/legacy.php?id=42', { v: '2' }), '/legacy.php?id=42&v=2');
  assert.equal(withQuery('/a?b=1', {}), '/a?b=1');
});

test("correlation-id: the client's id under the plugin's header when it is a sane one, else the request id", () => {
  const cfg = pluginConfigSchemas['correlation-id'].parse({ header_name: 'X-Correlation-ID', echo_downstream: false });
  assert.deepEqual(correlationOf(cfg, { 'x-correlation-id': 'abc-1' }, 'req-1'), { name: 'x-correlation-id', value: 'abc-1', echo: false });
  assert.equal(correlationOf(cfg, { 'x-correlation-id': 'a b\tc' }, 'req-1').value, 'req-1');
  assert.equal(correlationOf(cfg, {}, 'req-1').value, 'req-1');
});

test('Vary gets a name once, and never beside *', () => {
  assert.equal(varyWith(undefined, ['Origin']), 'Origin');
  assert.equal(varyWith('Accept-Encoding', ['Origin']), 'Accept-Encoding, Origin');
  assert.equal(varyWith(['origin', 'Accept'], ['Origin']), 'origin, Accept');
  assert.equal(varyWith('*', ['Origin']), '*');
});
