import type { JetStreamManager } from 'nats';
import prom, { type Registry } from 'prom-client';
import { ApiError } from '../lib/errors';
import type { Logger } from '../lib/logger';
import { STREAMS, subjects } from '../lib/nats';

export type BacklogLimits = {
  /** Triggers waiting in JetStream (accepted, not yet started) past which every tenant is pushed back. */
  max: number;
  /** The same for one tenant: one tenant's burst fills its share, not the others'. */
  tenantMax: number;
};

/** A trigger subject less its tenant (`workflow.triggers.`). */
const SUBJECT_PREFIX = subjects.trigger('');

/**
 * Pushback before the trigger backlog outgrows a bound (DESIGN.md, guarantee 12): JetStream
 * takes triggers faster than Temporal starts them, and the gateway answers `429` with
 * `Retry-After` once a tenant's waiting triggers, or all of them, reach their bound.
 *
 * The stream keeps a trigger until it is started (work-queue retention), so its message count
 * per subject is the backlog per tenant. It is read every `pollMs` in the background, never on
 * the request path; between two reads this gateway counts what it accepted itself. The drain
 * rate between reads (accepted less still waiting) sets Retry-After: the time the excess takes
 * to drain, 1 to 60 s. A read that fails (NATS away) keeps the last figures: publishing then
 * fails anyway, with 503.
 */
export class TriggerBacklog {
  private total = 0;
  private perTenant = new Map<string, number>();
  private drainPerS = 0;
  private last?: { at: number; messages: number; lastSeq: number };
  private timer?: NodeJS.Timeout;
  private reading?: Promise<void>;
  private stopped = false;
  private readonly gauge: prom.Gauge;
  readonly pushbacks: prom.Counter;

  constructor(
    private readonly jsm: () => Promise<JetStreamManager>,
    private readonly limits: BacklogLimits,
    private readonly opts: { pollMs: number; logger: Logger; registry: Registry },
  ) {
    this.gauge = new prom.Gauge({ name: 'workflow_trigger_backlog', help: 'Triggers accepted and not yet started (JetStream), as the gateway last read it', registers: [opts.registry] });
    this.pushbacks = new prom.Counter({ name: 'workflow_trigger_pushbacks_total', help: 'Trigger requests answered 429 because the backlog was at its bound', labelNames: ['tenant', 'scope'], registers: [opts.registry] });
  }

  start(): void {
    const tick = () => {
      this.reading = this.read().finally(() => {
        this.reading = undefined;
        if (this.stopped) return;
        this.timer = setTimeout(tick, this.opts.pollMs);
        this.timer.unref();
      });
    };
    tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.reading;
  }

  /** Throws 429 when `tenant`'s backlog or the whole backlog is at its bound. */
  admit(tenant: string): void {
    const mine = this.perTenant.get(tenant) ?? 0;
    const scope = mine >= this.limits.tenantMax ? 'tenant' : this.total >= this.limits.max ? 'all' : undefined;
    if (!scope) return;
    const excess = scope === 'tenant' ? mine - this.limits.tenantMax + 1 : this.total - this.limits.max + 1;
    const retryAfter = Math.min(60, Math.max(1, Math.ceil(excess / Math.max(this.drainPerS, 1))));
    this.pushbacks.inc({ tenant, scope });
    throw new ApiError(429, 'trigger_backlog_full', scope === 'tenant'
      ? `this workspace has ${mine} workflow starts waiting (the bound is ${this.limits.tenantMax}); retry later`
      // Other workspaces' load is theirs: the platform-wide figures stay out of the answer.
      : 'the platform has too many workflow starts waiting; retry later', undefined, { 'Retry-After': String(retryAfter) });
  }

  /**
   * How many of `tenant`'s triggers wait in JetStream now (a read of the stream, not the figures
   * kept for pushback): accepted and neither started nor dead-lettered yet.
   */
  async waiting(tenant: string): Promise<number> {
    const subject = subjects.trigger(tenant);
    const info = await (await this.jsm()).streams.info(STREAMS.triggers, { subjects_filter: subject });
    return info.state.subjects?.[subject] ?? 0;
  }

  /** Counts a trigger this gateway made durable, until the next read sees it. */
  accepted(tenant: string): void {
    this.total += 1;
    this.perTenant.set(tenant, (this.perTenant.get(tenant) ?? 0) + 1);
  }

  private async read(): Promise<void> {
    try {
      const info = await (await this.jsm()).streams.info(STREAMS.triggers, { subjects_filter: subjects.trigger('*') });
      const perTenant = new Map<string, number>();
      for (const [subject, n] of Object.entries(info.state.subjects ?? {})) perTenant.set(subject.slice(SUBJECT_PREFIX.length), n);
      const now = Date.now();
      const { messages, last_seq: lastSeq } = info.state;
      if (this.last && now > this.last.at) {
        // Drained = what was waiting + what arrived since − what is waiting now.
        const drained = Math.max(0, this.last.messages + (lastSeq - this.last.lastSeq) - messages);
        const rate = drained / ((now - this.last.at) / 1000);
        this.drainPerS = this.drainPerS === 0 ? rate : 0.7 * this.drainPerS + 0.3 * rate;
      }
      this.last = { at: now, messages, lastSeq };
      this.total = messages;
      this.perTenant = perTenant;
      this.gauge.set(messages);
    } catch (err) {
      this.opts.logger.debug({ err }, 'trigger backlog not read; keeping the last figures');
    }
  }
}
