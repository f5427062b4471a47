/**
 * Runs `pass` every `everyMs` after the previous pass ended (never two at once), until the
 * returned stop, which waits for a pass under way. A pass that throws is reported to `failed`
 * and the next one runs as planned. `stopped()` tells a long pass to end early.
 */
export function pollLoop(everyMs: number, pass: () => Promise<void>, failed: (err: unknown) => void): { stop: () => Promise<void>; stopped: () => boolean } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = pass().catch(failed).finally(schedule);
    }, everyMs);
  };
  schedule();
  return {
    stopped: () => stopped,
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
