import pino from 'pino';

export type Logger = pino.Logger;

/** Paths whose values are secrets: pino replaces them before a line is written. */
export const REDACT_PATHS = [
  'password', '*.password', 'token', '*.token', 'secret', '*.secret', 'apiKey', '*.apiKey', 'api_key', '*.api_key',
  'authorization', '*.authorization', 'req.headers.authorization', 'req.headers["x-api-key"]',
  'headers.authorization', 'headers["x-api-key"]', 'client_secret', '*.client_secret',
];

/** Structured JSON logs, one base logger per process. */
export function createLogger(service: string, level = 'info'): Logger {
  return pino({
    level,
    base: { service, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { level: (label) => ({ level: label }) },
  });
}
