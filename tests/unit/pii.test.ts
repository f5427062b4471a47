import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { isSensitiveKey, luhnValid, maskBody, maskJson, maskJsonText, maskPath, maskText, MAX_MASKED_BODY_BYTES } from '../../gateway/pii';

/** A Luhn-valid 16-digit number: 15 random digits and the check digit that completes them. */
const luhnCard = fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 15, maxLength: 15 }).map((body) => {
  const head = (body[0] === 0 ? [4, ...body.slice(1)] : body).join('');
  for (let check = 0; check <= 9; check++) if (luhnValid(head + check)) return head + check;
  throw new Error('unreachable');
});
const cardLayout = fc.constantFrom('plain', 'spaces', 'dashes');
const layout = (digits: string, how: string): string =>
  how === 'plain' ? digits : (digits.match(/\d{4}/g) ?? []).join(how === 'spaces' ? ' ' : '-');
// Text rich in the characters PII patterns are made of, so the generator hits their edges.
const noisyText = fc.string({ unit: fc.constantFrom(...'0123456789 -+@.*_abcAB:"=\n'.split('')), maxLength: 40 });
const boundary = fc.constantFrom(' ', '\n', ',', ':', 'x', '"', '=', '(');

test('property: a Luhn-valid 16-digit card never survives masking inside random text', () => {
  fc.assert(
    fc.property(noisyText, boundary, luhnCard, cardLayout, boundary, noisyText, (before, b1, digits, how, b2, after) => {
      const card = layout(digits, how);
      const masked = maskText(before + b1 + card + b2 + after);
      assert.ok(!masked.includes(card), `card ${card} left in ${JSON.stringify(masked)}`);
    }),
    { numRuns: 2000 },
  );
});

test('property: masking is idempotent', () => {
  // Cases an earlier version got wrong: a mask exposing a neighbour the first pass could not see.
  for (const glued of ['jane.doe@example.com123-45-6789jane.doe@example.com', 'ab 12 34 56 cjane.doe@example.com', 'B=7384938849225067:token=abc']) {
    assert.equal(maskText(maskText(glued)), maskText(glued), glued);
  }
  const piece = fc.oneof(
    noisyText,
    luhnCard.chain((d) => cardLayout.map((how) => layout(d, how))),
    fc.constantFrom('123-45-6789', 'AB123456C', 'ab 12 34 56 c', '+14155552671', 'jane.doe@example.com', '"password":"x"', 'token=abc'),
  );
  fc.assert(
    fc.property(fc.array(piece, { maxLength: 8 }), (pieces) => {
      const once = maskText(pieces.join(''));
      assert.equal(maskText(once), once);
    }),
    { numRuns: 2000 },
  );
});

test('cards: Luhn-valid numbers keep only their last 4; other digit runs are kept', () => {
  assert.equal(maskText('paid with 4111 1111 1111 1111.'), 'paid with **** **** **** 1111.');
  assert.equal(maskText('amex 378282246310005'), 'amex **** **** **** 0005');
  assert.equal(maskText('mc 5555-5555-5555-4444'), 'mc **** **** **** 4444');
  // Fails Luhn: an order id, not a card.
  assert.equal(maskText('order 4111111111111112'), 'order 4111111111111112');
  // A 20-digit id is never split to find a card inside it.
  assert.equal(maskText('ref 41111111111111110000'), 'ref 41111111111111110000');
  // Lists of short numbers are not read as grouped cards.
  assert.equal(maskText('ids 1 2 3 4 5 6 7 8 9 1 2 3 0'), 'ids 1 2 3 4 5 6 7 8 9 1 2 3 0');
});

test('e-mails keep their first character and domain', () => {
  assert.equal(maskText('write to john.doe+tag@example.co.uk today'), 'write to j***@example.co.uk today');
  assert.equal(maskText('not an address: a@b'), 'not an address: a@b');
});

test('national ids: US SSN by SSA rules and UK NINO by HMRC rules', () => {
  assert.equal(maskText('ssn 123-45-6789'), 'ssn ***-**-6789');
  for (const invalid of ['000-12-3456', '666-12-3456', '912-34-5678', '123-00-4567', '123-45-0000']) {
    assert.equal(maskText(invalid), invalid);
  }
  assert.equal(maskText('ni AB123456C'), 'ni ******56C');
  assert.equal(maskText('ni ab 12 34 56 c'), 'ni ** ** ** 56 c');
  for (const invalid of ['BG123456C', 'QQ123456C', 'AO123456C', 'AB123456E']) assert.equal(maskText(invalid), invalid);
  // No generic "id-looking number" rule: bare 9-digit numbers stay.
  assert.equal(maskText('invoice 123456789'), 'invoice 123456789');
});

test('phones in E.164 keep their last 2 digits', () => {
  assert.equal(maskText('call +14155552671'), 'call +*********71');
  assert.equal(maskText('+44 20 7946 0958'), '+44 20 7946 0958');
});

test('kinds limit what is masked', () => {
  const text = 'a@example.com +14155552671 4111111111111111 123-45-6789';
  assert.equal(maskText(text, ['email']), 'a***@example.com +14155552671 4111111111111111 123-45-6789');
  assert.equal(maskText(text, ['phone', 'national_id']), 'a@example.com +*********71 4111111111111111 ***-**-6789');
});

test('key-named secrets are redacted in JSON values and in text', () => {
  assert.deepEqual(
    maskJson({ user: { email: 'jane@example.com', Password: 'hunter2', accessToken: 'abc', apiKey: 7, note: null }, cards: [4111111111111111, 'x'], max_tokens: 5 }),
    { user: { email: 'j***@example.com', Password: '[REDACTED]', accessToken: '[REDACTED]', apiKey: '[REDACTED]', note: null }, cards: ['**** **** **** 1111', 'x'], max_tokens: 5 },
  );
  assert.equal(maskText('{"client_secret": "s3cr3t", "id": 1}'), '{"client_secret": "[REDACTED]", "id": 1}');
  assert.equal(maskText('grant=x&password=hunter2&user=jo'), 'grant=x&password=[REDACTED]&user=jo');
  for (const key of ['password', 'client_secret', 'X-Api-Key', 'api_key', 'Authorization', 'ssn', 'card_number', 'cardNumber', 'refresh_token']) {
    assert.ok(isSensitiveKey(key), key);
  }
  for (const key of ['className', 'tokenizer', 'max_tokens', 'email', 'cardholder']) assert.ok(!isSensitiveKey(key), key);
});

test('maskJson keeps a __proto__ key as data and survives cycles', () => {
  const parsed = JSON.parse('{"__proto__": {"email": "a@b.io"}}');
  const masked = maskJson(parsed) as Record<string, unknown>;
  assert.equal(JSON.stringify(masked), '{"__proto__":{"email":"a***@b.io"}}');
  const loop: Record<string, unknown> = { a: 1 };
  loop.self = loop;
  assert.deepEqual(maskJson(loop), { a: 1, self: '[CIRCULAR]' });
});

test('maskBody parses JSON content types and falls back to text', () => {
  const body = Buffer.from('{"email":"jane@example.com","password":"x"}');
  assert.equal(maskBody(body, 'application/json; charset=utf-8'), '{"email":"j***@example.com","password":"[REDACTED]"}');
  assert.equal(maskBody(body, 'application/problem+json'), '{"email":"j***@example.com","password":"[REDACTED]"}');
  assert.equal(maskBody('{"email":"jane@example.com",', 'application/json'), '{"email":"j***@example.com",');
  assert.equal(maskBody('email=jane@example.com', 'application/x-www-form-urlencoded'), 'email=j***@example.com');
});

test('maskBody truncates to 64 KiB and drops a token the cut may have split', () => {
  const head = 'x '.repeat((MAX_MASKED_BODY_BYTES - 10) / 2);
  const out = maskBody(`${head}4111 1111 1111 1111 and more`, 'text/plain');
  assert.ok(out.endsWith('…[truncated]'));
  assert.ok(!/4111/.test(out), 'no partial card left');
  assert.ok(out.length <= MAX_MASKED_BODY_BYTES + 20);
  const truncatedJson = maskBody(`{"password":"${'p'.repeat(MAX_MASKED_BODY_BYTES)}"}`, 'application/json');
  assert.ok(truncatedJson.startsWith('{"password":"[REDACTED]"'), 'key-named secrets are redacted even when the JSON no longer parses');
});

test('scans stay linear on adversarial input', () => {
  const inputs = [
    'a'.repeat(MAX_MASKED_BODY_BYTES),
    'a.'.repeat(MAX_MASKED_BODY_BYTES / 2),
    `a@${'b.'.repeat(MAX_MASKED_BODY_BYTES / 2)}`,
    '1 '.repeat(MAX_MASKED_BODY_BYTES / 2),
    '1-'.repeat(MAX_MASKED_BODY_BYTES / 2),
    '"a":'.repeat(MAX_MASKED_BODY_BYTES / 4),
    `"password":"${'\\'.repeat(MAX_MASKED_BODY_BYTES)}`,
    'a='.repeat(MAX_MASKED_BODY_BYTES / 2),
    '+1'.repeat(MAX_MASKED_BODY_BYTES / 2),
  ];
  const started = performance.now();
  for (const input of inputs) maskBody(input, 'text/plain');
  // Quadratic backtracking over 64 KiB takes seconds per input; linear scans take milliseconds.
  assert.ok(performance.now() - started < 1500, `took ${Math.round(performance.now() - started)} ms`);
});

test('form bodies are masked on their decoded fields: %40 and + spellings do not get past', () => {
  const masked = maskBody('email=alice%40example.com&card=4111+1111+1111+1111&password=hunter2&note=hi', 'application/x-www-form-urlencoded; charset=utf-8');
  assert.doesNotMatch(decodeURIComponent(masked.replace(/\+/g, ' ')), /alice|4111 1111|hunter2/);
  assert.match(masked, /email=a\*\*\*@example\.com&card=\*\*\*\*\+\*\*\*\*\+\*\*\*\*\+1111&password=\*\*\*&note=hi/);
});

test('audit paths: emails, cards and national ids masked, escaped or not; ordinary ids left alone', () => {
  assert.doesNotMatch(maskPath('/v1/customers/alice@example.com/orders'), /alice/);
  assert.doesNotMatch(maskPath('/v1/customers/alice%40example.com'), /alice/);
  assert.doesNotMatch(maskPath('/v1/cards/4111111111111111'), /4111111111111111/);
  assert.equal(maskPath('/v1/orders/4155551234'), '/v1/orders/4155551234');
  assert.equal(maskPath('/v1/orders/42'), '/v1/orders/42');
  assert.equal(maskPath('/v1/%FF'), '/v1/%FF');
});

test('masked JSON keeps integers beyond 2^53 as written; one that is a card number is masked', () => {
  const text = '{"order_id":1234567890123456789,"neg":-9007199254740993,"small":42,"f":1.5e300,"s":"12345678901234567890","card":4111111111111111110,"list":[12345678901234567890]}';
  const out = maskJsonText(text, ['card', 'email']);
  assert.match(out, /"order_id":1234567890123456789,/);
  assert.match(out, /"neg":-9007199254740993,/);
  assert.match(out, /"small":42,/);
  assert.match(out, /"list":\[12345678901234567890\]/);
  assert.match(out, /"s":"12345678901234567890"/, 'a string of digits stays a string');
  assert.doesNotMatch(out, /4111111111111111110/, 'a Luhn-valid card sent as a number is masked');
  assert.deepEqual(Object.keys(JSON.parse(out)), ['order_id', 'neg', 'small', 'f', 's', 'card', 'list']);
  assert.equal(maskBody(text, 'application/json').includes('1234567890123456789'), true);
});
