import { ApiError } from './errors';

/**
 * A request target's path and query as WHATWG URL gives them (`new URL(target, base)`), which
 * is what the gateway forwards upstream: dot segments resolved, backslashes turned into
 * slashes, characters URL escapes escaped. Parsing a URL showed in the gateway's profile, so a
 * target that URL would leave as it is (the common case) is only split at its `?`.
 */

/** Path characters URL copies verbatim (a leading // would be read as a host); a segment starting with a dot may be a dot segment, %2e may be an encoded one. */
const PLAIN_PATH = /^\/(?!\/)[A-Za-z0-9\-._~!$&'()*+,;=:@%/]*$/;
const MAYBE_DOT_SEGMENT = /\/\.|%2e/i;
/** Query characters URL copies verbatim for http(s) (it escapes ' there, and space, ", #, <, >). */
const PLAIN_QUERY = /^[A-Za-z0-9\-._~!$&()*+,;=:@%/?]*$/;

export type RequestTarget = { pathname: string; search: string };

export function requestTarget(raw: string): RequestTarget {
  const q = raw.indexOf('?');
  const pathname = q === -1 ? raw : raw.slice(0, q);
  const query = q === -1 ? '' : raw.slice(q + 1);
  if (PLAIN_PATH.test(pathname) && !MAYBE_DOT_SEGMENT.test(pathname) && PLAIN_QUERY.test(query)) {
    return { pathname, search: query === '' ? '' : `?${query}` };
  }
  let url: URL;
  try {
    url = new URL(raw, 'http://gateway');
  } catch {
    throw new ApiError(400, 'invalid_path', 'the request target is not a valid path', [{ field: 'path', message: 'not a valid URL path' }]);
  }
  return { pathname: url.pathname, search: url.search };
}
