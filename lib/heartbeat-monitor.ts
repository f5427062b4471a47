import type { NatsConnection, Subscription } from 'nats';
import type { Registry } from 'prom-client';
import type { Heartbeat } from './heartbeats';
import type { Logger } from './logger';
import { prom } from './metrics';
import { natsConnected, subjects } from './nats';

/** What the monitor says on Kafka `api.events` (tenant `_platform`), so a trigger rule can start a runbook on it. */
export type ProcessEvent = {
  id: string;
  type: 'platform.process_silent' | 'platform.process_recovered';
  tenant: '_platform';
  occurred_at: string;
  data: { process: string; instance: string; status_url: string; last_seen: string; silent_for_ms: number };
};

type Seen = { beat: Heartbeat; lastSeen: number; silentSince?: number };

export type InstanceView = { process: string; instance: string; status_url: string; last_seen: string; state: 'alive' | 'silent' };

/** An instance silent this long is forgotten (a pod scaled away); its silence was reported long before. */
const FORGET_AFTER_MS = 15 * 60_000;

/**
 * Watches `health.heartbeats`. An instance that has beaten and then says nothing for
 * `silentAfterMs` is reported once — metric and event — and again as recovered if it comes back.
 * An instance that says it is stopping (a graceful shutdown) is dropped without a report.
 * Every admin instance runs one; events carry a stable id (the instance's own beat time, not
 * this admin's clock) so consumers drop the repeats.
 *
 * A monitor that cannot hear reports nothing: while its own NATS connection is down, and on the
 * first sweep after its event loop stalled (the beats that came meanwhile are still unread), every
 * instance would look silent at once.
 */
export class HeartbeatMonitor {
  private readonly seen = new Map<string, Seen>();
  private sub?: Subscription;
  private timer?: NodeJS.Timeout;
  private readonly silences: prom.Counter<'process'>;

  constructor(private readonly opts: {
    nc: NatsConnection;
    registry: Registry;
    logger: Logger;
    silentAfterMs: number;
    /** Where events go (Kafka api.events in the admin process). */
    emit: (e: ProcessEvent) => Promise<void> | void;
    now?: () => number;
    /** Whether this monitor hears the bus (default: its NATS connection is up). */
    connected?: () => boolean;
  }) {
    const counts = (state: 'alive' | 'silent') => {
      const out = new Map<string, number>();
      for (const s of this.seen.values()) {
        if ((s.silentSince === undefined) === (state === 'alive')) out.set(s.beat.process, (out.get(s.beat.process) ?? 0) + 1);
      }
      return out;
    };
    const gauge = (name: string, help: string, state: 'alive' | 'silent') => new prom.Gauge({
      name, help, labelNames: ['process'], registers: [opts.registry],
      collect() {
        this.reset();
        for (const p of ['gateway', 'admin', 'triggers', 'worker']) this.set({ process: p }, 0);
        for (const [p, n] of counts(state)) this.set({ process: p }, n);
      },
    });
    gauge('platform_processes_alive', 'Instances beating on health.heartbeats, per process', 'alive');
    gauge('platform_processes_silent', 'Instances that stopped beating without saying they stop, per process', 'silent');
    this.silences = new prom.Counter({ name: 'platform_process_silences_total', help: 'Instances reported silent', labelNames: ['process'], registers: [opts.registry] });
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  start(sweepMs = 500): void {
    this.sub = this.opts.nc.subscribe(subjects.heartbeats, {
      callback: (err, m) => {
        if (err) return;
        try {
          this.observe(m.json<Heartbeat>());
        } catch {
          this.opts.logger.warn({ subject: m.subject }, 'a heartbeat that is not JSON was ignored');
        }
      },
    });
    this.timer = setInterval(() => this.tick(sweepMs), sweepMs);
    this.timer.unref();
  }

  private lastTick?: number;
  private deaf = false;
  /** Since when this monitor hears again (after a disconnect or a stall): silences count from then at the earliest. */
  private hearingSince = 0;

  /**
   * The timer's sweep: skipped while the monitor is deaf and after a stall (see the class
   * comment); when it hears again, every instance gets `silentAfterMs` from then to be heard.
   */
  tick(sweepMs: number): void {
    const now = this.now();
    const gap = this.lastTick === undefined ? 0 : now - this.lastTick;
    this.lastTick = now;
    if (!(this.opts.connected?.() ?? natsConnected(this.opts.nc))) {
      this.deaf = true;
      return;
    }
    if (this.deaf || gap > Math.max(4 * sweepMs, 2000)) {
      this.opts.logger.warn({ gap_ms: gap, was_disconnected: this.deaf }, 'heartbeat monitor hearing again: silences counted from now');
      this.deaf = false;
      this.hearingSince = now;
      return;
    }
    this.sweep();
  }

  stop(): void {
    clearInterval(this.timer);
    this.sub?.unsubscribe();
  }

  observe(beat: Heartbeat): void {
    if (!beat?.instance || !beat.process) return;
    if (beat.status === 'stopping') {
      this.seen.delete(beat.instance);
      this.opts.logger.info({ instance: beat.instance, process: beat.process }, 'instance stopped (said so)');
      return;
    }
    const prev = this.seen.get(beat.instance);
    const now = this.now();
    this.seen.set(beat.instance, { beat, lastSeen: now });
    if (prev?.silentSince !== undefined) {
      this.opts.logger.warn({ instance: beat.instance, process: beat.process, silent_for_ms: now - prev.lastSeen }, 'instance beating again');
      this.report('platform.process_recovered', beat, prev.lastSeen, now);
    }
  }

  /** Marks and reports the instances silent for too long; forgets those long gone. */
  sweep(): void {
    const now = this.now();
    for (const [instance, s] of this.seen) {
      if (now - s.lastSeen > FORGET_AFTER_MS) {
        this.seen.delete(instance);
        continue;
      }
      if (s.silentSince !== undefined || now - Math.max(s.lastSeen, this.hearingSince) < this.opts.silentAfterMs) continue;
      s.silentSince = now;
      this.silences.inc({ process: s.beat.process });
      this.opts.logger.error({ instance, process: s.beat.process, silent_for_ms: now - s.lastSeen }, 'instance silent: no heartbeat');
      this.report('platform.process_silent', s.beat, s.lastSeen, now);
    }
  }

  instances(): InstanceView[] {
    return [...this.seen.values()].map((s) => ({
      process: s.beat.process, instance: s.beat.instance, status_url: s.beat.status_url,
      last_seen: new Date(s.lastSeen).toISOString(), state: s.silentSince === undefined ? 'alive' : 'silent',
    }));
  }

  private report(type: ProcessEvent['type'], beat: Heartbeat, lastSeen: number, now: number): void {
    const event: ProcessEvent = {
      // The last beat before the silence, as its sender stamped it: the same id from every admin.
      id: `${beat.instance}:${type}:${beat.at}`,
      type, tenant: '_platform', occurred_at: new Date(now).toISOString(),
      data: { process: beat.process, instance: beat.instance, status_url: beat.status_url, last_seen: new Date(lastSeen).toISOString(), silent_for_ms: now - lastSeen },
    };
    Promise.resolve(this.opts.emit(event)).catch((err: unknown) => this.opts.logger.warn({ err, type, instance: beat.instance }, 'process event not sent'));
  }
}
