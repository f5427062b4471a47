// lib/request-target.ts: the fast split gives exactly what WHATWG URL gives, for any target.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { requestTarget } from '../../lib/request-target';

const outcome = (fn: () => { pathname: string; search: string }) => {
  try {
    return fn();
  } catch {
    return { threw: true };
  }
};
const viaUrl = (raw: string) => outcome(() => {
  const u = new URL(raw, 'http://gateway');
  return { pathname: u.pathname, search: u.search };
});
const fast = (raw: string) => outcome(() => requestTarget(raw));

test('known targets: plain ones are split, dot segments, backslashes and escapes go through URL', () => {
  for (const raw of [
    '/v1/orders/7', '/v1/orders/7?expand=1&x=%20y', '/a/b.json', '/a/..', '/a/../../etc/passwd', '/a/./b', '/a/%2e%2E/b', '/.well-known/x',
    '/a\\b', '/a b', '/a?b c', "/a?it's", '/a?', '/ä/ö?ü=1', '/a#frag', '//double//slash', '//', '/a?b?c', '/a/%2F/b', '/a"b', '/a?x=<y>',
  ]) assert.deepEqual(fast(raw), viaUrl(raw), raw);
});

test('a target URL refuses is a 400 invalid_path naming the path', () => {
  assert.throws(() => requestTarget('//'), (err: { statusCode: number; code: string; details: { field: string }[] }) =>
    err.statusCode === 400 && err.code === 'invalid_path' && err.details[0]!.field === 'path');
});

test('property: for any path-and-query, the same pathname and search as URL', () => {
  const chars = fc.constantFrom(...'/?.%2eE\\ #"\'<>{}|^`aZ09-_~!$&()*+,;=:@äé'.split(''), '%2e', '%2E', '..', '/../', '/./');
  fc.assert(fc.property(fc.array(chars, { maxLength: 30 }), (parts) => {
    const raw = `/${parts.join('')}`;
    assert.deepEqual(fast(raw), viaUrl(raw), raw);
  }), { numRuns: 5000 });
});
