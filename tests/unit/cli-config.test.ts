// `flowgate config` against a stub Admin API (a node:http server): what it sends, and that an
// option it does not know is refused rather than ignored.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { configCommand } from '../../cli/config';

const seen: string[] = [];
let server: http.Server;
const file = path.join(mkdtempSync(path.join(os.tmpdir(), 'flowgate-cli-')), 'demo.yaml');

before(async () => {
  server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end('{"diff":{"changes":0}}'));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  process.env.FLOWGATE_ADMIN_URL = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  process.env.FLOWGATE_ADMIN_TOKEN = 'fga_test_token';
  writeFileSync(file, 'workspace: demo\n');
});
after(() => server.close());

test('config sync --dry-run asks for a dry run; a misspelt option is refused (exit 2) and sends nothing', async () => {
  const quiet = console.log;
  console.log = () => undefined;
  try {
    assert.equal(await configCommand(['sync', file, '--workspace', 'demo', '--dry-run']), 0);
    assert.deepEqual(seen, ['POST /config/sync?workspace=demo&dry_run=true']);
    const err = console.error;
    console.error = () => undefined;
    try {
      assert.equal(await configCommand(['sync', file, '--dryrun']), 2);
      assert.equal(await configCommand(['diff', file, '--dry-run']), 2, 'diff changes nothing anyway: not an option of it');
    } finally {
      console.error = err;
    }
    assert.equal(seen.length, 1, 'nothing sent for a refused command');
    assert.equal(await configCommand(['sync', file]), 0);
    assert.equal(seen[1], 'POST /config/sync', 'without --dry-run: the sync itself');
  } finally {
    console.log = quiet;
  }
});
