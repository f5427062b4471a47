import { ActivityFailure, ApplicationFailure, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { OutboundResult } from '../activities/third-party';
import type { ExecutionMemo } from '../lib/trigger-message';
import { Progress } from './progress';

// One attempt at the workflow level: the client already retried 5xx and timeouts in the call
// (100/200/400 ms), and the caller waiting on the gateway wants an answer, not a backoff.
const { callThirdParty } = proxyActivities<ReturnType<typeof createActivities>>({
  startToCloseTimeout: '1 minute',
  heartbeatTimeout: '10 seconds',
  retry: { maximumAttempts: 1 },
});

export type ThirdPartyCallInput = { service: string; method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE'; path: string; body?: unknown; idempotency_key?: string };

/**
 * `POST /outbound/3rdparty/{service}/{path}` as a workflow: the call is durable and has a status
 * URL when the caller stops waiting. A failure keeps the client's type (BreakerOpen,
 * ThirdPartyUnavailable) and details, so the gateway answers 503/502 with `retry_after`.
 */
export async function thirdPartyCall(input: ThirdPartyCallInput): Promise<OutboundResult> {
  const info = workflowInfo();
  const memo = info.memo as Partial<ExecutionMemo> | undefined;
  const progress = new Progress(['call']);
  try {
    const result = await progress.step('call', () => callThirdParty({
      tenant: memo?.tenant ?? '', correlation_id: memo?.correlation_id ?? info.workflowId, ...input,
    }));
    return progress.complete(result);
  } catch (err) {
    const cause = err instanceof ActivityFailure ? err.cause : undefined;
    if (cause instanceof ApplicationFailure) throw ApplicationFailure.nonRetryable(cause.message, cause.type, ...(cause.details ?? []));
    throw ApplicationFailure.nonRetryable((cause ?? (err as Error)).message, 'ThirdPartyCallFailed');
  }
}
