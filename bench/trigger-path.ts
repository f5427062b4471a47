// The accept path (POST → 202) against a direct start through Temporal's own HTTP API on the
// same dev server, same payload and concurrency; trigger-to-start lag at half capacity; status
// GET latency at 500 req/s. Writes its block of bench/RESULTS.md.
import { randomUUID } from 'node:crypto';
import autocannon from 'autocannon';
import { connect } from 'nats';
import { STREAMS } from '../lib/nats';
import { connectTemporal } from '../lib/temporal';
import { newTenant } from '../tests/helpers/tenant';
import { testStack } from '../tests/helpers/stack';
import { writeSection } from './results';

const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 15);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32);
const stack = testStack();
const temporalHttp = `http://127.0.0.1:${stack.layout.ports.temporalHttp}`;
const payload = JSON.stringify({ name: 'bench' });

type Result = { rps: number; p50: number; p99: number; errors: number; non2xx: number; total: number };
const summarize = (r: autocannon.Result): Result => ({
  rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, errors: r.errors + r.timeouts, non2xx: r.non2xx, total: r.requests.total,
});
const run = (opts: autocannon.Options) => new Promise<autocannon.Result>((resolve, reject) => {
  autocannon(opts, (err, res) => (err ? reject(err) : resolve(res)));
});
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function drain(label: string): Promise<number> {
  // Let the worker and consumers finish the previous round's backlog before measuring again.
  // Both queues count: triggers still in JetStream and workflows still running.
  const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
  const nc = await connect({ servers: stack.env.FLOWGATE_NATS_URL });
  const jsm = await nc.jetstreamManager();
  const t0 = Date.now();
  while (Date.now() - t0 < 600_000) {
    const queued = (await jsm.streams.info(STREAMS.triggers)).state.messages;
    const { count } = await client.workflow.count(`ExecutionStatus = 'Running'`);
    if (queued === 0 && count === 0) break;
    await sleep(1000);
  }
  await nc.close();
  await client.connection.close();
  const seconds = (Date.now() - t0) / 1000;
  console.log(`  drained after ${label} in ${seconds.toFixed(0)}s`);
  return seconds;
}

async function main() {
  const { apiKey } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'bench');
  const auth = { authorization: `Bearer ${apiKey}`, 'content-type': 'application/json' };
  // Warm both paths (connections, JIT, caches).
  await run({ url: `${stack.gatewayUrl}/api/workflows/hello`, method: 'POST', headers: auth, body: payload, connections: 4, amount: 200 });
  await run({ url: `${temporalHttp}/api/v1/namespaces/default/workflows/warm`, connections: 4, amount: 200, requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, path: `/api/v1/namespaces/default/workflows/warm-${randomUUID()}`, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ workflowType: { name: 'hello' }, taskQueue: { name: 'flowgate' }, input: [{ name: 'bench' }] }) }) }] });
  await drain('warm-up');

  console.log(`direct start through Temporal's HTTP API: ${CONNECTIONS} connections, ${DURATION_S}s`);
  const direct = summarize(await run({
    url: temporalHttp, connections: CONNECTIONS, duration: DURATION_S,
    requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, path: `/api/v1/namespaces/default/workflows/direct-${randomUUID()}`, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ workflowType: { name: 'hello' }, taskQueue: { name: 'flowgate' }, input: [{ name: 'bench' }] }) }) }],
  }));
  // Sustainable end-to-end capacity: every started workflow also run to completion by the worker.
  const directDrain = await drain('direct start');
  const sustainable = direct.total / (DURATION_S + directDrain);

  // Lag at half of the end-to-end capacity (the direct start rate is what Temporal sustains here),
  // and at a low rate, where Temporal's own start latency is small: the difference is queueing in Temporal.
  const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
  const rpcTotals = async () => {
    const text = await (await fetch(`http://127.0.0.1:${stack.layout.ports.triggersStatus}/metrics`)).text();
    const value = (name: string) => Number(text.split('\n').find((l) => l.startsWith(name))?.split(' ').at(-1) ?? 0);
    return {
      sum: value('workflow_start_rpc_duration_seconds_sum'), count: value('workflow_start_rpc_duration_seconds_count'),
      pickupSum: value('workflow_trigger_pickup_delay_seconds_sum'), pickupCount: value('workflow_trigger_pickup_delay_seconds_count'),
    };
  };
  const measureLag = async (rate: number) => {
    console.log(`trigger-to-start lag at ${rate} triggers/s for ${DURATION_S}s`);
    const before = await rpcTotals();
    const t = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'lag');
    const load = summarize(await run({ url: `${stack.gatewayUrl}/api/workflows/hello`, method: 'POST', headers: { ...auth, authorization: `Bearer ${t.apiKey}` }, body: payload, connections: 16, overallRate: rate, duration: DURATION_S }));
    await drain(`lag run at ${rate}/s`);
    const after = await rpcTotals();
    const rpcMeanMs = (1000 * (after.sum - before.sum)) / Math.max(after.count - before.count, 1);
    const pickupMeanMs = (1000 * (after.pickupSum - before.pickupSum)) / Math.max(after.pickupCount - before.pickupCount, 1);
    const lags: number[] = [];
    for await (const wf of client.workflow.list({ query: `FlowgateTenant = '${t.tenant}'` })) {
      const acceptedAt = (wf.memo as { accepted_at?: string } | undefined)?.accepted_at;
      if (acceptedAt) lags.push(wf.startTime.getTime() - Date.parse(acceptedAt));
    }
    lags.sort((a, b) => a - b);
    const pct = (p: number) => lags[Math.min(lags.length - 1, Math.floor((p / 100) * lags.length))] ?? NaN;
    const mean = lags.reduce((a, b) => a + b, 0) / Math.max(lags.length, 1);
    return { rate, n: lags.length, p50: pct(50), p99: pct(99), max: lags.at(-1) ?? NaN, non2xx: load.non2xx, mean, rpcMeanMs, pickupMeanMs };
  };
  const lagRows = [
    { label: 'half of the sustainable end-to-end rate', ...(await measureLag(Math.max(5, Math.round(sustainable / 2)))) },
    { label: 'half of the direct-start rate (starts only; the worker falls behind)', ...(await measureLag(Math.max(5, Math.round(direct.rps / 2)))) },
  ];

  // Status GET at 500 req/s on a completed execution (describe + result from history).
  const done = await fetch(`${stack.gatewayUrl}/api/workflows/hello`, { method: 'POST', headers: auth, body: payload }).then((r) => r.json() as Promise<{ execution_id: string }>);
  await sleep(2000);
  console.log('status GET at 500 req/s');
  const status = summarize(await run({ url: `${stack.gatewayUrl}/api/workflows/${done.execution_id}`, headers: auth, connections: 16, overallRate: 500, duration: DURATION_S }));
  // And on a running one (describe each time: nothing to cache while it runs).
  const running = await fetch(`${stack.gatewayUrl}/api/workflows/approval-request`, { method: 'POST', headers: auth, body: JSON.stringify({ subject: 'bench', requester: 'bench' }) }).then((r) => r.json() as Promise<{ execution_id: string }>);
  await sleep(2000);
  const statusRunning = summarize(await run({ url: `${stack.gatewayUrl}/api/workflows/${running.execution_id}`, headers: auth, connections: 16, overallRate: 500, duration: DURATION_S }));

  console.log(`Flowgate accept path (POST /api/workflows/hello → 202): ${CONNECTIONS} connections, ${DURATION_S}s`);
  const accept = summarize(await run({ url: `${stack.gatewayUrl}/api/workflows/hello`, method: 'POST', headers: auth, body: payload, connections: CONNECTIONS, duration: DURATION_S }));
  // Last round: its backlog (thousands of workflows) is left to the stack's teardown.


  const ratio = accept.rps / direct.rps;
  const p99ratio = accept.p99 / direct.p99;
  const md = `## Trigger path (issue: core journey)

| path | req/s | p50 ms | p99 ms | errors | non-2xx | requests |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| direct start, Temporal HTTP API (\`POST /api/v1/namespaces/default/workflows/{id}\`) | ${direct.rps.toFixed(0)} | ${direct.p50} | ${direct.p99} | ${direct.errors} | ${direct.non2xx} | ${direct.total} |
| Flowgate accept (\`POST /api/workflows/hello\` → 202, JetStream-acked) | ${accept.rps.toFixed(0)} | ${accept.p50} | ${accept.p99} | ${accept.errors} | ${accept.non2xx} | ${accept.total} |

- Sustained accepts vs direct starts: **${ratio.toFixed(2)}×** (goal ≥ 3×).
- Accept p99 vs direct-start p99: **${p99ratio.toFixed(2)}×** (goal ≤ 0.5×).
- Same payload (\`{"name":"bench"}\`), ${CONNECTIONS} connections, ${DURATION_S}s each; both start \`hello\` on the same task queue and the same worker runs them; the backlog is drained between rounds.

## Trigger-to-start lag

From the gateway's accept to Temporal's recorded start time, every execution of the round
(the same worker runs the workflows meanwhile), ${DURATION_S}s per rate. Goal: p99 < 100 ms at half capacity.
Capacity: the direct round started ${direct.total} workflows in ${DURATION_S}s and the worker finished them
${directDrain.toFixed(0)}s later, so the stack sustains **${sustainable.toFixed(0)} workflows/s** end to end
against ${direct.rps.toFixed(0)} starts/s that outrun the worker.

| rate | executions | p50 ms | p99 ms | max ms | mean ms | Flowgate's share: accept → start call, mean ms | Temporal's start call, mean ms | non-2xx |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${lagRows.map((r) => `| ${r.rate}/s — ${r.label} | ${r.n} | ${r.p50} | **${r.p99}** | ${r.max} | ${r.mean.toFixed(0)} | ${r.pickupMeanMs.toFixed(1)} | ${r.rpcMeanMs.toFixed(0)} | ${r.non2xx} |`).join('\n')}

Flowgate's share is measured in the consumer (\`workflow_trigger_pickup_delay_seconds\`): the gateway's publish,
JetStream's delivery and the consumer's queue. Temporal stamps the start time while its start call is still
persisting, so the lag is the share plus part of that call.

## Status GET

\`GET /api/workflows/{id}\` at 500 req/s, 16 connections, ${DURATION_S}s each, measured before the accept round:

| execution | p50 ms | p99 ms | req/s achieved | non-2xx | errors |
| --- | ---: | ---: | ---: | ---: | ---: |
| completed (the gateway keeps a closed status) | ${status.p50} | ${status.p99} | ${status.rps.toFixed(0)} | ${status.non2xx} | ${status.errors} |
| running (describe on every call) | ${statusRunning.p50} | ${statusRunning.p99} | ${statusRunning.rps.toFixed(0)} | ${statusRunning.non2xx} | ${statusRunning.errors} |
`;
  await writeSection('trigger-path', md);
  console.log(md);
}

main().then(() => process.exit(0), (err) => {
  console.error(err);
  process.exit(1);
});
