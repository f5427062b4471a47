// The local stack's process bookkeeping (stack/stack.ts): a pid file names one process, not
// whoever has its number later; a port another process holds is refused before a server starts.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { DEFAULT_PORTS, type StackLayout } from '../../stack/servers';
import { readPid, serverSpec, startServer, StackError, stopServer } from '../../stack/stack';

function layout(): StackLayout & { executionIdSecret: string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'flowgate-stack-'));
  for (const sub of ['run', 'logs', 'data']) mkdirSync(path.join(dir, sub));
  return { dir, ports: { ...DEFAULT_PORTS }, profile: 'test', executionIdSecret: 'x'.repeat(32) } as StackLayout & { executionIdSecret: string };
}

test('a pid file whose process has gone is not taken for another process with the same number', async () => {
  const l = layout();
  // Someone else's process, in a group of its own (stopServer signals the whole group).
  const other = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
  try {
    // The pid file as a server wrote it, with a start time that is not this process's (the server died, the number came back).
    writeFileSync(path.join(l.dir, 'run', 'redis.pid'), `${other.pid} 1`);
    assert.equal(readPid(l, 'redis'), undefined);
    await stopServer(l, 'redis', 500);
    assert.doesNotThrow(() => process.kill(other.pid!, 0), 'the other process was not signalled');
  } finally {
    other.kill('SIGKILL');
    rmSync(l.dir, { recursive: true, force: true });
  }
});

test('a port another process listens on is refused before the server is started', async () => {
  const l = layout();
  const squatter = net.createServer();
  await new Promise<void>((r) => squatter.listen(0, '127.0.0.1', r));
  l.ports.redis = (squatter.address() as net.AddressInfo).port;
  try {
    await assert.rejects(startServer(l, serverSpec('redis')), (err: unknown) => err instanceof StackError && /port \d+ is in use/.test(err.message));
    assert.equal(readPid(l, 'redis'), undefined, 'nothing started');
  } finally {
    squatter.close();
    rmSync(l.dir, { recursive: true, force: true });
  }
});
