import {
  CancellationScope,
  isCancellation,
  log,
  proxyActivities,
  TemporalFailure,
  workflowInfo,
  type Next,
  type WorkflowExecuteInput,
  type WorkflowInboundCallsInterceptor,
  type WorkflowInterceptors,
} from '@temporalio/workflow';
import type { createActivities } from '../activities';
import type { ExecutionMemo } from '../lib/trigger-message';
import { webhookEvent, type WebhookEvent, type WebhookStatus } from '../lib/workflow-webhooks';

// No attempt limit: a receiver that is down gets three attempts here, then the worker's retrier
// (activities/webhooks.ts); what fails for longer is the platform's own (PostgreSQL away, where
// the signing secret and the retrier's table are), and the webhook must outlast it.
const { deliverWebhook } = proxyActivities<ReturnType<typeof createActivities>>({
  startToCloseTimeout: '15 seconds',
  retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '5 minutes' },
});

/**
 * Every workflow started with a callback URL tells it how it ended — completed, failed or
 * canceled — through a durable activity, so a crash of any process does not lose the webhook.
 */
class WebhookInterceptor implements WorkflowInboundCallsInterceptor {
  async execute(input: WorkflowExecuteInput, next: Next<WorkflowInboundCallsInterceptor, 'execute'>): Promise<unknown> {
    const memo = workflowInfo().memo as Partial<ExecutionMemo> | undefined;
    if (!memo?.callback_url) return next(input);
    const notify = async (status: WebhookStatus, extra: Pick<WebhookEvent, 'result' | 'error'>) => {
      const event = webhookEvent({ ...workflowInfo(), memo }, status, new Date(), extra);
      try {
        // Runs even when the workflow itself is being canceled.
        await CancellationScope.nonCancellable(() => deliverWebhook(memo.callback_url!, event));
      } catch (err) {
        log.warn('webhook delivery gave up', { error: String(err) });
      }
    };
    let result: unknown;
    try {
      result = await next(input);
    } catch (err) {
      if (isCancellation(err)) await notify('CANCELED', {});
      else if (err instanceof TemporalFailure) {
        // Only a Temporal failure fails the run. Anything else (a TypeError: a bug) fails the
        // workflow task, which is retried while the run stays open, to go on once the code is fixed.
        const e = err as Error & { type?: string };
        await notify('FAILED', { error: { message: e.message, type: e.type ?? e.name } });
      }
      throw err;
    }
    await notify('COMPLETED', { result });
    return result;
  }
}

export const interceptors = (): WorkflowInterceptors => ({ inbound: [new WebhookInterceptor()] });
