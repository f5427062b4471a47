import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import type { History } from '@temporalio/common/lib/proto-utils';
import * as proto from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root';
import { Worker } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { sharedBundle } from '../helpers/temporal-test-env';

const SCENARIOS = ['confirmed', 'approved-above-threshold', 'declined', 'ledger-failure-refunded'];

type JSONEvent = { eventType: string; activityTaskScheduledEventAttributes?: { activityType: { name: string } } };
type JSONHistory = { events: JSONEvent[] };

// What `historyFromJSON` from @temporalio/common/lib/proto-utils (and so runReplayHistory given the
// JSON form) does. That one throws "type must be a Type" in this install: npm nests two copies of
// protobufjs@8 (under @temporalio/common and @temporalio/proto, because @grpc/proto-loader holds the
// top-level slot with protobufjs@7) and protojson checks `instanceof Type` against its own copy.
// Here both come from @temporalio/proto's.
const protojson = createRequire(require.resolve('@temporalio/proto'))('protobufjs/ext/protojson') as { fromJson(type: unknown, json: unknown, options?: object): unknown };
const historyType = (patchProtobufRoot(proto) as unknown as { lookupType(name: string): unknown }).lookupType('temporal.api.history.v1.History');
const historyFromJSON = (json: JSONHistory): History => protojson.fromJson(historyType, json, { ignoreUnknownFields: true }) as History;

/** A history recorded by record-payment-histories.ts, in the JSON form Temporal's tools write. */
const recorded = (scenario: string): JSONHistory =>
  JSON.parse(readFileSync(join(__dirname, 'histories', `payment-${scenario}.json`), 'utf8')) as JSONHistory;

const replay = async (history: JSONHistory) => Worker.runReplayHistory({ workflowBundle: await sharedBundle() }, historyFromJSON(history));

describe('processPayment replays its recorded histories', () => {
  for (const scenario of SCENARIOS) {
    test(`${scenario}: the current code makes the same commands`, async () => {
      await replay(recorded(scenario));
    });
  }

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
