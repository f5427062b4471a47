/**
 * Upstream path rewriting: a route's `{ pattern, replacement }` is a JavaScript regular
 * expression and a `String.prototype.replace` replacement (`$1`, `$<name>`, `$$`).
 */
import { ApiError } from './errors';

export type PathRewrite = { pattern: string; replacement: string };

/** `invalid_rewrite`: the rule itself is unusable. `unsafe_path`: a request's path would climb out of the rewritten prefix. */
export class PathRewriteError extends ApiError {
  declare readonly code: 'invalid_rewrite' | 'unsafe_path';

  constructor(code: 'invalid_rewrite' | 'unsafe_path', message: string) {
    super(400, code, message);
    this.name = 'PathRewriteError';
  }
}

export const MAX_PATTERN_LENGTH = 512;
export const MAX_REPLACEMENT_LENGTH = 512;

const QUANTIFIER = /^(?:[*+?]|\{(\d+)(?:(,)(\d*))?\})/;

/** The largest repeat count of the quantifier at `i`, and where it ends; undefined when there is none. */
function readQuantifier(pattern: string, i: number): { max: number; end: number } | undefined {
  const m = QUANTIFIER.exec(pattern.slice(i, i + 24));
  if (!m) return undefined;
  let max: number;
  if (m[0] === '?') max = 1;
  else if (m[0] === '*' || m[0] === '+') max = Infinity;
  else if (m[2] === undefined) max = Number(m[1]);
  else max = m[3] ? Number(m[3]) : Infinity;
  let end = i + m[0].length;
  if (pattern[end] === '?') end++; // lazy
  return { max, end };
}

/**
 * ReDoS heuristic: a repeated group (`+`, `*`, `{n,}`, `{n,m>1}`) that itself contains a
 * repeating quantifier or an alternation — `(a+)+`, `(\d*)*`, `(?:a|ab)+` — can backtrack
 * exponentially. It also refuses some safe patterns such as `(?:[^/]+/)*`; `(.*)` does the same job.
 */
function nestedQuantifier(pattern: string): string | undefined {
  const stack: { repeats: boolean; alternates: boolean; start: number }[] = [{ repeats: false, alternates: false, start: 0 }];
  let i = 0;
  while (i < pattern.length) {
    const c = pattern[i];
    if (c === '\\') {
      i += 2;
    } else if (c === '[') {
      i++;
      if (pattern[i] === '^') i++;
      if (pattern[i] === ']') i++;
      while (i < pattern.length && pattern[i] !== ']') i += pattern[i] === '\\' ? 2 : 1;
      i++;
    } else if (c === '(') {
      stack.push({ repeats: false, alternates: false, start: i });
      i++;
      if (pattern[i] === '?') {
        const prefix = /^\?(?::|=|!|<=|<!|<[A-Za-z_$][\w$]*>)/.exec(pattern.slice(i, i + 64));
        i += prefix ? prefix[0].length : 1;
      }
      continue;
    } else if (c === ')') {
      const group = stack.length > 1 ? stack.pop()! : stack[0]!;
      const q = readQuantifier(pattern, i + 1);
      if (q && q.max > 1 && (group.repeats || group.alternates)) {
        const what = group.repeats ? 'a quantifier' : 'an alternation';
        return `pattern repeats a group that contains ${what} ("${pattern.slice(group.start, q.end)}"), which can take exponential time; simplify it, e.g. with (.*)`;
      }
      const parent = stack[stack.length - 1]!;
      parent.repeats ||= group.repeats || (q !== undefined && q.max > 1);
      parent.alternates ||= group.alternates;
      i = q ? q.end : i + 1;
      continue;
    } else if (c === '|') {
      stack[stack.length - 1]!.alternates = true;
      i++;
    } else {
      i++;
    }
    const q = readQuantifier(pattern, i);
    if (q) {
      if (q.max > 1) stack[stack.length - 1]!.repeats = true;
      i = q.end;
    }
  }
  return undefined;
}

const REPLACEMENT_TOKEN = /\$(?:\$|&|`|'|<([^>]*)>|(\d)(\d)?)/g;

/** Why a rewrite rule is unusable, for the Admin API validator; undefined when it is fine. */
export function rewriteError(r: PathRewrite): string | undefined {
  if (typeof r?.pattern !== 'string' || r.pattern.length === 0) return 'pattern must be a non-empty string';
  if (typeof r.replacement !== 'string') return 'replacement must be a string';
  if (r.pattern.length > MAX_PATTERN_LENGTH) return `pattern is longer than ${MAX_PATTERN_LENGTH} characters`;
  if (r.replacement.length > MAX_REPLACEMENT_LENGTH) return `replacement is longer than ${MAX_REPLACEMENT_LENGTH} characters`;
  let probe: RegExpExecArray;
  try {
    // `|` makes the pattern match '' so the match reports how many groups it has.
    probe = new RegExp(`${r.pattern}|`).exec('')!;
  } catch (err) {
    return `pattern is not a valid regular expression: ${(err as Error).message}`;
  }
  const nested = nestedQuantifier(r.pattern);
  if (nested) return nested;
  const groupCount = probe.length - 1;
  const names = new Set(Object.keys(probe.groups ?? {}));
  for (const m of r.replacement.matchAll(REPLACEMENT_TOKEN)) {
    const [, name, d1, d2] = m;
    if (name !== undefined && !names.has(name)) return `replacement refers to group <${name}>, which the pattern does not define`;
    if (d1 !== undefined) {
      // String.prototype.replace reads `$12` as group 12 when it exists, else as group 1 and a literal '2'.
      const two = d2 !== undefined ? Number(d1 + d2) : 0;
      const n = two >= 1 && two <= groupCount ? two : Number(d1);
      if (n < 1 || n > groupCount) return `replacement refers to group $${n}, but the pattern has ${groupCount} group(s)`;
    }
  }
  return undefined;
}

const isDotSegment = (segment: string): boolean => {
  const s = segment.replace(/%2e/gi, '.');
  return s === '.' || s === '..';
};

/** Whether a path has a `.` or `..` segment between separators, encoded ones (%2F, %5C, %2e) included. */
export const hasDotSegment = (path: string): boolean => path.split(/[/\\]|%2F|%5C/i).some(isDotSegment);

/**
 * Compiles a rule (throwing `PathRewriteError` `invalid_rewrite` when `rewriteError` objects).
 * The result takes a request path without its query string: a path the pattern does not match
 * comes back unchanged; a rewritten one always starts with exactly one '/', and a rewrite that
 * would contain a `.` or `..` segment (even as `%2e`) throws `unsafe_path`, so a client cannot
 * climb out of the prefix the replacement pins.
 */
export function compileRewrite(r: PathRewrite): (path: string) => string {
  const error = rewriteError(r);
  if (error) throw new PathRewriteError('invalid_rewrite', error);
  const re = new RegExp(r.pattern);
  const { replacement } = r;
  return (path: string): string => {
    if (!re.test(path)) return path;
    const rewritten = path.replace(re, replacement).replace(/^[/\\]*/, '/');
    if (hasDotSegment(rewritten)) throw new PathRewriteError('unsafe_path', 'path contains a dot segment');
    return rewritten;
  };
}
