import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { historyFromJSON } from '../helpers/payment-fakes';
import { sharedBundle } from '../helpers/temporal-test-env';
import { workflowSinks } from '../../worker/main';
import { PATCHES } from '../../workflows/payment';

// `-unpatched`: recorded before a workflow.patched change; runs started then must still replay.
const SCENARIOS = ['confirmed', 'approved-above-threshold', 'approved-above-threshold-unpatched', 'declined', 'ledger-failure-refunded'];

type JSONEvent = {
  eventType: string;
  activityTaskScheduledEventAttributes?: { activityType: { name: string } };
  markerRecordedEventAttributes?: { markerName: string; details?: Record<string, { payloads: { data: string }[] }> };
};
type JSONHistory = { events: JSONEvent[] };

/** A history recorded by record-payment-histories.ts, in the JSON form Temporal's tools write. */
const recorded = (scenario: string): JSONHistory =>
  JSON.parse(readFileSync(join(__dirname, 'histories', `payment-${scenario}.json`), 'utf8')) as JSONHistory;

const replay = async (history: JSONHistory) => Worker.runReplayHistory({ workflowBundle: await sharedBundle(), sinks: workflowSinks() }, historyFromJSON(history));

describe('processPayment replays its recorded histories', () => {
  for (const scenario of SCENARIOS) {
    test(`${scenario}: the current code makes the same commands`, async () => {
      await replay(recorded(scenario));
    });
  }

  test('the approval histories take both branches of the approval-state patch', () => {
    const patches = (h: JSONHistory) => h.events.filter((e) => e.markerRecordedEventAttributes?.markerName === 'core_patch')
      .flatMap((e) => Object.values(e.markerRecordedEventAttributes!.details ?? {}).flatMap((d) => d.payloads))
      .map((p) => (JSON.parse(Buffer.from(p.data, 'base64').toString()) as { id: string }).id);
    assert.deepEqual(patches(recorded('approved-above-threshold')), [PATCHES.approvalStateWithItsWait]);
    assert.deepEqual(patches(recorded('approved-above-threshold-unpatched')), []);
  });

  test('a history whose first activity differs is a determinism violation', async () => {
    const history = recorded('confirmed');
    const scheduled = history.events.find((e) => e.eventType === 'EVENT_TYPE_ACTIVITY_TASK_SCHEDULED')?.activityTaskScheduledEventAttributes;
    assert.equal(scheduled?.activityType.name, 'validatePayment');
    scheduled.activityType.name = 'somethingElse';
    await assert.rejects(replay(history), (err: unknown) => {
      // By name too: the error may come from another copy of the SDK's classes than this file's.
      assert.ok(err instanceof DeterminismViolationError || (err as Error).name === 'DeterminismViolationError', `got ${String(err)}`);
      assert.match((err as Error).message, /somethingElse|validatePayment/);
      return true;
    });
  });
});
