// serviceUrl: where a third-party call goes. The path a caller gives is appended under the
// service's base URL; nothing in it may move the call (and the credential) to another host or
// above the base path.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { outboundAllows, PathOutsideService, servicePath, serviceUrl, thirdPartyService, type ThirdPartyService } from '../../lib/third-party/services';

const svc = (base_url: string) => ({ name: 'provider', base_url }) as ThirdPartyService;

test('a path goes under the base URL, whatever slashes either has', () => {
  assert.equal(serviceUrl(svc('http://127.0.0.1:8300'), '/v1/charges').href, 'http://127.0.0.1:8300/v1/charges');
  assert.equal(serviceUrl(svc('https://api.example/v2/'), 'charges?limit=3').href, 'https://api.example/v2/charges?limit=3');
  assert.equal(serviceUrl(svc('https://api.example/v2'), '//charges/ch_1').href, 'https://api.example/v2/charges/ch_1');
  assert.equal(serviceUrl(svc('https://user:pw@api.example/v2'), 'a/./b').href, 'https://user:pw@api.example/v2/a/b');
});

test('an absolute or scheme-relative URL in the path stays a path on the service', () => {
  for (const path of ['http://evil.example/x', 'https:evil.example/x', 'https://evil.example/x', '//evil.example/x', '@evil.example/x', 'http:%2F%2Fevil.example']) {
    const url = serviceUrl(svc('http://127.0.0.1:8300'), path);
    assert.equal(url.origin, 'http://127.0.0.1:8300', path);
    assert.equal(url.host, '127.0.0.1:8300', path);
  }
});

test('a path that climbs above the base path is refused, in any spelling', () => {
  for (const path of ['../admin', 'a/../../admin', '%2e%2e/admin', '.%2E/admin', 'a/%2e%2e/%2E%2E/x']) {
    assert.throws(() => serviceUrl(svc('https://api.example/v2'), path), (err: unknown) => {
      assert.ok(err instanceof PathOutsideService, path);
      assert.equal(err.service, 'provider');
      return true;
    });
  }
  // Within the base, dot segments are fine.
  assert.equal(serviceUrl(svc('https://api.example/v2'), 'a/../b').href, 'https://api.example/v2/b');
});

test("an outbound list matches a method and the path's exact segments; `:name` is one segment, a final `*` the rest", () => {
  const svc = thirdPartyService.parse({
    name: 's', base_url: 'http://h/api',
    outbound: [{ method: 'POST', path: '/v1/charges' }, { method: 'GET', path: '/v1/charges/:id' }, { method: 'GET', path: '/v2/*' }],
  });
  for (const [method, path, allowed] of [
    ['POST', '/v1/charges', true], ['POST', '/v1/charges?expand=x', true], ['POST', '/v1/charges/', false], ['GET', '/v1/charges', false],
    ['GET', '/v1/charges/ch_1', true], ['GET', '/v1/charges/ch_1/refunds', false], ['GET', '/v2/a/b', true], ['GET', '/v2', false],
  ] as const) assert.equal(outboundAllows(svc, method, path), allowed, `${method} ${path}`);
  // Matched on the path as called: `..` is folded first, so it cannot reach an unlisted endpoint.
  assert.equal(servicePath(svc, 'v1/charges/x/..'), '/v1/charges/');
  assert.equal(servicePath(svc, '/v1/x/../charges'), '/v1/charges');
  assert.equal(outboundAllows(thirdPartyService.parse({ name: 'n', base_url: 'http://h' }), 'POST', '/v1/charges'), false, 'nothing is open by default');
});
