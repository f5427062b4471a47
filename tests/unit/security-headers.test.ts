import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pluginConfigSchemas } from '../../lib/control-plane/plugins';
import { cacheControl, DEFAULT_SECURITY_HEADERS, SENSITIVE_RESPONSE_HEADERS, securityHeaders, securityHeadersFor, upstreamCacheVary } from '../../gateway/security-headers';

test('defaults lock an API down; HSTS is sent over TLS only', () => {
  const overTls = securityHeaders(DEFAULT_SECURITY_HEADERS, true);
  assert.equal(overTls['strict-transport-security'], 'max-age=31536000; includeSubDomains');
  assert.equal(overTls['content-security-policy'], "default-src 'none'; frame-ancestors 'none'");
  assert.equal(overTls['x-content-type-options'], 'nosniff');
  assert.equal(overTls['x-frame-options'], 'DENY');
  assert.equal(overTls['referrer-policy'], 'no-referrer');
  assert.equal(overTls['cross-origin-resource-policy'], 'same-origin');
  assert.equal(overTls['permissions-policy'], undefined);
  assert.equal(securityHeaders(DEFAULT_SECURITY_HEADERS, false)['strict-transport-security'], undefined);
});

test('configured values are used as given', () => {
  const h = securityHeaders({ ...DEFAULT_SECURITY_HEADERS, hsts_max_age_seconds: 0, hsts_include_subdomains: false, frame_options: 'SAMEORIGIN', permissions_policy: 'camera=()' }, true);
  assert.equal(h['strict-transport-security'], 'max-age=0');
  assert.equal(h['x-frame-options'], 'SAMEORIGIN');
  assert.equal(h['permissions-policy'], 'camera=()');
});

test('headers naming upstream software are stripped', () => {
  for (const name of ['server', 'x-powered-by', 'x-aspnet-version', 'x-aspnetmvc-version', 'x-runtime', 'via']) {
    assert.ok(SENSITIVE_RESPONSE_HEADERS.has(name), name);
  }
  assert.ok([...SENSITIVE_RESPONSE_HEADERS].every((name) => name === name.toLowerCase()));
});

test('cacheControl: nothing by default, the directive on cacheable answers, no-store on 401/403/429', () => {
  const cfg = { directive: 'public, max-age=60', vary: ['Accept', 'Accept-Encoding'] };
  assert.deepEqual(cacheControl(undefined, 'GET', 200), {});
  assert.deepEqual(cacheControl(cfg, 'get', 200), { 'cache-control': 'public, max-age=60', vary: 'Accept, Accept-Encoding' });
  assert.deepEqual(cacheControl({ directive: 'max-age=5' }, 'HEAD', 404), { 'cache-control': 'max-age=5' });
  assert.deepEqual(cacheControl({ directive: 'max-age=5' }, 'GET', 301), { 'cache-control': 'max-age=5' });
  for (const [method, status] of [['POST', 200], ['GET', 302], ['GET', 500], ['DELETE', 404]] as const) {
    assert.deepEqual(cacheControl(cfg, method, status), {}, `${method} ${status}`);
  }
  for (const status of [401, 403, 429]) {
    assert.deepEqual(cacheControl(undefined, 'POST', status), { 'cache-control': 'no-store' });
    assert.deepEqual(cacheControl(cfg, 'GET', status), { 'cache-control': 'no-store' });
  }
});

test('cacheControl: an authenticated answer varies on the credential, so no shared cache hands it to another caller', () => {
  assert.deepEqual(cacheControl({ directive: 'public, max-age=60', vary: ['Accept', 'authorization'] }, 'GET', 200, true),
    { 'cache-control': 'public, max-age=60', vary: 'Accept, authorization, X-API-Key, X-Tenant-ID' });
  assert.deepEqual(cacheControl({ directive: 'max-age=5' }, 'GET', 200, true), { 'cache-control': 'max-age=5', vary: 'Authorization, X-API-Key, X-Tenant-ID' });
  assert.deepEqual(cacheControl({ vary: ['Accept'] }, 'GET', 200, true), { vary: 'Accept' }, 'no directive: nothing to vary for');
  assert.equal(pluginConfigSchemas['cache-headers'].parse({}).directive, 'private, max-age=60', 'private unless the operator says public');
});

test('securityHeadersFor: a workspace plugin over the defaults, built once per config object and transport', () => {
  const plugin = { frame_options: 'SAMEORIGIN' as const };
  const first = securityHeadersFor(plugin, false);
  assert.equal(first['x-frame-options'], 'SAMEORIGIN');
  assert.equal(first['content-security-policy'], DEFAULT_SECURITY_HEADERS.content_security_policy);
  assert.equal(securityHeadersFor(plugin, false), first, 'the same object again: nothing rebuilt per request');
  assert.ok(securityHeadersFor(plugin, true)['strict-transport-security'], 'over TLS: with HSTS');
  assert.equal(securityHeadersFor(plugin, false)['strict-transport-security'], undefined);
  assert.equal(securityHeadersFor(undefined, false)['x-frame-options'], 'DENY', 'no plugin: the defaults');
  assert.notEqual(securityHeadersFor({ frame_options: 'SAMEORIGIN' }, false), first, 'a new config object (a new config version) is built anew');
});

test('upstreamCacheVary: an upstream Cache-Control a shared cache may store gets the credential Vary', () => {
  assert.equal(upstreamCacheVary('public, max-age=60', undefined), 'Authorization, X-API-Key, X-Tenant-ID');
  assert.equal(upstreamCacheVary('max-age=60', 'Accept'), 'Accept, Authorization, X-API-Key, X-Tenant-ID');
  assert.equal(upstreamCacheVary('max-age=60', 'authorization, x-api-key'), 'authorization, x-api-key, X-Tenant-ID');
  assert.equal(upstreamCacheVary('private, max-age=60', undefined), undefined);
  assert.equal(upstreamCacheVary('no-store', undefined), undefined);
  assert.equal(upstreamCacheVary('max-age=60', '*'), undefined);
  assert.equal(upstreamCacheVary('max-age=60', 'Authorization, X-API-Key, X-Tenant-ID'), undefined);
});
