import Fastify, { type FastifyInstance } from 'fastify';
import type { Registry } from 'prom-client';
import type { Logger } from './logger';

/** A named dependency check; resolves true when the dependency answers. */
export type ReadinessCheck = { name: string; check: () => Promise<boolean> | boolean };

export type StatusServerOptions = {
  port: number;
  host: string;
  registry: Registry;
  checks: ReadinessCheck[];
  /** What the process reports about itself at /info (the gateway: the config versions it serves). */
  info?: () => unknown;
  /** More metrics in the same text format (the worker: the Temporal SDK's), appended to the registry's. */
  extraMetrics?: () => Promise<string>;
  logger: Logger;
  checkTimeoutMs?: number;
};

async function runCheck(c: ReadinessCheck, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      Promise.resolve().then(c.check),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      }),
    ]);
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The status port every process serves beside its public one: `/metrics`, `/healthz`
 * (the process can serve) and `/readyz` (every dependency answers; 503 naming those that don't).
 */
export async function startStatusServer(opts: StatusServerOptions): Promise<{ app: FastifyInstance; setDraining: () => void }> {
  const app = Fastify({ logger: false });
  let draining = false;
  const timeoutMs = opts.checkTimeoutMs ?? 1500;

  app.get('/healthz', async () => ({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const results = await Promise.all(opts.checks.map(async (c) => [c.name, await runCheck(c, timeoutMs)] as const));
    const failing = results.filter(([, ok]) => !ok).map(([name]) => name);
    if (draining) failing.push('shutting-down');
    const body = { status: failing.length ? 'not-ready' : 'ready', checks: Object.fromEntries(results), failing };
    return reply.code(failing.length ? 503 : 200).send(body);
  });
  app.get('/info', async () => opts.info?.() ?? {});
  app.get('/metrics', async (_req, reply) => {
    reply.header('content-type', opts.registry.contentType);
    const own = await opts.registry.metrics();
    if (!opts.extraMetrics) return own;
    // Another exposition in the same text format (the Temporal SDK's); missing, the process's own still answer.
    const extra = await opts.extraMetrics().catch(() => '');
    return extra ? `${own}\n${extra}` : own;
  });

  await app.listen({ port: opts.port, host: opts.host });
  opts.logger.info({ port: opts.port }, 'status server listening');
  return { app, setDraining: () => { draining = true; } };
}
