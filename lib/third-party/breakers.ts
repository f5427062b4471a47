import CircuitBreaker from 'opossum';
import type { NatsConnection } from 'nats';
import type { Registry } from 'prom-client';
import { prom } from '../metrics';
import type { Logger } from '../logger';
import type { ThirdPartyService } from './services';

export type BreakerState = 'closed' | 'open' | 'half_open';

/** What a breaker's change looks like on NATS (`third-party.breakers.{service}`). */
export type BreakerEvent = {
  service: string;
  state: BreakerState;
  /** Which process saw it; a process ignores its own events. */
  instance: string;
  at: string;
  /** While open: when the breaker lets a probe through again. */
  retry_at?: string;
  /** True when the breaker opened because a peer's did, not because of its own calls. */
  adopted?: boolean;
};

export const breakerSubject = (service: string) => `third-party.breakers.${service}`;

const STATE_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

export class BreakerOpenError extends Error {
  readonly code = 'EOPENBREAKER';
  constructor(readonly service: string, readonly retryAfterMs: number) {
    super(`circuit breaker for ${service} is open; next probe in ${Math.ceil(retryAfterMs / 1000)} s`);
    this.name = 'BreakerOpenError';
  }
}

type Entry = { breaker: CircuitBreaker<[() => Promise<unknown>], unknown>; openedAt: number; resetMs: number; adopting: boolean };

/**
 * One opossum breaker per third party per process, shared by every activity call. Its changes
 * are a gauge and a counter and are published on NATS; an `open` published by another process
 * opens ours too, so the fleet stops calling a dead service together rather than one by one.
 */
export class BreakerRegistry {
  private readonly entries = new Map<string, Entry>();
  private readonly stateGauge?: prom.Gauge<'service'>;
  private readonly transitions?: prom.Counter<'service' | 'to'>;

  constructor(
    services: ThirdPartyService[],
    private readonly opts: { instance: string; nats?: NatsConnection; registry?: Registry; logger?: Logger; now?: () => number },
  ) {
    if (opts.registry) {
      this.stateGauge = new prom.Gauge({ name: 'third_party_breaker_state', help: 'Breaker state per third party: 0 closed, 1 half-open, 2 open', labelNames: ['service'], registers: [opts.registry] });
      this.transitions = new prom.Counter({ name: 'third_party_breaker_transitions_total', help: 'Breaker state changes', labelNames: ['service', 'to'], registers: [opts.registry] });
    }
    // All at once: a process that has not called a service yet still follows the fleet's opens.
    for (const svc of services) this.entries.set(svc.name, this.create(svc));
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** Follows the fleet's breaker events; returns when the subscription ends. */
  async followFleet(): Promise<void> {
    const { nats } = this.opts;
    if (!nats) return;
    const sub = nats.subscribe('third-party.breakers.*');
    for await (const msg of sub) {
      try {
        const ev = msg.json<BreakerEvent>();
        if (ev.instance === this.opts.instance || ev.state !== 'open' || ev.adopted) continue;
        const entry = this.entries.get(ev.service);
        if (!entry || !entry.breaker.closed) continue;
        entry.adopting = true;
        entry.breaker.open();
        entry.adopting = false;
      } catch (err) {
        this.opts.logger?.warn({ err }, 'ignored a malformed breaker event');
      }
    }
  }

  private create(svc: ThirdPartyService): Entry {
    const b = svc.breaker;
    const breaker = new CircuitBreaker((action: () => Promise<unknown>) => action(), {
      // Timeouts are the client's own (AbortSignal), so the request is really cancelled.
      timeout: false,
      errorThresholdPercentage: b.error_threshold_percentage,
      rollingCountTimeout: b.rolling_window_ms,
      rollingCountBuckets: 10,
      volumeThreshold: b.volume_threshold,
      resetTimeout: b.reset_timeout_ms,
      name: svc.name,
    });
    const entry: Entry = { breaker, openedAt: 0, resetMs: b.reset_timeout_ms, adopting: false };
    const changed = (state: BreakerState) => {
      if (state === 'open') entry.openedAt = this.now();
      this.stateGauge?.set({ service: svc.name }, STATE_VALUE[state]);
      this.transitions?.inc({ service: svc.name, to: state });
      const ev: BreakerEvent = {
        service: svc.name, state, instance: this.opts.instance, at: new Date(this.now()).toISOString(),
        ...(state === 'open' ? { retry_at: new Date(entry.openedAt + entry.resetMs).toISOString() } : {}),
        ...(entry.adopting ? { adopted: true } : {}),
      };
      this.opts.logger?.warn({ breaker: ev }, `breaker ${svc.name} ${state}`);
      try {
        this.opts.nats?.publish(breakerSubject(svc.name), JSON.stringify(ev));
      } catch (err) {
        this.opts.logger?.warn({ err }, 'could not publish a breaker change');
      }
    };
    breaker.on('open', () => changed('open'));
    breaker.on('halfOpen', () => changed('half_open'));
    breaker.on('close', () => changed('closed'));
    this.stateGauge?.set({ service: svc.name }, 0);
    return entry;
  }

  /**
   * Runs `action` through the service's breaker. `action` rejects for what counts as a failure
   * (5xx, timeout, network) and resolves for everything else, 4xx included. While the breaker is
   * open this rejects at once with BreakerOpenError, which says when the next probe is due.
   */
  async fire<T>(service: string, action: () => Promise<T>): Promise<T> {
    const e = this.entries.get(service);
    if (!e) throw new Error(`no breaker for ${service}`);
    try {
      return (await e.breaker.fire(action)) as T;
    } catch (err) {
      if ((err as { code?: string }).code === 'EOPENBREAKER') throw new BreakerOpenError(service, this.remainingOpenMs(service));
      throw err;
    }
  }

  state(service: string): BreakerState {
    const b = this.entries.get(service)?.breaker;
    if (!b || b.closed) return 'closed';
    return b.halfOpen ? 'half_open' : 'open';
  }

  /** How long until an open breaker lets a probe through (0 when closed or half-open). */
  remainingOpenMs(service: string): number {
    const e = this.entries.get(service);
    if (!e || !e.breaker.opened) return 0;
    return Math.max(0, e.openedAt + e.resetMs - this.now());
  }

  shutdown(): void {
    for (const e of this.entries.values()) e.breaker.shutdown();
  }
}
