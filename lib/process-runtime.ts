import { ConfigError, loadConfig, type Config, type ProcessName } from './config';
import { createLogger, type Logger } from './logger';
import { createMetricsRegistry } from './metrics';
import { startStatusServer, type ReadinessCheck } from './status-server';
import type { Registry } from 'prom-client';
import { initTracing, type Tracing } from './tracing';

export type ProcessContext = { config: Config; logger: Logger; registry: Registry; tracing: Tracing };
/** What a process hands back: its readiness checks, its shutdown steps (run in order) and what it reports at /info. */
export type RunningProcess = {
  checks: ReadinessCheck[];
  shutdown: [step: string, run: () => Promise<unknown>][];
  info?: () => unknown;
  /** More metrics in Prometheus text format, served after the process's own at /metrics. */
  extraMetrics?: () => Promise<string>;
};

/** Exit code for a configuration error (sysexits EX_CONFIG). */
export const EXIT_CONFIG = 78;

/**
 * The shell every Flowgate process runs in: parse config once (exit 78 naming the bad
 * variable), logs, metrics and the status port, then on SIGTERM/SIGINT stop taking work,
 * drain what is in flight within the grace time, close clients and exit.
 */
export async function runProcess(name: ProcessName, start: (ctx: ProcessContext) => Promise<RunningProcess>): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(name);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`flowgate ${name}: ${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
  const logger = createLogger(name, config.FLOWGATE_LOG_LEVEL);
  const registry = createMetricsRegistry(name);
  // The gateway passes its spans by hand; the others' libraries (Temporal's interceptors) need the active context.
  const tracing = initTracing({ service: `flowgate-${name}`, endpoint: config.FLOWGATE_OTLP_ENDPOINT, share: config.FLOWGATE_TRACE_SAMPLE, activeContext: name !== 'gateway', edge: name === 'gateway', logger });
  let running: RunningProcess;
  try {
    running = await start({ config, logger, registry, tracing });
  } catch (err) {
    logger.fatal({ err }, 'start-up failed');
    process.exit(1);
  }
  const status = await startStatusServer({ port: config.statusPort, host: config.FLOWGATE_HOST, registry, checks: running.checks, info: running.info, extraMetrics: running.extraMetrics, logger });
  logger.info('started');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    status.setDraining();
    logger.info({ signal }, 'shutting down');
    const hardStop = setTimeout(() => {
      logger.error('shutdown grace time exceeded; exiting');
      process.exit(1);
    }, config.FLOWGATE_SHUTDOWN_GRACE_MS + 5000);
    hardStop.unref();
    try {
      for (const [step, run] of running.shutdown) {
        const t0 = Date.now();
        await run();
        logger.info({ step, ms: Date.now() - t0 }, 'shutdown step done');
      }
      await tracing.shutdown();
      await status.app.close();
      logger.info('stopped');
      process.exit(0);
    } catch (err) {
      logger.error({ err }, 'error during shutdown');
      process.exit(1);
    }
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}
