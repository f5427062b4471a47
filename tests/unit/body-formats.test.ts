import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BodyFormatError, jsonToXml, MAX_XML_BYTES, xmlName, xmlToJson } from '../../gateway/body-formats';

const refusal = (code: BodyFormatError['code']) => (err: unknown) => err instanceof BodyFormatError && err.code === code;

test('JSON documents survive a round trip through XML', () => {
  const samples: unknown[] = [
    { id: 42, name: 'Ada', active: true, score: -1.5, tags: ['a', 'b', 'c'], address: { city: 'Zürich', zip: '08001' } },
    { order: { lines: [{ sku: 'X-1', qty: 2 }, { sku: 'Y-2', qty: 1 }], note: 'fish & chips <hot> "now"' } },
    { big: '12345678901234567890', hex: '0x1F', padded: '007', exp: 1e21, text: 'true story' },
    'just text',
    7,
  ];
  for (const sample of samples) assert.deepEqual(xmlToJson(jsonToXml(sample)), sample);
  // What XML cannot tell apart: nested arrays gain <item> wrappers, a one-element array is its element.
  assert.deepEqual(xmlToJson(jsonToXml({ matrix: [[1, 2], [3, 4]], one: ['x'] })), { matrix: [{ item: [1, 2] }, { item: [3, 4] }], one: 'x' });
});

test('XML documents survive a round trip through JSON, attributes included', () => {
  const xml = '<invoice number="INV-7" paid="false"><line sku="A">3</line><line sku="B">4</line><total currency="EUR">12.50</total><memo/></invoice>';
  const json = xmlToJson(xml);
  assert.deepEqual(json, {
    '@_number': 'INV-7',
    '@_paid': false,
    line: [{ '#text': 3, '@_sku': 'A' }, { '#text': 4, '@_sku': 'B' }],
    total: { '#text': 12.5, '@_currency': 'EUR' },
    memo: '',
  });
  assert.deepEqual(xmlToJson(jsonToXml(json, 'invoice')), json);
});

test('jsonToXml writes a declaration, the root, repeated elements and escaped text', () => {
  assert.equal(
    jsonToXml({ item: [1, 2], 'bad name!': 'a<b&"c"', '1st': null, nothing: undefined, ctl: 'x\u0000y' }, 'order'),
    '<?xml version="1.0" encoding="UTF-8"?>\n<order><item>1</item><item>2</item><bad_name_>a&lt;b&amp;&quot;c&quot;</bad_name_><_1st/><ctl>xy</ctl></order>',
  );
  assert.match(jsonToXml([1, 2]), /<root><item>1<\/item><item>2<\/item><\/root>$/);
  assert.match(jsonToXml({ a: 1 }, 'my root'), /<my_root><a>1<\/a><\/my_root>$/);
});

test('element names are made valid', () => {
  assert.equal(xmlName('order-id'), 'order-id');
  assert.equal(xmlName('2fa'), '_2fa');
  assert.equal(xmlName('ns:tag'), 'ns_tag');
  assert.equal(xmlName('<script>'), '_script_');
  assert.equal(xmlName(''), '_');
  assert.equal(xmlName('xmlThing'), '_xmlThing');
  assert.equal(xmlName('größe'), 'größe');
});

test('cycles and over-deep values are refused as invalid_json', () => {
  const loop: Record<string, unknown> = {};
  loop.self = loop;
  assert.throws(() => jsonToXml(loop), refusal('invalid_json'));
  let deep: unknown = 1;
  for (let i = 0; i < 150; i++) deep = { d: deep };
  assert.throws(() => jsonToXml(deep), refusal('invalid_json'));
});

test('DOCTYPE and entity declarations are refused (XXE, billion laughs)', () => {
  const xxe = '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><foo>&xxe;</foo>';
  assert.throws(() => xmlToJson(xxe), refusal('invalid_xml'));
  const laughs = '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>';
  assert.throws(() => xmlToJson(laughs), refusal('invalid_xml'));
  assert.throws(() => xmlToJson('<a><!doctype x></a>'), refusal('invalid_xml'));
  // Predefined and numeric references still decode.
  assert.equal(xmlToJson('<a>&lt;&amp;&#65;&#x42;</a>'), '<&AB');
});

test('malformed XML is refused as invalid_xml', () => {
  for (const bad of ['<a><b></a>', 'plain text', '<a/><b/>', '<a x="1" x="2"/>', '<r><constructor>1</constructor></r>']) {
    assert.throws(() => xmlToJson(bad), refusal('invalid_xml'), bad);
  }
  assert.throws(() => xmlToJson(`${'<a>'.repeat(150)}${'</a>'.repeat(150)}`), refusal('invalid_xml'));
});

test('XML over 1 MiB is refused as body_too_large, with status 413', () => {
  const big = `<a>${'x'.repeat(MAX_XML_BYTES)}</a>`;
  assert.throws(() => xmlToJson(big), (err: unknown) => refusal('body_too_large')(err) && (err as BodyFormatError).statusCode === 413);
  // The limit counts bytes, not characters.
  const multibyte = `<a>${'é'.repeat(MAX_XML_BYTES / 2)}</a>`;
  assert.throws(() => xmlToJson(multibyte), refusal('body_too_large'));
  assert.equal(xmlToJson(`<a>${'x'.repeat(MAX_XML_BYTES - 7)}</a>`), 'x'.repeat(MAX_XML_BYTES - 7));
});
