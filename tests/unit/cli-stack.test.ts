// `flowgate stack` on directories that are not stacks: reset removes only a stack's own
// directory, and a missing --dir value is refused rather than read as the current directory.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';

const cli = (args: string[], cwd: string) => spawnSync(process.execPath, [path.join(__dirname, '..', '..', 'bin', 'flowgate.js'), ...args], { cwd, encoding: 'utf8' });

test('stack reset refuses a directory without stack.json, --dir "" included, and removes nothing', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-not-a-stack-'));
  try {
    writeFileSync(path.join(dir, 'precious.txt'), 'keep me');
    const named = cli(['stack', 'reset', '--dir', dir], os.tmpdir());
    assert.equal(named.status, 2, named.stderr);
    assert.match(named.stderr, /not a stack directory/);
    const empty = cli(['stack', 'reset', '--dir', ''], dir);
    assert.equal(empty.status, 2, empty.stderr);
    const missing = cli(['stack', 'reset', '--dir'], dir);
    assert.equal(missing.status, 2, missing.stderr);
    assert.ok(existsSync(path.join(dir, 'precious.txt')), 'nothing removed');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('stack logs and env before a stack exists: one clear line, no stack trace', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-no-stack-'));
  try {
    for (const sub of ['logs', 'env']) {
      const r = cli(['stack', sub, '--dir', path.join(dir, 'nothing-here')], dir);
      assert.equal(r.status, 1, `${sub}: ${r.stderr}`);
      assert.match(r.stderr, /no stack in/);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
