import { proxyActivities } from '@temporalio/workflow';
import type { createActivities } from '../activities';
import { Progress } from './progress';

const { composeGreeting } = proxyActivities<ReturnType<typeof createActivities>>({
  startToCloseTimeout: '10 seconds',
  retry: { initialInterval: '200 ms', maximumAttempts: 5 },
});

export type HelloInput = { name: string };
export type HelloResult = { greeting: string };

/** The smallest workflow type: one activity, the example in the README. */
export async function hello(input: HelloInput): Promise<HelloResult> {
  const progress = new Progress(['greet']);
  const greeting = await progress.step('greet', () => composeGreeting(input.name));
  return progress.complete({ greeting });
}
