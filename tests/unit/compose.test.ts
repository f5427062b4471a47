// docker-compose.yml against the compose specification's JSON schema (no Docker engine here).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import Ajv from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { parse } from 'yaml';
import { cacheDir, REPO_ROOT, stackVersions } from '../../stack/paths';

const schemaFile = path.join(cacheDir(), `compose-spec-${stackVersions().COMPOSE_GO_VERSION}.json`);
const compose = parse(readFileSync(path.join(REPO_ROOT, 'docker-compose.yml'), 'utf8'), { merge: true }) as {
  services: Record<string, { depends_on?: string[] | Record<string, unknown>; build?: unknown; volumes?: string[] }>;
};

test('docker-compose.yml is valid against the compose specification schema', () => {
  assert.ok(existsSync(schemaFile), `${schemaFile} missing: run stack/install.sh (make install)`);
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: true });
  addFormats(ajv);
  const validate = ajv.compile(JSON.parse(readFileSync(schemaFile, 'utf8')));
  const ok = validate(compose);
  assert.ok(ok, JSON.stringify(validate.errors, null, 2));
  // The schema really constrains: a misspelt key in a service is refused.
  const broken = structuredClone(compose) as { services: Record<string, Record<string, unknown>> };
  broken.services.gateway!.comand = ['node'];
  assert.equal(validate(broken), false);
});

test('every depends_on names a service, and the topology is complete', () => {
  const names = new Set(Object.keys(compose.services));
  for (const [name, svc] of Object.entries(compose.services)) {
    const deps = Array.isArray(svc.depends_on) ? svc.depends_on : Object.keys(svc.depends_on ?? {});
    for (const d of deps) assert.ok(names.has(d), `${name} depends on unknown service ${d}`);
  }
  for (const s of ['temporal', 'temporal-ui', 'nats', 'kafka', 'openbao', 'postgres', 'redis', 'prometheus', 'grafana', 'gateway', 'admin', 'triggers', 'worker']) {
    assert.ok(names.has(s), `service ${s}`);
  }
  for (const s of ['gateway', 'admin', 'triggers', 'worker']) assert.ok(compose.services[s]!.build, `${s} is built from the Dockerfile`);
});

test('bind-mounted files exist in the repo', () => {
  for (const svc of Object.values(compose.services)) {
    for (const v of svc.volumes ?? []) {
      if (!v.startsWith('./')) continue;
      assert.ok(existsSync(path.join(REPO_ROOT, v.split(':')[0]!)), v);
    }
  }
});
