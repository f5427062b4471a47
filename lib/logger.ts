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

/**
 * A request's child logger, made only when something logs through it. Fastify gives every
 * request a child of the process logger (bound to its correlation id); most requests never log,
 * and pino's child() with redaction showed in the gateway's profile.
 */
export class LazyChildLogger {
  private made?: Logger;

  constructor(private readonly parent: Logger, private readonly bindings: pino.Bindings, private readonly opts: pino.ChildLoggerOptions) {}

  private get real(): Logger {
    this.made ??= this.parent.child(this.bindings, this.opts);
    return this.made;
  }

  get level(): string { return this.made?.level ?? this.opts.level ?? this.parent.level; }
  set level(level: string) { this.real.level = level; }
  isLevelEnabled(level: string): boolean { return this.made ? this.made.isLevelEnabled(level) : this.parent.isLevelEnabled(level); }
  child(bindings: pino.Bindings, opts?: pino.ChildLoggerOptions): Logger { return this.real.child(bindings, opts); }
  fatal(...args: unknown[]): void { this.log('fatal', args); }
  error(...args: unknown[]): void { this.log('error', args); }
  warn(...args: unknown[]): void { this.log('warn', args); }
  info(...args: unknown[]): void { this.log('info', args); }
  debug(...args: unknown[]): void { this.log('debug', args); }
  trace(...args: unknown[]): void { this.log('trace', args); }
  silent(): void {}

  private log(level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace', args: unknown[]): void {
    // A line below the level is dropped without making the child.
    if (!this.isLevelEnabled(level)) return;
    (this.real[level] as (...a: unknown[]) => void)(...args);
  }
}
