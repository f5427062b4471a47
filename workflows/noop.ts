import { proxyActivities } from '@temporalio/workflow';
import type { createActivities } from '../activities';

const { noop } = proxyActivities<ReturnType<typeof createActivities>>({ startToCloseTimeout: '10 seconds' });

/** `count` activities that do nothing, one after another: the yardstick of bench/payments.ts. */
export async function noopActivities(input: { count: number }): Promise<{ done: number }> {
  for (let i = 0; i < input.count; i++) await noop();
  return { done: input.count };
}
