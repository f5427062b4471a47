import type { Logger } from '../lib/logger';
import { composeGreeting } from './greeting';

/** The clients activities share; created once by the worker, never per call. */
export type ActivityDeps = {
  logger: Logger;
};

/** Every activity the worker registers, closed over its clients. */
export function createActivities(_deps: ActivityDeps) {
  return {
    composeGreeting,
  };
}
