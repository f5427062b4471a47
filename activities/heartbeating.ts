import { Context } from '@temporalio/activity';

/**
 * Runs `fn` while telling Temporal every 2 s that the activity is alive: for a step whose length
 * depends on the data (a digest of every table) or on others (a gateway that does not answer),
 * which must not be taken for a dead worker by its heartbeat timeout.
 */
export async function whileBeating<T>(fn: () => Promise<T>, everyMs = 2000): Promise<T> {
  const ctx = Context.current();
  const beat = setInterval(() => ctx.heartbeat(), everyMs);
  try {
    return await fn();
  } finally {
    clearInterval(beat);
  }
}
