// Where tenants' upstreams may go: the platform's own ports and link-local addresses never,
// loopback only where allowed, checked on the address each connection goes to.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { test } from 'node:test';
import { Pool } from 'undici';
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
});

test('the connector checks the address a name resolves to, and connects to that address', async (t) => {
  const server = http.createServer((_req, res) => res.end('ok'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const get = async (policy: UpstreamPolicy, origin: string) => {
    const pool = new Pool(origin, { connect: policy.connector({ timeout: 1000 }) });
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
