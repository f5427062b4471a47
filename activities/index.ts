import type { Pool } from 'pg';
import type { Logger } from '../lib/logger';
import { composeGreeting } from './greeting';
import { webhookActivities } from './webhooks';

/** The clients activities share; created once by the worker, never per call. */
export type ActivityDeps = {
  logger: Logger;
  pool: Pool;
};

/** Every activity the worker registers, closed over its clients. */
export function createActivities(deps: ActivityDeps) {
  return {
    composeGreeting,
    ...webhookActivities(deps),
  };
}
