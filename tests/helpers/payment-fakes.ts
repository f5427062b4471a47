import { createRequire } from 'node:module';
import type { History } from '@temporalio/common/lib/proto-utils';
import * as proto from '@temporalio/proto';
import { patchProtobufRoot } from '@temporalio/proto/lib/patch-protobuf-root';
import type { paymentActivities } from '../../activities/payments';

export type PaymentActivities = ReturnType<typeof paymentActivities>;
export const FAKE_THRESHOLD = 100_000;

/**
 * Fakes of every activity processPayment proxies (and the interceptor's webhook): a payment that
 * goes through, unless `overrides` replace single activities. For workflow tests only.
 */
export const paymentFakes = (overrides: Partial<PaymentActivities> = {}) => ({
  validatePayment: async (_ctx, input) => ({ approval_required: input.amount > FAKE_THRESHOLD, approval_threshold: FAKE_THRESHOLD }),
  chargePayment: async () => ({ charge_id: 'ch_1' }),
  refundPayment: async () => ({ refunded: true, refund_id: 're_1' }),
  recordLedger: async () => ({ entries: 2 }),
  reverseLedger: async () => ({ entries: 2 }),
  notifyPayment: async () => ({ webhook: false }),
  publishPaymentEvent: async () => undefined,
  raisePaymentAlert: async () => undefined,
  ...overrides,
  deliverWebhook: async () => ({ status: 200 }),
  composeGreeting: async (name: string) => `Hello, ${name}!`,
} satisfies PaymentActivities & Record<string, unknown>);

// What `historyToJSON`/`historyFromJSON` from @temporalio/common/lib/proto-utils do. Those throw
// "type must be a Type" in this install: npm nests two copies of protobufjs@8 (under
// @temporalio/common and @temporalio/proto, because @grpc/proto-loader holds the top-level slot
// with protobufjs@7) and protojson checks `instanceof Type` against its own copy. Here both come
// from @temporalio/proto's.
const protojson = createRequire(require.resolve('@temporalio/proto'))('protobufjs/ext/protojson') as {
  toJson(type: unknown, message: unknown): unknown;
  fromJson(type: unknown, json: unknown, options?: object): unknown;
};
const historyType = (patchProtobufRoot(proto) as unknown as { lookupType(name: string): unknown }).lookupType('temporal.api.history.v1.History');

/** A history in the JSON form Temporal's tools write. */
export const historyToJSON = (history: History): string =>
  JSON.stringify(protojson.toJson(historyType, proto.temporal.api.history.v1.History.fromObject(history)), null, 2);
export const historyFromJSON = (json: unknown): History => protojson.fromJson(historyType, json, { ignoreUnknownFields: true }) as History;
