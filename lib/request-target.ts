import { ApiError } from './errors';
import { hasDotSegment } from './path-rewrite';

/**
 * A request target's path and query in one canonical form, which the gateway matches routes
 * on, authorizes and forwards upstream, so the three agree on what the path is:
 *
 * - percent-escapes of unreserved characters decoded (`/%61dmin` is `/admin`, RFC 3986 6.2.2.2)
 *   and the other escapes upper-cased; an encoded slash stays encoded;
 * - runs of slashes made one (`/api//admin` is `/api/admin`, as the router reads it);
 * - then as WHATWG URL gives it (`new URL(target, base)`): dot segments resolved (`%2e` too),
 *   backslashes turned into slashes, characters URL escapes escaped.
 *
 * Parsing a URL showed in the gateway's profile, so a target already canonical (the common
 * case) is only split at its `?`.
 */

/** Path characters URL copies verbatim (a leading // would be read as a host); a segment starting with a dot may be a dot segment, %2e may be an encoded one. */
const PLAIN_PATH = /^\/(?!\/)[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;
const MAYBE_DOT_SEGMENT = /\/\.|%2e/i;
/** Query characters URL copies verbatim for http(s) (it escapes ' there, and space, ", #, <, >). */
const PLAIN_QUERY = /^[A-Za-z0-9\-._~!$&()*+,;=:@%/?]*$/;

export type RequestTarget = { pathname: string; search: string };

const ESCAPE = /%([0-9A-Fa-f]{2})/g;
const UNRESERVED = /^[A-Za-z0-9\-._~]$/;
const SLASHES = /\/{2,}/g;

/** Backslashes made slashes (as URL would, but before the squeeze), unreserved escapes decoded, the others upper-cased, runs of slashes made one. */
function canonicalPath(path: string): string {
  let out = path.includes('\\') ? path.replaceAll('\\', '/') : path;
  if (out.includes('%')) {
    out = out.replace(ESCAPE, (escape, hex: string) => {
      const c = String.fromCharCode(parseInt(hex, 16));
      return UNRESERVED.test(c) ? c : escape.toUpperCase();
    });
  }
  return out.includes('//') ? out.replace(SLASHES, '/') : out;
}

export function requestTarget(raw: string): RequestTarget {
  const q = raw.indexOf('?');
  const pathname = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : raw.slice(q + 1);
  if (PLAIN_PATH.test(pathname) && !MAYBE_DOT_SEGMENT.test(pathname) && PLAIN_QUERY.test(query) && !pathname.includes('%') && !pathname.includes('//')) {
    return { pathname, search: query === '' ? '' : `?${query}` };
  }
  let url: URL;
  try {
    // An absolute-form target (`http://host/path`) is left to URL, which keeps its path only.
    url = new URL(pathname.startsWith('/') ? `${canonicalPath(pathname)}${q === -1 ? '' : raw.slice(q)}` : raw, 'http://gateway');
  } catch {
    throw new ApiError(400, 'invalid_path', 'the request target is not a valid path', [{ field: 'path', message: 'not a valid URL path' }]);
  }
  // An encoded slash stays encoded, so `..%2F` is no dot segment here; but an upstream that
  // decodes it before resolving dots (nginx, many file servers) would climb out of the route's
  // base path with it. Refused: no client needs a dot segment behind an encoded separator.
  if (ENCODED_SEPARATOR.test(url.pathname) && hasDotSegment(url.pathname)) {
    throw new ApiError(400, 'unsafe_path', 'the path has a dot segment behind an encoded slash', [{ field: 'path', message: 'a . or .. segment next to %2F or %5C' }]);
  }
  return { pathname: url.pathname, search: url.search };
}

const ENCODED_SEPARATOR = /%2F|%5C/i;
