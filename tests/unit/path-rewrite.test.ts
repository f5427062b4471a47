import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileRewrite, PathRewriteError, rewriteError } from '../../lib/path-rewrite';

test('numbered and named groups are substituted; unmatched paths pass through', () => {
  const users = compileRewrite({ pattern: '^/v1/users/(\\d+)$', replacement: '/users/$1' });
  assert.equal(users('/v1/users/42'), '/users/42');
  assert.equal(users('/v1/users/abc'), '/v1/users/abc');
  const named = compileRewrite({ pattern: '^/api/(?<version>v\\d)/(?<rest>.*)$', replacement: '/$<rest>?v=$<version>' });
  assert.equal(named('/api/v2/orders/7'), '/orders/7?v=v2');
  assert.equal(compileRewrite({ pattern: '^/old', replacement: '/new' })('/old/thing'), '/new/thing');
  assert.equal(compileRewrite({ pattern: '^/price$', replacement: '/cost$$' })('/price'), '/cost$');
});

test('the result starts with exactly one slash and cannot climb with dot segments', () => {
  const strip = compileRewrite({ pattern: '^/v1(.*)$', replacement: '$1' });
  assert.equal(strip('/v1/x'), '/x');
  assert.equal(strip('/v1//evil.example/x'), '/evil.example/x');
  assert.equal(compileRewrite({ pattern: '^/a/(.*)$', replacement: '$1' })('/a/b'), '/b');
  const files = compileRewrite({ pattern: '^/public/(.*)$', replacement: '/static/$1' });
  for (const sneaky of ['/public/../admin', '/public/%2e%2E/admin', '/public/..\\admin', '/public/./x', '/public/..%2Fadmin', '/public/..%5cadmin']) {
    assert.throws(() => files(sneaky), (err: unknown) => err instanceof PathRewriteError && err.code === 'unsafe_path', sneaky);
  }
  assert.equal(files('/public/a..b/c'), '/static/a..b/c');
});

test('rewriteError explains what the Admin API must refuse', () => {
  assert.equal(rewriteError({ pattern: '^/v1/users/(\\d+)$', replacement: '/users/$1' }), undefined);
  assert.match(rewriteError({ pattern: '', replacement: '/' }) ?? '', /non-empty/);
  assert.match(rewriteError({ pattern: '^/v1/(\\d+', replacement: '/' }) ?? '', /not a valid regular expression/);
  assert.match(rewriteError({ pattern: '^/(\\d+)$', replacement: '/x/$2' }) ?? '', /group \$2, but the pattern has 1/);
  assert.match(rewriteError({ pattern: '^/(\\d+)$', replacement: '/x/$0' }) ?? '', /group \$0/);
  assert.match(rewriteError({ pattern: '^/(?<id>\\d+)$', replacement: '/x/$<ID>' }) ?? '', /group <ID>/);
  assert.equal(rewriteError({ pattern: '^/(\\d+)$', replacement: '/x/$10' }), undefined, '$10 reads as $1 then "0"');
  assert.match(rewriteError({ pattern: `^/${'a'.repeat(600)}`, replacement: '/' }) ?? '', /longer than/);
  assert.throws(() => compileRewrite({ pattern: '(', replacement: '/' }), (err: unknown) => err instanceof PathRewriteError && err.code === 'invalid_rewrite');
});

test('nested quantifiers are refused as a ReDoS risk', () => {
  for (const pattern of ['^/(a+)+$', '^/(\\d*)*x', '^/(?:[a-z]+/){2,}$', '^/((ab)*c)+$', '^/(?:a|ab)+$', '^/(?<n>x+)*$', '^/(a{1,3}){5}']) {
    assert.match(rewriteError({ pattern, replacement: '/' }) ?? '', /exponential/, pattern);
  }
  for (const pattern of ['^/(a+)$', '^/(\\d+)/(\\w+)?$', '^/[(+)]+$', '^/\\(a+\\)+$', '^/(a|b)/(c)?$', '^/(ab){3}$', '^/x{2,}/(y)?']) {
    assert.equal(rewriteError({ pattern, replacement: '/' }), undefined, pattern);
  }
});
