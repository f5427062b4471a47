/**
 * Records processPayment's histories for the replay test (payment-replay.test.ts): runs four
 * scenarios in the time-skipping server with fake activities and writes each history to
 * tests/workflows/histories/payment-<scenario>.json. Run again after an intended change to the
 * workflow's commands: `node --import tsx tests/workflows/record-payment-histories.ts`.
 */
import { randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import type { WorkflowHandle } from '@temporalio/client';
import { DefaultLogger, makeTelemetryFilterString, Runtime } from '@temporalio/worker';
import type { PaymentInput } from '../../lib/payments';
import { approveSignal } from '../../workflows/approval';
import type { processPayment } from '../../workflows/payment';
import { progressQuery } from '../../workflows/progress';
import { historyToJSON, paymentFakes } from '../helpers/payment-fakes';
import { testWorker, timeSkippingEnv } from '../helpers/temporal-test-env';

const OUT_DIR = join(__dirname, 'histories');

const input = (over: Partial<PaymentInput> = {}): PaymentInput => ({
  amount: 5_000, currency: 'EUR', payer: { id: 'payer-1' }, payment_method: 'pm_card_visa', ...over,
});

type Scenario = {
  name: string;
  input: PaymentInput;
  activities: ReturnType<typeof paymentFakes>;
  /** Drives the run to its end; a failed run is expected for some scenarios. */
  drive: (handle: WorkflowHandle<typeof processPayment>) => Promise<unknown>;
};

const scenarios: Scenario[] = [
  { name: 'confirmed', input: input(), activities: paymentFakes(), drive: (h) => h.result() },
  {
    name: 'approved-above-threshold',
    input: input({ amount: 250_000, requested_by: 'alice' }),
    activities: paymentFakes(),
    drive: async (h) => {
      for (let i = 0; (await h.query(progressQuery)).waiting_for?.kind !== 'approval'; i++) {
        if (i > 200) throw new Error('the payment never waited for its approval');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      await h.signal(approveSignal, { approver: 'bob', comment: 'ok' });
      return h.result();
    },
  },
  {
    name: 'declined',
    input: input(),
    activities: paymentFakes({
      chargePayment: async () => {
        throw ApplicationFailure.nonRetryable('card declined: insufficient_funds', 'PaymentDeclined', { decline_code: 'insufficient_funds' });
      },
    }),
    drive: (h) => h.result(),
  },
  {
    name: 'ledger-failure-refunded',
    input: input(),
    activities: paymentFakes({
      recordLedger: async () => {
        throw ApplicationFailure.nonRetryable('ledger refused the payment: check violation', 'LedgerRejected', { sqlstate: '23514' });
      },
    }),
    drive: (h) => h.result().then(
      () => { throw new Error('the ledger failure should have failed the run'); },
      (err: unknown) => err,
    ),
  },
];

async function main(): Promise<void> {
  // The failing scenarios fail on purpose: only errors are worth printing.
  Runtime.install({ logger: new DefaultLogger('ERROR'), telemetryOptions: { logging: { filter: makeTelemetryFilterString({ core: 'ERROR' }), forward: {} } } });
  await mkdir(OUT_DIR, { recursive: true });
  const env = await timeSkippingEnv();
  try {
    for (const s of scenarios) {
      const taskQueue = `record-payment-${s.name}`;
      const worker = await testWorker(env, taskQueue, s.activities);
      const history = await worker.runUntil(async () => {
        const handle = await env.client.workflow.start<typeof processPayment>('processPayment', {
          taskQueue, workflowId: `pay-${s.name}-${randomUUID()}`, args: [s.input], memo: { tenant: 't1', correlation_id: 'c1' },
        });
        await s.drive(handle);
        return handle.fetchHistory();
      });
      const file = join(OUT_DIR, `payment-${s.name}.json`);
      await writeFile(file, `${historyToJSON(history)}\n`);
      console.log(`${relative(process.cwd(), file)}: ${history.events?.length ?? 0} events`);
    }
  } finally {
    await env.teardown();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
