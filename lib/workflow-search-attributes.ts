import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

/**
 * Custom search attributes, registered by the local stack (stack/servers.ts) and used by the
 * consumers (at start), the workflows (progress) and the status API (describe, list).
 */
export const SA = {
  tenant: defineSearchAttributeKey('FlowgateTenant', SearchAttributeType.KEYWORD),
  step: defineSearchAttributeKey('FlowgateStep', SearchAttributeType.KEYWORD),
  progress: defineSearchAttributeKey('FlowgateProgress', SearchAttributeType.INT),
  waitingFor: defineSearchAttributeKey('FlowgateWaitingFor', SearchAttributeType.KEYWORD),
  correlationId: defineSearchAttributeKey('FlowgateCorrelationId', SearchAttributeType.KEYWORD),
} as const;

/** The progress record every workflow keeps in its memo under this key (read by describe). */
export const PROGRESS_MEMO_KEY = 'flowgate_progress';

export type ProgressRecord = {
  current_step: string | null;
  progress: number;
  steps: string[];
  last_update: string;
  waiting_for?: { kind: 'signal' | 'approval'; name: string; since: string } | null;
  /** A business state, for workflows that have one (payments: PENDING … REFUNDED). */
  state?: string | null;
};
