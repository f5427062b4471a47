// lib/request-target.ts: one canonical path for matching, authorization and the upstream, and
// the fast split gives exactly what the slow path (canonical form, then WHATWG URL) gives.
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
/** The reference: unreserved escapes decoded (others upper-cased), slashes squeezed, then URL. */
const canonical = (raw: string) => {
  const q = raw.indexOf('?');
  const path = (q === -1 ? raw : raw.slice(0, q))
    .replace(/\\/g, '/')
    .replace(/%[0-9A-Fa-f]{2}/g, (e) => {
      const byte = Number.parseInt(e.slice(1), 16);
      return byte < 0x80 && /^[A-Za-z0-9\-._~]$/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : e.toUpperCase();
    })
    .replace(/\/+/g, '/');
  return path + (q === -1 ? '' : raw.slice(q));
};
const viaUrl = (raw: string) => outcome(() => {
  const u = new URL(canonical(raw), 'http://gateway');
  // A dot segment behind an encoded separator is refused (an upstream may decode it first).
  if (/%2F|%5C/i.test(u.pathname) && u.pathname.split(/\/|%2F|%5C/i).some((s) => s === '.' || s === '..')) throw new Error('unsafe');
  return { pathname: u.pathname, search: u.search };
});
const fast = (raw: string) => outcome(() => requestTarget(raw));

test('known targets: plain ones are split, dot segments, backslashes and escapes go through URL', () => {
  for (const raw of [
    '/v1/orders/7', '/v1/orders/7?expand=1&x=%20y', '/a/b.json', '/a/..', '/a/../../etc/passwd', '/a/./b', '/a/%2e%2E/b', '/.well-known/x',
    '/a\\b', '/a b', '/a?b c', "/a?it's", '/a?', '/ä/ö?ü=1', '/a#frag', '//double//slash', '//', '/a?b?c', '/a/%2F/b', '/a"b', '/a?x=<y>',
  ]) assert.deepEqual(fast(raw), viaUrl(raw), raw);
});

test('one path however it is spelled: escapes of unreserved characters, doubled slashes', () => {
  for (const [raw, pathname] of [
    ['/%61dmin/users', '/admin/users'], ['/api//admin', '/api/admin'], ['//admin', '/admin'], ['/%2e%2E/admin', '/admin'],
    ['/a/%7euser', '/a/~user'], ['/api/\\admin/x', '/api/admin/x'], ['/api\\\\admin', '/api/admin'], ['/a%2fb', '/a%2Fb'], ['/a%20b', '/a%20b'], ['/caf%c3%a9', '/caf%C3%A9'], ['/a/%2561', '/a/%2561'],
  ]) assert.equal(requestTarget(raw!).pathname, pathname, raw);
  assert.equal(requestTarget('/%61?x=%61').search, '?x=%61', 'the query is left as it is');
});

test('a dot segment behind an encoded slash or backslash is refused: an upstream that decodes it first would climb out', () => {
  for (const raw of ['/public/..%2F..%2Finternal', '/public/..%2finternal', '/public/%2e%2e%2Fadmin', '/public/..%5Cadmin', '/a%2F..%2Fb', '/a%2F.']) {
    assert.throws(() => requestTarget(raw), (err: unknown) => (err as { code?: string }).code === 'unsafe_path' && (err as { statusCode?: number }).statusCode === 400, raw);
  }
  for (const raw of ['/a%2Fb', '/files/a..b%2Fc', '/x%2F...%2Fy']) assert.doesNotThrow(() => requestTarget(raw), raw);
});

test('property: for any path-and-query, the same pathname and search as URL', () => {
  const chars = fc.constantFrom(...'/?.%2eE\\ #"\'<>{}|^`aZ09-_~!$&()*+,;=:@äé'.split(''), '%2e', '%2E', '%61', '%7E', '%2f', '%C3%A9', '//', '..', '/../', '/./');
  fc.assert(fc.property(fc.array(chars, { maxLength: 30 }), (parts) => {
    const raw = `/${parts.join('')}`;
    assert.deepEqual(fast(raw), viaUrl(raw), raw);
  }), { numRuns: 5000 });
});
