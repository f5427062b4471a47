// Stage 1 of the request pipeline: a gateway with its TLS listener and a client CA. A client
// certificate names its tenant (SAN URI urn:flowgate:tenant:<id>) and consumer (CN) and
// authenticates without a key; an untrusted certificate authenticates nobody; HSTS is sent
// over TLS only. The certificates are made here with openssl.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Agent, request } from 'undici';
import { freePorts } from '../../stack/stack';
import { adminTenant } from '../helpers/admin';
import { gatewayClient } from '../helpers/api';
import { eventually, spawnProcess, testStack, type RunningProcess } from '../helpers/stack';

const stack = testStack();
const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-tls-'));
const file = (name: string) => path.join(dir, name);
const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });

/** A CA, a server certificate for 127.0.0.1, and client certificates signed by the CA (and one self-signed). */
function makeCertificates(tenant: string) {
  openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '1', '-subj', '/CN=Flowgate test CA', '-keyout', file('ca.key'), '-out', file('ca.pem'));
  const leaf = (name: string, subject: string, ext: string, signer: 'ca' | 'self') => {
    writeFileSync(file(`${name}.ext`), ext);
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', subject, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`));
    if (signer === 'ca') openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', file(`${name}.ext`), '-out', file(`${name}.pem`));
    else openssl('x509', '-req', '-in', file(`${name}.csr`), '-signkey', file(`${name}.key`), '-days', '1', '-extfile', file(`${name}.ext`), '-out', file(`${name}.pem`));
  };
  leaf('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1\n', 'ca');
  leaf('alice', '/CN=alice', `subjectAltName=URI:urn:flowgate:tenant:${tenant}\nextendedKeyUsage=clientAuth\n`, 'ca');
  leaf('mallory', '/CN=alice', `subjectAltName=URI:urn:flowgate:tenant:${tenant}\nextendedKeyUsage=clientAuth\n`, 'self');
}

let gw: RunningProcess | undefined;
let upstream: Server;
let tlsUrl = '';
before(async () => {
  upstream = createServer((req, res) => res.end(JSON.stringify({ tenant: req.headers['x-tenant-id'], user: req.headers['x-user-id'] })));
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
});
after(async () => {
  gw?.child.kill('SIGTERM');
  await gw?.exited;
  await new Promise<void>((r) => upstream.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

const client = (name: string | undefined) => new Agent({
  connect: { ca: readFileSync(file('ca.pem')), ...(name ? { cert: readFileSync(file(`${name}.pem`)), key: readFileSync(file(`${name}.key`)) } : {}) },
});

test('mTLS: a certificate from the client CA authenticates its consumer in its tenant; an untrusted one does not; HSTS over TLS', async () => {
  const t = await adminTenant(stack.env.FLOWGATE_DATABASE_URL!, stack.adminUrl, 'mtls');
  makeCertificates(t.tenant);
  const c = await t.admin('POST', '/consumers', { username: 'alice' });
  const key = (await t.admin('POST', `/consumers/${c.body.id}/keys`)).body.key as string;
  await t.admin('POST', '/services', { name: 'echo', url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` });
  await t.admin('POST', '/routes', { name: 'echo', service: 'echo', paths: ['/echo'] });
  await eventually('route served', async () => (await gatewayClient(stack.gatewayUrl, key).call('GET', '/echo')).status === 200, 5000, 20);

  const tlsPort = (await freePorts()).gateway;
  gw = await spawnProcess('gateway', stack.env, {
    FLOWGATE_TLS_PORT: String(tlsPort), FLOWGATE_TLS_CERT: file('server.pem'), FLOWGATE_TLS_KEY: file('server.key'), FLOWGATE_TLS_CLIENT_CA: file('ca.pem'),
  });
  tlsUrl = `https://127.0.0.1:${tlsPort}`;
  await eventually('TLS listener up', async () => (await request(`${tlsUrl}/health`, { dispatcher: client(undefined) }).catch(() => null))?.statusCode === 200, 30_000, 200);

  const ok = await request(`${tlsUrl}/echo`, { dispatcher: client('alice') });
  const body = await ok.body.json() as { tenant: string; user: string };
  assert.equal(ok.statusCode, 200, JSON.stringify(body));
  assert.deepEqual(body, { tenant: t.tenant, user: 'alice' });
  assert.match(String(ok.headers['strict-transport-security']), /max-age=\d+/);

  const forged = await request(`${tlsUrl}/echo`, { dispatcher: client('mallory') });
  assert.equal(forged.statusCode, 401, 'a self-signed certificate with the same names authenticates nobody');
  await forged.body.dump();
  const none = await request(`${tlsUrl}/echo`, { dispatcher: client(undefined) });
  assert.equal(none.statusCode, 401);
  await none.body.dump();
  // A certificate and an X-Tenant-ID that disagree are refused.
  const conflict = await request(`${tlsUrl}/echo`, { dispatcher: client('alice'), headers: { 'x-tenant-id': 'someone-else' } });
  assert.equal(conflict.statusCode, 403);
  await conflict.body.dump();
  // An API key over TLS works as over plain HTTP.
  const withKey = await request(`${tlsUrl}/echo`, { dispatcher: client(undefined), headers: { authorization: `Bearer ${key}` } });
  assert.equal(withKey.statusCode, 200);
  await withKey.body.dump();
});
