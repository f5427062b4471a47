/**
 * JSON ↔ XML body conversion for routes that translate between a JSON client and an XML
 * upstream (or the reverse).
 *
 * Mapping, both ways:
 * - the XML root element is the envelope: `jsonToXml(v, 'order')` wraps `v` in `<order>`, and
 *   `xmlToJson` returns the root's content, so `xmlToJson(jsonToXml(v))` gives `v` back;
 * - arrays are repeated elements (`{a: [1, 2]}` ↔ `<a>1</a><a>2</a>`); an array nested directly in
 *   an array, or at the top, becomes repeated `<item>` elements. A one-element array comes back as
 *   its element, and an empty one disappears — XML cannot tell them apart;
 * - attributes are kept, under their name prefixed with `@_`; text beside child elements is `#text`;
 *   `jsonToXml` writes `@_`/`#text` keys back as attributes/text;
 * - element text is typed on the way in: `true`/`false` become booleans, decimal numbers become
 *   numbers unless that would lose anything (`007`, `0x1F`, 20-digit ids stay strings);
 *   empty elements become `''`, and JSON `null` is written as an empty element.
 */
import { XMLBuilder, XMLParser, XMLValidator } from 'fast-xml-parser';
import { ApiError } from '../lib/errors';

export type BodyFormatErrorCode = 'invalid_xml' | 'invalid_json' | 'body_too_large';

/** A body that cannot be converted; maps to 400, or 413 for `body_too_large`, in the root error handler. */
export class BodyFormatError extends ApiError {
  declare readonly code: BodyFormatErrorCode;

  constructor(code: BodyFormatErrorCode, message: string) {
    super(code === 'body_too_large' ? 413 : 400, code, message);
    this.name = 'BodyFormatError';
  }
}

/** Largest XML document `xmlToJson` accepts (1 MiB). */
export const MAX_XML_BYTES = 1024 * 1024;
/** Deepest nesting either direction accepts; matches fast-xml-parser's own default. */
export const MAX_DEPTH = 100;

const DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n';
const ATTR = '@_';
const TEXT = '#text';
const ARRAY_ITEM = 'item';

// XML 1.0 (5th ed.) NameStartChar / NameChar, without ':' so no namespace prefix is invented.
const NAME_START = 'A-Za-z_\\u00C0-\\u00D6\\u00D8-\\u00F6\\u00F8-\\u02FF\\u0370-\\u037D\\u037F-\\u1FFF\\u200C-\\u200D\\u2070-\\u218F\\u2C00-\\u2FEF\\u3001-\\uD7FF\\uF900-\\uFDCF\\uFDF0-\\uFFFD\\u{10000}-\\u{EFFFF}';
const NAME_CHAR = `${NAME_START}\\-.0-9\\u00B7\\u0300-\\u036F\\u203F-\\u2040`;
// The U+0300–U+036F range is the XML grammar's own, not a misread combined character.
// eslint-disable-next-line no-misleading-character-class
const NOT_NAME_CHAR = new RegExp(`[^${NAME_CHAR}]`, 'gu');
const STARTS_WITH_NAME_START = new RegExp(`^[${NAME_START}]`, 'u');
// Characters XML 1.0 cannot carry at all, escaped or not (controls, lone surrogates, U+FFFE/FFFF).
const NOT_XML_CHAR = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu;
const DOCTYPE_OR_ENTITY = /<!(?:DOCTYPE|ENTITY)/i;
const DECIMAL = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

/** Turns any string into a valid XML element or attribute name: bad characters become `_`. */
export function xmlName(name: string): string {
  let safe = name.replace(NOT_NAME_CHAR, '_');
  if (!STARTS_WITH_NAME_START.test(safe)) safe = `_${safe}`;
  // Names beginning with "xml" are reserved by the XML specification.
  if (/^xml/i.test(safe)) safe = `_${safe}`;
  return safe;
}

const xmlText = (s: string): string => s.replace(NOT_XML_CHAR, '');

type XmlNode = string | number | boolean | null | XmlNode[] | { [name: string]: XmlNode };

// defineProperty, not assignment: a `__proto__` key stays an ordinary own property.
const setOwn = (obj: { [name: string]: XmlNode }, name: string, value: XmlNode): void => {
  Object.defineProperty(obj, name, { value, enumerable: true, writable: true, configurable: true });
};

function toXmlTree(value: unknown): XmlNode {
  const ancestors = new Set<object>();

  const scalarOrUndefined = (v: unknown): XmlNode | undefined => {
    if (v === null) return null;
    if (typeof v === 'string') return xmlText(v);
    if (typeof v === 'number') return Number.isFinite(v) ? v : null;
    if (typeof v === 'boolean') return v;
    if (typeof v === 'bigint') return v.toString();
    return undefined;
  };

  // Returns undefined for values JSON would drop (functions, symbols, undefined).
  const convert = (v: unknown, depth: number): XmlNode | undefined => {
    if (v !== null && typeof v === 'object' && typeof (v as { toJSON?: unknown }).toJSON === 'function') {
      v = (v as { toJSON: () => unknown }).toJSON();
    }
    if (v === null || typeof v !== 'object') return scalarOrUndefined(v);
    if (depth >= MAX_DEPTH) throw new BodyFormatError('invalid_json', `value nested deeper than ${MAX_DEPTH} levels`);
    if (ancestors.has(v)) throw new BodyFormatError('invalid_json', 'value contains a cycle');
    ancestors.add(v);
    try {
      if (Array.isArray(v)) return { [ARRAY_ITEM]: convertArray(v, depth) };
      const out: { [name: string]: XmlNode } = {};
      for (const [key, item] of Object.entries(v)) {
        if (key === TEXT) {
          const text = scalarOrUndefined(item);
          if (text !== undefined && text !== null) out[TEXT] = text;
          continue;
        }
        if (key.startsWith(ATTR) && key.length > ATTR.length) {
          const attr = scalarOrUndefined(item) ?? (item === undefined ? undefined : xmlText(JSON.stringify(item) ?? ''));
          if (attr !== undefined && attr !== null) out[ATTR + xmlName(key.slice(ATTR.length))] = attr;
          continue;
        }
        const node = Array.isArray(item) ? nestedArray(item, depth) : convert(item, depth + 1);
        if (node === undefined) continue;
        const name = xmlName(key);
        // Two keys that sanitise to the same name ("a b", "a_b") become repeated elements, not a lost value.
        const prev = Object.prototype.hasOwnProperty.call(out, name) ? out[name] : undefined;
        setOwn(out, name, prev === undefined ? node : [...(Array.isArray(prev) ? prev : [prev]), ...(Array.isArray(node) ? node : [node])]);
      }
      return out;
    } finally {
      ancestors.delete(v);
    }
  };

  const nestedArray = (items: unknown[], depth: number): XmlNode[] | undefined => {
    if (depth >= MAX_DEPTH) throw new BodyFormatError('invalid_json', `value nested deeper than ${MAX_DEPTH} levels`);
    if (ancestors.has(items)) throw new BodyFormatError('invalid_json', 'value contains a cycle');
    ancestors.add(items);
    try {
      return convertArray(items, depth);
    } finally {
      ancestors.delete(items);
    }
  };

  // Array elements are repeated siblings; an array inside an array needs its own wrapper element.
  const convertArray = (items: unknown[], depth: number): XmlNode[] =>
    items.map((item) => (Array.isArray(item) ? { [ARRAY_ITEM]: nestedArray(item, depth + 1) ?? [] } : (convert(item, depth + 1) ?? null)));

  return convert(value, 0) ?? null;
}

const builder = new XMLBuilder({
  ignoreAttributes: false,
  attributeNamePrefix: ATTR,
  textNodeName: TEXT,
  suppressEmptyNode: true,
  suppressBooleanAttributes: false,
  processEntities: true,
});

/** Serialises a JSON value as an XML document under `rootName` (default `root`), with an XML declaration. */
export function jsonToXml(value: unknown, rootName = 'root'): string {
  const tree = toXmlTree(value);
  return DECLARATION + builder.build({ [xmlName(rootName)]: tree });
}

function typedScalar(_name: string, raw: string): unknown {
  if (raw === 'true') return true;
  if (raw === 'false') return false;
  if (DECIMAL.test(raw)) {
    const n = Number(raw);
    const integerLike = !/[.eE]/.test(raw);
    if (Number.isFinite(n) && (!integerLike || Number.isSafeInteger(n))) return n;
  }
  return raw;
}

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: ATTR,
  textNodeName: TEXT,
  parseTagValue: false,
  parseAttributeValue: false,
  tagValueProcessor: typedScalar,
  attributeValueProcessor: typedScalar,
  trimValues: true,
  ignoreDeclaration: true,
  ignorePiTags: true,
  // Numeric character references (&#65;). Named entities still cannot be declared: DOCTYPE is refused below.
  htmlEntities: true,
  maxNestedTags: MAX_DEPTH,
});

/**
 * Parses an XML document into the JSON value its root element holds (see the module note for
 * the mapping). Refuses documents over 1 MiB (`body_too_large`) and any DOCTYPE or ENTITY
 * declaration, which is how XXE and "billion laughs" arrive (`invalid_xml`).
 */
export function xmlToJson(xml: string): unknown {
  if (xml.length > MAX_XML_BYTES || Buffer.byteLength(xml, 'utf8') > MAX_XML_BYTES) {
    throw new BodyFormatError('body_too_large', `XML body is larger than ${MAX_XML_BYTES} bytes`);
  }
  if (DOCTYPE_OR_ENTITY.test(xml)) throw new BodyFormatError('invalid_xml', 'DOCTYPE and ENTITY declarations are not accepted');
  const valid = XMLValidator.validate(xml);
  if (valid !== true) throw new BodyFormatError('invalid_xml', `${valid.err.msg} (line ${valid.err.line})`);
  let doc: unknown;
  try {
    doc = parser.parse(xml);
  } catch (err) {
    throw new BodyFormatError('invalid_xml', (err as Error).message);
  }
  const roots = doc !== null && typeof doc === 'object' ? Object.keys(doc) : [];
  if (roots.length !== 1) throw new BodyFormatError('invalid_xml', 'an XML document has exactly one root element');
  const root = (doc as Record<string, unknown>)[roots[0]!];
  if (Array.isArray(root)) throw new BodyFormatError('invalid_xml', 'an XML document has exactly one root element');
  return root;
}
