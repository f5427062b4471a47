// Where tenants' upstreams may go: the platform's own ports and link-local addresses never,
// loopback only where allowed, checked on the address each connection goes to.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { test } from 'node:test';
import { Pool } from 'undici';
import dns from 'node:dns';
import { policyConnector } from '../../gateway/upstream-connect';
import { parseDenyEntry, UpstreamPolicy } from '../../lib/upstream-policy';

test('deny entries: CIDRs and address:port, anything else refused', () => {
  assert.deepEqual(parseDenyEntry('10.96.0.0/12'), { cidr: '10.96.0.0/12' });
  assert.deepEqual(parseDenyEntry(' fd00::/8 '), { cidr: 'fd00::/8' });
  assert.deepEqual(parseDenyEntry('127.0.0.1:9400'), { address: '127.0.0.1', port: 9400 });
  assert.deepEqual(parseDenyEntry('[::1]:9400'), { address: '::1', port: 9400 });
  for (const bad of ['10.0.0.0/33', 'admin:9400', '127.0.0.1', '127.0.0.1:0', '127.0.0.1:70000', '::1:9400', 'example.com/8']) {
    assert.equal(parseDenyEntry(bad), undefined, bad);
  }
});

test('refusals: link-local always, own and listed ports on every local address, listed networks, loopback unless allowed', () => {
  const deny = ['10.96.0.0/12', '127.0.0.1:7233', '10.0.0.5:5432'].map((e) => parseDenyEntry(e)!);
  const local = new UpstreamPolicy({ allowLoopback: true, deny, ownPorts: [9400] });
  const strict = new UpstreamPolicy({ allowLoopback: false, deny, ownPorts: [9400] });
  assert.match(local.refusal('169.254.169.254', 80)!, /link-local/, 'a cloud metadata endpoint');
  assert.match(local.refusal('0.0.0.0', 8080)!, /unspecified/);
  assert.match(local.refusal('fe80::1', 80)!, /link-local/);
  for (const address of ['127.0.0.1', '127.0.0.2', '::1', '::ffff:127.0.0.1']) {
    assert.match(local.refusal(address, 9400)!, /platform's own/, `the gateway's status port on ${address}`);
    assert.match(local.refusal(address, 7233)!, /platform's own/, `a listed port on ${address}`);
  }
  const machine = Object.values(networkInterfaces()).flat().find((a) => a && !a.internal && a.family === 'IPv4');
  if (machine) assert.match(local.refusal(machine.address, 9400)!, /platform's own/, `the status port on this machine's ${machine.address}`);
  assert.match(local.refusal('10.100.3.4', 443)!, /FLOWGATE_UPSTREAM_DENY/, 'a listed network');
  assert.match(local.refusal('10.0.0.5', 5432)!, /FLOWGATE_UPSTREAM_DENY/, 'a listed address and port');
  assert.equal(local.refusal('10.0.0.5', 80), undefined, 'another port of that address');
  assert.equal(local.refusal('127.0.0.1', 8080), undefined, 'loopback, where allowed');
  assert.match(strict.refusal('127.0.0.1', 8080)!, /loopback/);
  assert.match(strict.refusal('::1', 8080)!, /loopback/);
  assert.equal(strict.refusal('10.1.2.3', 8080), undefined, 'a private network: internal services are what a gateway is for');
  assert.equal(strict.refusal('93.184.215.14', 443), undefined);
  // Other spellings of a denied address are the same address.
  assert.match(local.refusal('::ffff:10.0.0.5', 5432)!, /FLOWGATE_UPSTREAM_DENY/, 'IPv4-mapped');
  assert.match(local.refusal('::ffff:10.100.3.4', 443)!, /FLOWGATE_UPSTREAM_DENY/, 'IPv4-mapped, in a listed network');
  const v6 = new UpstreamPolicy({ allowLoopback: false, deny: [parseDenyEntry('[2001:DB8:0:0::1]:80')!], ownPorts: [] });
  assert.match(v6.refusal('2001:db8::1', 80)!, /FLOWGATE_UPSTREAM_DENY/, 'written in capitals and uncompressed');
  assert.match(local.urlRefusal('http://[::ffff:10.0.0.5]:5432/x')!, /FLOWGATE_UPSTREAM_DENY/);
});

test('the connector checks the address a name resolves to, and connects to that address', async (t) => {
  const server = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const get = async (policy: UpstreamPolicy, origin: string) => {
    const pool = new Pool(origin, { connect: policyConnector(policy, { timeout: 1000 }) });
    try {
      const res = await pool.request({ method: 'GET', path: '/' });
      return `${res.statusCode} ${await res.body.text()}`;
    } catch (err) {
      return `${(err as { code?: string }).code}: ${(err as Error).message}`;
    } finally {
      await pool.close();
    }
  };
  const allowed = new UpstreamPolicy({ allowLoopback: true, deny: [], ownPorts: [] });
  assert.equal(await get(allowed, `http://127.0.0.1:${port}`), '200 ok');
  assert.equal(await get(allowed, `http://localhost:${port}`), '200 ok');
  const denied = new UpstreamPolicy({ allowLoopback: true, deny: [parseDenyEntry(`127.0.0.1:${port}`)!], ownPorts: [] });
  assert.match(await get(denied, `http://127.0.0.1:${port}`), /^ERR_UPSTREAM_NOT_ALLOWED: .*platform's own/);
  assert.match(await get(denied, `http://localhost:${port}`), /^ERR_UPSTREAM_NOT_ALLOWED: localhost:\d+: /, 'a name resolving to it');
  const strict = new UpstreamPolicy({ allowLoopback: false, deny: [], ownPorts: [] });
  assert.match(await get(strict, `http://localhost:${port}`), /^ERR_UPSTREAM_NOT_ALLOWED: .*loopback/);
});

test("resolving a name counts against the connect timeout, as in undici's own connector", async (t) => {
  const real = dns.lookup;
  (dns as { lookup: unknown }).lookup = () => undefined; // a resolver that never answers
  t.after(() => { (dns as { lookup: unknown }).lookup = real; });
  const policy = new UpstreamPolicy({ allowLoopback: true, deny: [], ownPorts: [] });
  const pool = new Pool('http://upstream.example:80', { connect: policyConnector(policy, { timeout: 200 }) });
  const started = Date.now();
  const err = await pool.request({ method: 'GET', path: '/' }).then(() => undefined, (e: { code?: string }) => e);
  await pool.close();
  assert.equal(err?.code, 'UND_ERR_CONNECT_TIMEOUT');
  assert.ok(Date.now() - started < 1000, `${Date.now() - started} ms`);
});
