import { randomBytes } from 'node:crypto';
/**
 * PII masking for logged bodies and, where a route asks for it, returned bodies.
 *
 * Covered: e-mail addresses; payment card numbers (13–19 digits, Luhn-valid, optionally
 * grouped by single spaces or dashes); national ids — US SSN `123-45-6789` (dashed form
 * only, SSA area/group/serial rules) and UK NINO `AB123456C` (optionally spaced, HMRC
 * prefix rules); phone numbers in E.164 form `+14155552671`. Undashed 9-digit SSNs and
 * "any id-looking number" are deliberately not covered: they match too many order ids.
 * Secrets named by their key (`"password": …`, `api_key=…`) are redacted whatever `kinds` says.
 *
 * Every pattern is precompiled and either bounded or anchored at the start of a character
 * run (look-behind), so a scan is linear in the text: no input can make it backtrack
 * quadratically.
 */

export type PiiKind = 'email' | 'card' | 'national_id' | 'phone';

const ALL_KINDS: readonly PiiKind[] = ['email', 'card', 'national_id', 'phone'];

/** Bodies longer than this are truncated before masking (64 KiB). */
export const MAX_MASKED_BODY_BYTES = 64 * 1024;
export const REDACTED = '[REDACTED]';
const TRUNCATED_MARK = '…[truncated]';
const MAX_JSON_DEPTH = 200;
const MAX_PASSES = 4;

const CARD_MASK_PREFIX = '**** **** **** ';

// A run of digit groups separated by one space or dash; groups are split in code so that
// the Luhn check can look at windows of groups without the regex backtracking.
const DIGIT_RUN = /(?<!\d)\d+(?:[ -]\d+)*/g;
// SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
const SSN = /(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])/g;
// HMRC: first letter not D F I Q U V, second not D F I O Q U V, prefixes BG GB KN NK NT TN ZZ never issued.
const NINO = /(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])/gi;
// E.164: '+', a non-zero country code digit, at most 15 digits in all.
const PHONE = /(?<![\d+])\+[1-9]\d{7,14}(?!\d)/g;
// The look-behind lets a match start only where a local-part run starts, never straight after an
// "@" (re-reading a kept domain as a local part would make masking non-idempotent).
const EMAIL = /(?<![A-Za-z0-9._%+@-])([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,63})(?![A-Za-z-])/g;
// `"key": "value"` (value possibly cut off by truncation) or `"key": bare-token`.
const JSON_PAIR = /"([^"\\\n]{1,100})"(\s{0,16}:\s{0,16})("(?:[^"\\]|\\[\s\S])*"?|[^\s,}\]"]{1,256})/g;
// The `key=` of `key=value` as in query strings and form bodies; the value is read in code, and only
// for secret keys, so `a=b:token=c` still finds `token` and `a=a=a…` stays linear.
const FORM_KEY = /(?<![\w.-])([A-Za-z_][\w.-]{0,63})=/g;
const FORM_VALUE_END = /[&\s"]/g;
// Key words (after splitting camelCase, snake_case, kebab-case) that mark a secret.
const SENSITIVE_KEY = /(?:^|_)(?:passwords?|passwd|passphrase|secrets?|token|authorization|api_?key|ssn|card_?number|cvv|cvc|private_?key)(?:_|$)/;

/** Whether a field name names a secret: password, secret, token, authorization, api_key, ssn, card_number and the like. */
export function isSensitiveKey(key: string): boolean {
  if (key.length > 100) return false;
  const words = key
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2')
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '_');
  return SENSITIVE_KEY.test(words);
}

/** Luhn (mod 10) check over a string of digits. */
export function luhnValid(digits: string): boolean {
  let sum = 0;
  let double = false;
  for (let i = digits.length - 1; i >= 0; i--) {
    let d = digits.charCodeAt(i) - 48;
    if (double) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    double = !double;
  }
  return sum % 10 === 0;
}

const maskCard = (digits: string): string => CARD_MASK_PREFIX + digits.slice(-4);

/**
 * Masks Luhn-valid card numbers inside one run of digit groups. A window of several groups
 * must have groups of 3–8 digits (how cards are written), which keeps lists of small numbers
 * out; a single group must itself be 13–19 digits, so longer ids are never split. A 4-digit
 * group right after `**** ` is the tail of an earlier mask and never starts a window, which
 * makes masking idempotent.
 */
function maskDigitRun(run: string, precededByMask: boolean): string {
  const groups: { start: number; end: number }[] = [];
  const re = /\d+/g;
  for (let m = re.exec(run); m; m = re.exec(run)) groups.push({ start: m.index, end: m.index + m[0].length });
  let out = '';
  let copied = 0;
  let i = precededByMask && groups[0] && groups[0].end - groups[0].start === 4 ? 1 : 0;
  while (i < groups.length) {
    const firstLen = groups[i]!.end - groups[i]!.start;
    const candidates: { j: number; digits: string }[] = [];
    let digits = '';
    for (let j = i; j < groups.length; j++) {
      const g = groups[j]!;
      const len = g.end - g.start;
      if (j > i && (firstLen < 3 || firstLen > 8 || len < 3 || len > 8)) break;
      digits += run.slice(g.start, g.end);
      if (digits.length > 19) break;
      if (digits.length >= 13) candidates.push({ j, digits });
    }
    // The longest Luhn-valid window wins, so a card is never masked only in part.
    let best: { j: number; digits: string } | undefined;
    for (let c = candidates.length - 1; c >= 0 && !best; c--) if (luhnValid(candidates[c]!.digits)) best = candidates[c];
    if (!best) {
      i++;
      continue;
    }
    out += run.slice(copied, groups[i]!.start) + maskCard(best.digits);
    copied = groups[best.j]!.end;
    i = best.j + 1;
  }
  return copied === 0 ? run : out + run.slice(copied);
}

function maskCards(text: string): string {
  return text.replace(DIGIT_RUN, (run: string, offset: number) =>
    maskDigitRun(run, text.endsWith('**** ', offset)),
  );
}

const keepLast = (s: string, n: number): string => {
  let kept = 0;
  let out = '';
  for (let i = s.length - 1; i >= 0; i--) {
    const ch = s[i]!;
    if (/[A-Za-z0-9]/.test(ch)) out = (kept++ < n ? ch : '*') + out;
    else out = ch + out;
  }
  return out;
};

function redactFormPairs(text: string): string {
  let out = '';
  let copied = 0;
  FORM_KEY.lastIndex = 0;
  for (let m = FORM_KEY.exec(text); m; m = FORM_KEY.exec(text)) {
    if (!isSensitiveKey(m[1]!)) continue;
    const valueStart = m.index + m[0].length;
    FORM_VALUE_END.lastIndex = valueStart;
    const valueEnd = FORM_VALUE_END.exec(text)?.index ?? text.length;
    const value = text.slice(valueStart, valueEnd);
    if (value !== '' && value !== REDACTED) {
      out += text.slice(copied, valueStart) + REDACTED;
      copied = valueEnd;
    }
    FORM_KEY.lastIndex = valueEnd;
  }
  return copied === 0 ? text : out + text.slice(copied);
}

function redactPairs(text: string): string {
  const json = text.replace(JSON_PAIR, (all: string, key: string, sep: string, value: string) =>
    isSensitiveKey(key) && value !== `"${REDACTED}"` && value !== 'null' ? `"${key}"${sep}"${REDACTED}"` : all,
  );
  return redactFormPairs(json);
}

function maskOnce(text: string, kinds: readonly PiiKind[]): string {
  let out = redactPairs(text);
  // Cards first: an e-mail mask would otherwise cut a card's last group short and leave the rest.
  // E-mails next: a mask's "***" can end a NINO or SSN that an address's first character was glued
  // to, so those look afterwards (and the result needs no second round).
  if (kinds.includes('card')) out = maskCards(out);
  if (kinds.includes('email')) out = out.replace(EMAIL, (_all, first: string, domain: string) => `${first}***@${domain}`);
  if (kinds.includes('national_id')) {
    out = out.replace(SSN, (ssn) => `***-**-${ssn.slice(-4)}`);
    out = out.replace(NINO, (nino) => keepLast(nino, 3));
  }
  if (kinds.includes('phone')) out = out.replace(PHONE, (phone) => `+${'*'.repeat(phone.length - 3)}${phone.slice(-2)}`);
  return out;
}

/** Masks the given kinds of PII (default: all) and key-named secrets inside free text. */
export function maskText(text: string, kinds: readonly PiiKind[] = ALL_KINDS): string {
  // A mask can expose a neighbour its first pass could not see (an address glued to the domain of
  // the one before it starts a run once the SSN between them becomes '***'), so passes repeat until
  // nothing changes. Each change turns characters into '*', so this ends at once in practice.
  let out = text;
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const next = maskOnce(out, kinds);
    if (next === out) break;
    out = next;
  }
  return out;
}

/**
 * Walks objects and arrays, masking string values (and integers that are card numbers) with
 * `maskText`, and replacing the whole value of key-named secrets with `[REDACTED]`. Keys
 * themselves are kept as they are. Cycles become `[CIRCULAR]`; nesting deeper than 200 levels
 * becomes `[TOO_DEEP]`.
 */
export function maskJson(value: unknown, kinds: readonly PiiKind[] = ALL_KINDS, bigIntegerMark?: string): unknown {
  const ancestors = new Set<object>();
  const maskNumber = (s: string) => (kinds.includes('card') && /^\d{13,19}$/.test(s) && luhnValid(s) ? maskCard(s) : undefined);
  const walk = (v: unknown, depth: number): unknown => {
    if (typeof v === 'string') {
      // An integer too long for a double, carried as marked text (maskJsonText): masked as a number is.
      if (bigIntegerMark !== undefined && v.startsWith(bigIntegerMark)) return maskNumber(v.slice(bigIntegerMark.length)) ?? v;
      return maskText(v, kinds);
    }
    if (typeof v === 'number') {
      if (Number.isInteger(v) && v > 0) return maskNumber(String(v)) ?? v;
      return v;
    }
    if (v === null || typeof v !== 'object') return v;
    if (ancestors.has(v)) return '[CIRCULAR]';
    if (depth >= MAX_JSON_DEPTH) return '[TOO_DEEP]';
    ancestors.add(v);
    try {
      if (Array.isArray(v)) return v.map((item) => walk(item, depth + 1));
      const out: Record<string, unknown> = {};
      for (const [k, item] of Object.entries(v)) {
        const redact = isSensitiveKey(k) && item !== null && item !== undefined && item !== '';
        // defineProperty: a `__proto__` key from JSON.parse stays an own property.
        Object.defineProperty(out, k, { value: redact ? REDACTED : walk(item, depth + 1), enumerable: true, writable: true, configurable: true });
      }
      return out;
    } finally {
      ancestors.delete(v);
    }
  };
  return walk(value, 0);
}

const JSON_TYPE = /^(?:application\/(?:[\w.-]+\+)?json|text\/json)$/;

function isJsonType(contentType: string | undefined): boolean {
  if (!contentType) return false;
  return JSON_TYPE.test((contentType.split(';')[0] ?? '').trim().toLowerCase());
}

const isDigitRunChar = (c: number) => (c >= 48 && c <= 57) || c === 32 || c === 45;
const isTokenChar = (c: number) =>
  (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || c === 46 || c === 64 || c === 43 || c === 37 || c === 95 || c === 45;

/** Drops a token the cut may have split (a card's first groups, half an e-mail), so no partial PII survives unmasked. */
function dropTrailingPartialToken(text: string): string {
  let i = text.length;
  const digitFloor = Math.max(0, i - 64);
  while (i > digitFloor && isDigitRunChar(text.charCodeAt(i - 1))) i--;
  const tokenFloor = Math.max(0, i - 320);
  while (i > tokenFloor && isTokenChar(text.charCodeAt(i - 1))) i--;
  return text.slice(0, i);
}

/**
 * Masks a request or response body for logging or returning: JSON content types are parsed
 * and masked with `maskJson`, anything else (or JSON that does not parse) with `maskText`.
 * Bodies over 64 KiB are truncated first and end with `…[truncated]`.
 */
export function maskBody(body: Buffer | string, contentType: string | undefined, kinds: readonly PiiKind[] = ALL_KINDS): string {
  const bytes = typeof body === 'string' ? Buffer.from(body.length > MAX_MASKED_BODY_BYTES ? body.slice(0, MAX_MASKED_BODY_BYTES + 1) : body, 'utf8') : body;
  const truncated = bytes.length > MAX_MASKED_BODY_BYTES;
  const text = bytes.subarray(0, MAX_MASKED_BODY_BYTES).toString('utf8');
  if (truncated) return maskText(dropTrailingPartialToken(text), kinds) + TRUNCATED_MARK;
  if (contentType && FORM_TYPE.test(contentType)) return maskForm(text, kinds);
  if (isJsonType(contentType)) {
    try {
      return maskJsonText(text, kinds);
    } catch {
      return maskText(text, kinds);
    }
  }
  return maskText(text, kinds);
}

const FORM_TYPE = /^\s*application\/x-www-form-urlencoded\s*(;|$)/i;

/**
 * A form body masked field by field on its decoded names and values: browsers send `@` as `%40`
 * and spaces as `+`, which the text patterns would not see.
 */
function maskForm(text: string, kinds: readonly PiiKind[]): string {
  const encode = (v: string) => encodeURIComponent(v).replace(/%40/g, '@').replace(/%20/g, '+');
  const out: string[] = [];
  for (const [name, value] of new URLSearchParams(text)) out.push(`${encode(maskText(name, kinds))}=${encode(isSensitiveKey(name) ? '***' : maskText(value, kinds))}`);
  return out.join('&');
}

/** Paths worth a look: an address, an escape, or a run of digits a card or an id could be. */
const MAYBE_PII_IN_PATH = /[@%]|\d{4}/;
/** What a path may carry that the audit trail keeps: not phone numbers, which look like the ids paths are full of. */
const PATH_KINDS: readonly PiiKind[] = ['email', 'card', 'national_id'];

/** A request path for the audit trail and `api_calls`: emails, cards and national ids masked, escapes read. */
export function maskPath(path: string): string {
  if (!MAYBE_PII_IN_PATH.test(path)) return path;
  let text = path;
  if (path.includes('%')) {
    try {
      text = decodeURIComponent(path);
    } catch { /* not UTF-8: masked as written */ }
  }
  const masked = maskText(text, PATH_KINDS);
  return masked === text ? path : masked;
}

/**
 * JSON text masked with `maskJson`, keeping integers beyond 2^53 exactly as written (JSON.parse
 * would round an id 1234567890123456789 to …800): they go through the parse as marked strings,
 * are masked as numbers are (a card number sent as a number still is), and are written back as
 * the numbers they were. Throws as JSON.parse does.
 */
export function maskJsonText(text: string, kinds: readonly PiiKind[] = ALL_KINDS): string {
  const big = bigIntegerTokens(text);
  if (!big.length) return JSON.stringify(maskJson(JSON.parse(text), kinds));
  const mark = `\u0000${randomBytes(6).toString('hex')}:`;
  const escaped = JSON.stringify(mark).slice(1, -1); // NUL as \u0000
  let marked = '';
  let at = 0;
  for (const [start, end] of big) {
    marked += `${text.slice(at, start)}"${escaped}${text.slice(start, end)}"`;
    at = end;
  }
  marked += text.slice(at);
  const out = JSON.stringify(maskJson(JSON.parse(marked), kinds, mark));
  const quoted = new RegExp(`"${escaped.replace(/[\\^$.*+?()[\]{}|]/g, '\\$&')}(-?\\d+)"`, 'g');
  return out.replace(quoted, '$1');
}

/** [start, end) of each integer literal outside strings with 16 digits or more (past what a double holds exactly). */
function bigIntegerTokens(text: string): [number, number][] {
  const found: [number, number][] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 34) { // a string: on to its closing quote
      for (i++; i < text.length && text.charCodeAt(i) !== 34; i++) if (text.charCodeAt(i) === 92) i++;
      continue;
    }
    if (c !== 45 && (c < 48 || c > 57)) continue;
    const start = i;
    if (c === 45) i++;
    let digits = 0;
    while (i < text.length && text.charCodeAt(i) >= 48 && text.charCodeAt(i) <= 57) { i++; digits++; }
    const next = text.charCodeAt(i);
    if (digits >= 16 && next !== 46 && next !== 101 && next !== 69) found.push([start, i]); // not . e E
    while (i < text.length && '0123456789.eE+-'.includes(text[i]!)) i++;
    i--;
  }
  return found;
}
