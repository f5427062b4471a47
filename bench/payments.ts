// Payments per second end to end on the local stack against a workflow with the same number of
// no-op activities on the same server and worker (goal: at least 0.5× of it). Both rounds start
// workflows straight through the Temporal client and keep the same number in flight, each
// waiting for its result. Checks every payment: CONFIRMED, and exactly one charge at the
// sandbox provider. Writes its block of bench/RESULTS.md.
import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { PaymentInput, PaymentResult } from '../lib/payments';
import { connectTemporal } from '../lib/temporal';
import type { ExecutionMemo } from '../lib/trigger-message';
import { SA } from '../lib/workflow-search-attributes';
import { testStack } from '../tests/helpers/stack';
import { newTenant } from '../tests/helpers/tenant';
import { writeSection } from './results';

const CONCURRENCY = Number(process.env.BENCH_PAY_CONCURRENCY ?? 16);
const DURATION_S = Number(process.env.BENCH_PAY_DURATION_S ?? 20);
const WARMUP_S = Number(process.env.BENCH_PAY_WARMUP_S ?? 5);
/** processPayment's happy path runs four activities: validate, charge, ledger, notify. */
const NOOP_COUNT = 4;
const AMOUNT = 1250; // below the default approval threshold (100 000): no approval step
const stack = testStack();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

type Outcome<R> = { id: string; ms: number; finishedAt: number; result?: R; error?: string };
type Round<R> = { outcomes: Outcome<R>[]; startedAt: number; durationS: number; stragglersS: number };

/**
 * Keeps `concurrency` workflows in flight for `durationS`: each slot starts one, waits for its
 * result and starts the next. Nothing is started after the deadline; those in flight finish.
 */
async function closedLoop<R>(durationS: number, concurrency: number, startAndWait: (id: string) => Promise<R>, prefix: string): Promise<Round<R>> {
  const outcomes: Outcome<R>[] = [];
  const startedAt = Date.now();
  const deadline = startedAt + durationS * 1000;
  const slot = async () => {
    while (Date.now() < deadline) {
      const id = `${prefix}-${randomUUID()}`;
      const t0 = performance.now();
      try {
        const result = await startAndWait(id);
        outcomes.push({ id, ms: performance.now() - t0, finishedAt: Date.now(), result });
      } catch (err) {
        outcomes.push({ id, ms: performance.now() - t0, finishedAt: Date.now(), error: String((err as Error).message ?? err) });
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, slot));
  return { outcomes, startedAt, durationS, stragglersS: Math.max(0, (Date.now() - deadline) / 1000) };
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

function summarize<R>(r: Round<R>, ok: (result: R) => boolean) {
  const deadline = r.startedAt + r.durationS * 1000;
  const good = r.outcomes.filter((o) => !o.error && ok(o.result as R));
  const inWindow = good.filter((o) => o.finishedAt <= deadline).length;
  const lat = good.map((o) => o.ms).sort((a, b) => a - b);
  return {
    perSecond: inWindow / r.durationS,
    completed: good.length,
    inWindow,
    failures: r.outcomes.length - good.length,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    stragglersS: r.stragglersS,
  };
}

/** Waits until no workflow runs on the server (the worker has finished the previous round). */
async function drain(client: Client, label: string): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < 600_000) {
    const { count } = await client.workflow.count(`ExecutionStatus = 'Running'`);
    if (count === 0) break;
    await sleep(500);
  }
  const seconds = (Date.now() - t0) / 1000;
  console.log(`  drained after ${label} in ${seconds.toFixed(1)}s`);
  return seconds;
}

async function main() {
  const client = await connectTemporal(stack.env.FLOWGATE_TEMPORAL_ADDRESS!, 'default');
  const sandboxUrl = `http://127.0.0.1:${stack.layout.ports.paymentSandbox}`;

  const start = <R>(tenant: string, workflow: string, workflowType: string, input: (id: string) => unknown) => async (id: string): Promise<R> => {
    const memo: ExecutionMemo = { tenant, workflow_type: workflowType, correlation_id: id, accepted_at: new Date().toISOString() };
    const handle = await client.workflow.start(workflow, {
      workflowId: id,
      taskQueue: 'flowgate',
      args: [input(id)],
      memo,
      typedSearchAttributes: [{ key: SA.tenant, value: tenant }],
    });
    return (await handle.result()) as R;
  };
  const payment = (id: string): PaymentInput => ({
    amount: AMOUNT, currency: 'EUR', payer: { id: 'bench-payer' }, payment_method: 'pm_card_visa', idempotency_key: `bench-${id}`,
  });
  const payments = (tenant: string) => start<PaymentResult>(tenant, 'processPayment', 'process-payment', payment);
  const noops = (tenant: string) => start<{ done: number }>(tenant, 'noopActivities', 'noop-activities', () => ({ count: NOOP_COUNT }));

  // Warm-up of both kinds (worker caches, JIT, pools, the provider's credential) under a tenant of
  // its own, so the measured tenant's charges at the provider are the measured payments only.
  const warm = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'bench-pay-warm');
  console.log(`warm-up: ${WARMUP_S}s of payments, then ${WARMUP_S}s of no-op workflows, ${CONCURRENCY} in flight`);
  const warmPay = await closedLoop(WARMUP_S, CONCURRENCY, payments(warm.tenant), 'bench-warm-pay');
  const warmNoop = await closedLoop(WARMUP_S, CONCURRENCY, noops(warm.tenant), 'bench-warm-noop');
  const warmFailures = [...warmPay.outcomes, ...warmNoop.outcomes].filter((o) => o.error).length;
  await drain(client, 'warm-up');

  const { tenant } = await newTenant(stack.env.FLOWGATE_DATABASE_URL!, 'bench-pay');
  console.log(`round A: processPayment, ${CONCURRENCY} in flight, ${DURATION_S}s`);
  const roundA = await closedLoop(DURATION_S, CONCURRENCY, payments(tenant), 'bench-pay');
  const drainA = await drain(client, 'payments');
  console.log(`round B: noopActivities(${NOOP_COUNT}), ${CONCURRENCY} in flight, ${DURATION_S}s`);
  const roundB = await closedLoop(DURATION_S, CONCURRENCY, noops(tenant), 'bench-noop');
  const drainB = await drain(client, 'no-op workflows');
  await client.connection.close();

  // Correctness of round A: every payment CONFIRMED, and one charge per payment at the provider.
  const notConfirmed = roundA.outcomes.filter((o) => o.error || o.result?.state !== 'CONFIRMED');
  type Charge = { id: string; status: string; amount: number; metadata?: Record<string, string> };
  const charges = ((await (await fetch(`${sandboxUrl}/_sandbox/charges?tenant=${encodeURIComponent(tenant)}`)).json()) as { data: Charge[] }).data;
  const perPayment = new Map<string, Charge[]>();
  for (const c of charges) {
    const id = c.metadata?.payment_id ?? '?';
    perPayment.set(id, [...(perPayment.get(id) ?? []), c]);
  }
  const paymentIds = roundA.outcomes.map((o) => o.id);
  const ours = new Set(paymentIds);
  const missing = paymentIds.filter((id) => !perPayment.has(id)).length;
  const doubled = paymentIds.filter((id) => (perPayment.get(id)?.length ?? 0) > 1).length;
  const strays = [...perPayment.keys()].filter((id) => !ours.has(id)).length;
  const badCharge = charges.filter((c) => c.status !== 'succeeded' || c.amount !== AMOUNT).length;
  const chargeIdsMatch = roundA.outcomes.every((o) => !o.result?.charge_id || perPayment.get(o.id)?.[0]?.id === o.result.charge_id);
  const correct = notConfirmed.length === 0 && charges.length === paymentIds.length && !missing && !doubled && !strays && !badCharge && chargeIdsMatch;

  const a = summarize(roundA, (r) => r.state === 'CONFIRMED');
  const b = summarize(roundB, (r) => r.done === NOOP_COUNT);
  const ratio = a.perSecond / b.perSecond;
  const row = (label: string, s: ReturnType<typeof summarize>, drainS: number) =>
    `| ${label} | **${s.perSecond.toFixed(1)}** | ${s.p50.toFixed(0)} | ${s.p99.toFixed(0)} | ${s.completed} | ${s.failures} | ${s.stragglersS.toFixed(1)} | ${drainS.toFixed(1)} |`;
  const md = `## Payments end to end (issue: payments)

\`processPayment\` (validate → charge at the sandbox provider → ledger → notify; ${AMOUNT} EUR cents, below the
approval threshold) against \`noopActivities({count: ${NOOP_COUNT}})\` — the same number of activities, each doing
nothing — on the same Temporal dev server and the same worker. Both rounds start workflows straight through the
Temporal client (task queue \`flowgate\`, the memo and tenant search attribute of a real start) and keep
${CONCURRENCY} in flight for ${DURATION_S}s, each slot waiting for its result before starting the next, after a ${WARMUP_S}s
warm-up of each kind; the worker drains between rounds. Completed/s counts results inside the ${DURATION_S}s window;
latency is start call → result.

| workflow | completed/s | p50 ms | p99 ms | completed | failures | in flight at the end, s | drain after, s |
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |
${row('`processPayment` (4 activities, one provider call)', a, drainA)}
${row(`\`noopActivities\` (${NOOP_COUNT} no-op activities)`, b, drainB)}

- Payments vs no-op workflows: **${ratio.toFixed(2)}×** (goal ≥ 0.5×).
- Correctness of the payment round: ${roundA.outcomes.length - notConfirmed.length}/${roundA.outcomes.length} results CONFIRMED;
  the sandbox provider's ledger for the tenant holds ${charges.length} charge(s) for ${paymentIds.length} payment(s)
  (missing ${missing}, more than one ${doubled}, not ours ${strays}, not succeeded or wrong amount ${badCharge}${chargeIdsMatch ? '' : ', charge ids differ from the results'}) — **${correct ? 'exactly one charge per payment' : 'MISMATCH'}**.
- Warm-up: ${warmPay.outcomes.length} payments and ${warmNoop.outcomes.length} no-op workflows, ${warmFailures} failure(s).
`;
  await writeSection('payments', md);
  console.log(md);
  if (!correct) {
    console.error('payment round failed its correctness check', notConfirmed.slice(0, 5));
    process.exitCode = 1;
  }
}

main().then(() => process.exit(process.exitCode ?? 0), (err) => {
  console.error(err);
  process.exit(1);
});
