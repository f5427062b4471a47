// The instance-loss drill's probe of the survivors: one that hangs is reported failing in
// seconds (not 2 s per request), and the activity keeps beating meanwhile, so Temporal's
// 20 s heartbeat timeout never takes it for a dead worker.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { MockActivityEnvironment } from '@temporalio/testing';
import { instanceLossActivities, type ProbeResult } from '../../activities/instance-loss';

test('a survivor that stops answering is failing after five failures in a row; heartbeats go on meanwhile', async () => {
  // Answers its first request, then hangs: as a survivor does once something went wrong with it.
  let answered = 0;
  const hung: Server = createServer((_req, res) => { if (answered++ === 0) res.end('{"status":"ok"}'); });
  const fine: Server = createServer((_req, res) => res.end('{"status":"ok"}'));
  await Promise.all([hung, fine].map((s) => new Promise<void>((r) => s.listen(0, '127.0.0.1', r))));
  const url = (s: Server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
  const env = new MockActivityEnvironment();
  let beats = 0;
  env.on('heartbeat', () => { beats += 1; });
  try {
    const t0 = Date.now();
    const out = await env.run(instanceLossActivities({}).probeGateways, {
      gateways: [{ instance: 'hung', public_url: url(hung) }, { instance: 'fine', public_url: url(fine) }], requests: 50,
    }) as ProbeResult[];
    const took = Date.now() - t0;
    assert.deepEqual(out.map((r) => [r.instance, r.ok, r.failed]), [['hung', 1, 49], ['fine', 50, 0]]);
    assert.ok(took < 15_000, `took ${took} ms (50 requests at 2 s each would be 100 s)`);
    assert.ok(beats >= Math.floor(took / 2000) - 1 && beats >= 3, `${beats} heartbeats in ${took} ms`);
  } finally {
    hung.closeAllConnections();
    hung.close();
    fine.close();
  }
});
