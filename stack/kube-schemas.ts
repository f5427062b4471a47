// The JSON schemas kubeconform checks deploy/kubernetes against, written into the cache by
// stack/install.sh: Kubernetes' own (from the kubernetes-validate wheel on PyPI) and KEDA's
// ScaledObject (converted from the CRD in KEDA's Go module). Neither needs github.com.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';

type Json = null | boolean | number | string | Json[] | JsonObject;
type JsonObject = { [key: string]: Json };

const isObject = (v: Json | undefined): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

function mapRefs(node: Json, map: (ref: string) => string): Json {
  if (Array.isArray(node)) return node.map((n) => mapRefs(n, map));
  if (!isObject(node)) return node;
  return Object.fromEntries(
    Object.entries(node).map(([k, v]) => [k, k === '$ref' && typeof v === 'string' ? map(v) : mapRefs(v, map)]),
  );
}

const DEFINITIONS_REF = '/api/_definitions.json#';

/**
 * kubernetes-validate's per-kind schemas carry `$id: https://kubernetes.io/api/…` and point at
 * `/api/_definitions.json`, which kubeconform would then fetch from kubernetes.io. Without the
 * `$id` and with the reference made relative, they resolve against the sibling file, offline.
 */
export function localKubernetesSchemas(srcDir: string, outDir: string): number {
  mkdirSync(outDir, { recursive: true });
  let written = 0;
  for (const file of readdirSync(srcDir)) {
    if (!file.endsWith('.json')) continue;
    const schema = JSON.parse(readFileSync(path.join(srcDir, file), 'utf8')) as JsonObject;
    delete schema.$id;
    const local = mapRefs(schema, (ref) => (ref.startsWith(DEFINITIONS_REF) ? `_definitions.json#${ref.slice(DEFINITIONS_REF.length)}` : ref));
    writeFileSync(path.join(outDir, file), JSON.stringify(local));
    written++;
  }
  return written;
}

const SCHEMA_MAP_KEYWORDS = ['properties', 'patternProperties', 'definitions'];
const SCHEMA_LIST_KEYWORDS = ['allOf', 'anyOf', 'oneOf'];
const SCHEMA_KEYWORDS = ['items', 'additionalProperties', 'not'];
const OBJECT_META_FIELDS: JsonObject = { apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata: { type: 'object' } };

/**
 * One structural schema of a CRD (OpenAPI v3, as the API server reads it) as a JSON schema that
 * refuses what the API server would refuse or silently prune: an object with declared properties
 * takes no others unless it preserves unknown fields; `nullable` admits null; int-or-string takes
 * either. CEL rules (`x-kubernetes-validations`) cannot be evaluated here and are dropped.
 */
export function structuralToJsonSchema(node: Json): Json {
  if (!isObject(node)) return node;
  const out: JsonObject = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith('x-kubernetes-') || key === 'nullable') continue;
    if (SCHEMA_MAP_KEYWORDS.includes(key) && isObject(value)) {
      out[key] = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, structuralToJsonSchema(v)]));
    } else if (SCHEMA_LIST_KEYWORDS.includes(key) && Array.isArray(value)) {
      out[key] = value.map(structuralToJsonSchema);
    } else if (SCHEMA_KEYWORDS.includes(key)) {
      out[key] = structuralToJsonSchema(value);
    } else {
      out[key] = value;
    }
  }
  if (node['x-kubernetes-int-or-string'] === true) {
    delete out.type;
    out.anyOf ??= [{ type: 'integer' }, { type: 'string' }];
  }
  if (node['x-kubernetes-embedded-resource'] === true && isObject(out.properties)) {
    out.properties = { ...OBJECT_META_FIELDS, ...out.properties };
  }
  if (isObject(out.properties) && out.additionalProperties === undefined && node['x-kubernetes-preserve-unknown-fields'] !== true) {
    out.additionalProperties = false;
  }
  if (node.nullable === true) {
    if (typeof out.type === 'string') out.type = [out.type, 'null'];
    if (Array.isArray(out.enum)) out.enum = [...out.enum, null];
  }
  return out;
}

type Crd = {
  kind: string;
  spec: { group: string; names: { kind: string }; versions: { name: string; served: boolean; schema?: { openAPIV3Schema?: JsonObject } }[] };
};

/**
 * Writes `<group>/<kind>_<version>.json` for every served version of every CRD in the YAML, the
 * layout kubeconform's `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` finds.
 */
export function crdToJsonSchemas(crdYaml: string, outDir: string): string[] {
  const written: string[] = [];
  for (const doc of parseAllDocuments(crdYaml)) {
    const crd = doc.toJS() as Crd | null;
    if (crd?.kind !== 'CustomResourceDefinition') continue;
    const { group, names } = crd.spec;
    for (const version of crd.spec.versions) {
      const structural = version.schema?.openAPIV3Schema;
      if (!version.served || !structural) continue;
      const schema = structuralToJsonSchema(structural) as JsonObject;
      // The kind and version this file is for, and nothing else (kubeconform picks the file by them).
      schema.properties = {
        ...(schema.properties as JsonObject),
        apiVersion: { type: 'string', enum: [`${group}/${version.name}`] },
        kind: { type: 'string', enum: [names.kind] },
      };
      schema.required = [...new Set([...((schema.required as string[] | undefined) ?? []), 'apiVersion', 'kind'])];
      // OpenAPI 3.0's schema object is draft 4's (boolean exclusiveMinimum), not 2020-12's.
      const file = path.join(outDir, group, `${names.kind.toLowerCase()}_${version.name}.json`);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, JSON.stringify({ $schema: 'http://json-schema.org/draft-04/schema#', ...schema }, null, 1));
      written.push(file);
    }
  }
  return written;
}

if (require.main === module) {
  const [what, from, to] = process.argv.slice(2);
  if (what === 'kubernetes' && from && to) {
    console.log(`${localKubernetesSchemas(from, to)} Kubernetes schemas in ${to}`);
  } else if (what === 'crd' && from && to) {
    for (const file of crdToJsonSchemas(readFileSync(from, 'utf8'), to)) console.log(file);
  } else {
    console.error('usage: kube-schemas.ts kubernetes <wheel schema dir> <out dir> | crd <crd.yaml> <out dir>');
    process.exit(2);
  }
}
