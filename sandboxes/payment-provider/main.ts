import closeWithGrace from 'close-with-grace';
import pino from 'pino';
import { z } from 'zod';
import { EXIT_CONFIG } from '../../lib/process-runtime';
import { buildPaymentSandbox } from './app';

const envSchema = z.object({
  PAYMENT_SANDBOX_PORT: z.coerce.number().int().min(0).max(65535).default(8300),
  PAYMENT_SANDBOX_HOST: z.string().min(1).default('127.0.0.1'),
  PAYMENT_SANDBOX_LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

async function start(): Promise<void> {
  const env = envSchema.safeParse(process.env);
  if (!env.success) {
    for (const issue of env.error.issues) process.stderr.write(`payment-sandbox: ${issue.path.join('.')}: ${issue.message}\n`);
    process.exit(EXIT_CONFIG);
  }
  const { PAYMENT_SANDBOX_PORT: port, PAYMENT_SANDBOX_HOST: host, PAYMENT_SANDBOX_LOG_LEVEL: level } = env.data;
  const { app } = buildPaymentSandbox({
    logger: {
      level,
      base: { service: 'payment-sandbox', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
  });
  closeWithGrace({ delay: 10_000, logger: app.log }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'closing after an error');
    else app.log.info({ signal }, 'shutting down');
    await app.close();
  });
  await app.listen({ port, host });
  if (!['127.0.0.1', '::1', 'localhost'].includes(host)) app.log.warn({ host }, '/_sandbox has no authentication; listen on loopback only');
}

start().catch((err: unknown) => {
  process.stderr.write(`payment-sandbox: start-up failed: ${String(err)}\n`);
  process.exit(1);
});
