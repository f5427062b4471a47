import { AckPolicy, DeliverPolicy, nanos, type JetStreamClient, type JetStreamManager, type JsMsg } from 'nats';
import type { Logger } from './logger';

/** A message that can never succeed: dead-letter it now instead of retrying. */
export class PoisonMessageError extends Error {}

/**
 * A dependency is away (Temporal unreachable, a deadline passed): retry without limit and
 * never dead-letter, so an outage of any length loses no trigger.
 */
export class DependencyUnavailableError extends Error {}

export type JetStreamWorkerOptions = {
  js: JetStreamClient;
  jsm: JetStreamManager;
  stream: string;
  durable: string;
  /** How many messages are worked on at once (and buffered): the concurrency bound. */
  concurrency: number;
  /**
   * Deliveries failing with an ordinary error before a message is dead-lettered. Only those
   * count: not the retries while a dependency was away, nor redeliveries after a crash or an
   * expired ack wait, which the server's delivery count includes.
   */
  maxDeliver: number;
  ackWaitMs?: number;
  logger: Logger;
  /** Does the work; resolves only once it is durable. Throw PoisonMessageError for poison. */
  handle: (m: JsMsg) => Promise<void>;
  /** Records a message that will not be retried any more (stream, database, audit). */
  deadLetter: (m: JsMsg, reason: string) => Promise<void>;
  onRedelivery?: (m: JsMsg) => void;
};

/** Backoff for a nak: 250 ms doubling per delivery, at most `capMs` (30 s). */
export const nakDelayMs = (deliveries: number, capMs = 30_000) => Math.min(250 * 2 ** Math.max(deliveries - 1, 0), capMs);

/** While a dependency is away, retry often enough that work resumes within seconds of its return. */
const OUTAGE_RETRY_CAP_MS = 2_000;

/**
 * The ordinary failures of the messages this process has worked on, by stream sequence. Kept
 * here, not read from the server: its delivery count also grows with every retry during an
 * outage, so after a long one the first ordinary error would dead-letter at once. A message
 * redelivered to another process (or after a restart) starts again from zero there: more
 * retries than `maxDeliver`, never fewer. Bounded; the oldest entries go first.
 */
export class FailureCounts {
  private readonly counts = new Map<number, number>();
  constructor(private readonly max = 10_000) {}

  /** Counts one more ordinary failure of `seq`; returns how many it has had. */
  failed(seq: number): number {
    const n = (this.counts.get(seq) ?? 0) + 1;
    this.counts.delete(seq);
    this.counts.set(seq, n);
    if (this.counts.size > this.max) this.counts.delete(this.counts.keys().next().value!);
    return n;
  }

  forget(seq: number): void {
    this.counts.delete(seq);
  }

  get size(): number {
    return this.counts.size;
  }
}

/**
 * A durable pull consumer shared by every process that runs it (JetStream spreads the work):
 * bounded concurrency, ack only after the work is durable, nak with backoff on transient
 * failure, dead-letter poison and exhausted messages, and drain on stop.
 */
export async function startJetStreamWorker(opts: JetStreamWorkerOptions): Promise<{ stop: () => Promise<void> }> {
  const ackWait = opts.ackWaitMs ?? 30_000;
  const config = {
    durable_name: opts.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ackWait),
    // Unlimited on the server: only we decide when to dead-letter (never during an outage).
    max_deliver: -1,
    max_ack_pending: Math.max(opts.concurrency * 4, 256),
  };
  try {
    await opts.jsm.consumers.info(opts.stream, opts.durable);
    await opts.jsm.consumers.update(opts.stream, opts.durable, { ack_wait: config.ack_wait, max_deliver: config.max_deliver, max_ack_pending: config.max_ack_pending });
  } catch (err) {
    if (!String((err as Error).message).includes('consumer not found')) throw err;
    await opts.jsm.consumers.add(opts.stream, config);
  }
  const consumer = await opts.js.consumers.get(opts.stream, opts.durable);
  const messages = await consumer.consume({ max_messages: opts.concurrency });
  const inFlight = new Set<Promise<void>>();
  const failures = new FailureCounts();
  let release: (() => void) | undefined;

  const process1 = async (m: JsMsg) => {
    const deliveries = m.info.deliveryCount;
    const seq = m.info.streamSequence;
    if (deliveries > 1) opts.onRedelivery?.(m);
    // Keep the message ours while slow work runs (e.g. Temporal briefly away).
    const keepAlive = setInterval(() => m.working(), Math.max(ackWait / 3, 1000));
    try {
      await opts.handle(m);
      failures.forget(seq);
      await m.ackAck().catch(() => undefined); // a lost ack means a redelivery, which the handler absorbs
    } catch (err) {
      const poison = err instanceof PoisonMessageError;
      if (err instanceof DependencyUnavailableError) {
        opts.logger.warn({ err: err.message, deliveries, subject: m.subject }, 'dependency unavailable; will retry');
        m.nak(nakDelayMs(deliveries, OUTAGE_RETRY_CAP_MS));
        return;
      }
      const failed = poison ? 0 : failures.failed(seq);
      if (poison || failed >= opts.maxDeliver) {
        const reason = poison ? (err as Error).message : `gave up after ${failed} failed deliveries: ${(err as Error).message}`;
        try {
          await opts.deadLetter(m, reason);
          failures.forget(seq);
          m.term(reason);
        } catch (dlqErr) {
          opts.logger.error({ err: dlqErr }, 'dead-lettering failed; will retry');
          m.nak(nakDelayMs(failed));
        }
      } else {
        opts.logger.warn({ err, deliveries, failed, subject: m.subject }, 'transient failure; will retry');
        m.nak(nakDelayMs(failed));
      }
    } finally {
      clearInterval(keepAlive);
    }
  };

  const loop = (async () => {
    for await (const m of messages) {
      const p = process1(m).finally(() => {
        inFlight.delete(p);
        release?.();
      });
      inFlight.add(p);
      while (inFlight.size >= opts.concurrency) await new Promise<void>((r) => { release = r; });
    }
  })();

  return {
    stop: async () => {
      // Stop pulling, finish what is in flight (each acks or naks), then leave.
      await messages.close();
      await loop.catch(() => undefined);
      await Promise.allSettled([...inFlight]);
    },
  };
}
