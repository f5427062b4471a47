import { AckPolicy, DeliverPolicy, nanos, type JetStreamClient, type JetStreamManager, type JsMsg, type KV, type KvEntry } from 'nats';
import type { Logger } from './logger';
import { KV_BUCKETS, openBucket } from './nats';

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
   * Deliveries failing with an ordinary error before a message is dead-lettered, counted across
   * processes (`DeliveryLedger`). Only those count: not the retries while a dependency was away,
   * nor redeliveries after a crash (`maxLost` bounds those), which the server's delivery count
   * includes.
   */
  maxDeliver: number;
  /**
   * Deliveries that ended with no answer at all (the process died or hung holding the message)
   * before it is dead-lettered: a message that kills its consumer must not do so for ever.
   * Counted durably (`DeliveryLedger`), across processes and restarts. Default 5.
   */
  maxLost?: number;
  ackWaitMs?: number;
  /** The NATS KV bucket of `DeliveryLedger`; default KV_BUCKETS.deliveries (a test gives its own). */
  ledgerBucket?: string;
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
 * A count per message this process has worked on, by stream sequence: its ordinary failures, and
 * its answers that `DeliveryLedger` could not record, the stand-ins for the ledger when NATS KV
 * cannot be read or written. Bounded; the oldest entries go first.
 */
export class MessageCounts {
  private readonly counts = new Map<number, number>();
  constructor(private readonly max = 10_000) {}

  /** Counts one more for `seq`; returns its count. */
  add(seq: number): number {
    const n = (this.counts.get(seq) ?? 0) + 1;
    this.counts.delete(seq);
    this.counts.set(seq, n);
    if (this.counts.size > this.max) this.counts.delete(this.counts.keys().next().value!);
    return n;
  }

  get(seq: number): number {
    return this.counts.get(seq) ?? 0;
  }

  forget(seq: number): void {
    this.counts.delete(seq);
  }

  get size(): number {
    return this.counts.size;
  }
}

/** What the processes have answered to a message's deliveries, kept by `DeliveryLedger`. */
export type DeliveryRecord = { answered: number; failed: number };

/** An entry's record; none (or a purged one) is a message nobody has answered yet. */
const recordOf = (e: KvEntry | null): DeliveryRecord => (e && e.operation === 'PUT' && e.length ? (e.json() as DeliveryRecord) : { answered: 0, failed: 0 });

/**
 * Every nak a process sends, counted in NATS KV by stream, consumer and sequence, so that any
 * process can tell from a redelivery how many of the earlier deliveries ended without an answer:
 * the server's delivery count less the answered ones. Written only when a delivery fails or a
 * message comes back, never for a message handled the first time.
 */
export class DeliveryLedger {
  constructor(private readonly kv: KV, private readonly prefix: string) {}

  private key(seq: number) {
    return `${this.prefix}.${seq}`;
  }

  async read(seq: number): Promise<DeliveryRecord> {
    return recordOf(await this.kv.get(this.key(seq)));
  }

  /** Adds one answered delivery (and a failure, if it failed); returns the record as written. */
  async answered(seq: number, failed: boolean): Promise<DeliveryRecord> {
    const kv = this.kv;
    const key = this.key(seq);
    for (let attempt = 1; ; attempt++) {
      const e = await kv.get(key);
      const before = recordOf(e);
      const after = { answered: before.answered + 1, failed: before.failed + (failed ? 1 : 0) };
      try {
        if (e) await kv.update(key, JSON.stringify(after), e.revision);
        else await kv.create(key, JSON.stringify(after));
        return after;
      } catch (err) {
        // Another process wrote in between (a stale redelivery): read again.
        if (attempt >= 3) throw err;
      }
    }
  }

  async forget(seq: number): Promise<void> {
    await this.kv.purge(this.key(seq));
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
  // The ledger's record of a message is the truth; this process's own counts stand in when
  // NATS KV cannot be read or written (the count may then start again elsewhere: more retries,
  // never fewer). Not the server's delivery count, which also grows with every outage retry.
  const failures = new MessageCounts();
  // Answers this process gave that the ledger did not record: not deliveries nobody answered.
  const unrecorded = new MessageCounts();
  // While ledger writes fail, other processes' answers go unrecorded too, and this one cannot
  // count them: no message is taken for one that kills its consumer until writes work again.
  let ledgerFailingUntil = 0;
  const ledger = new DeliveryLedger(await openBucket(opts.js, KV_BUCKETS.deliveries, { name: opts.ledgerBucket }), `${opts.stream}.${opts.durable}`);
  const maxLost = opts.maxLost ?? 5;
  let release: (() => void) | undefined;

  /** Counts a nak in the ledger (and here); returns how many ordinary failures the message has had. */
  const answer = async (seq: number, failed: boolean): Promise<number> => {
    const local = failed ? failures.add(seq) : 0;
    try {
      return (await ledger.answered(seq, failed)).failed;
    } catch (err) {
      opts.logger.warn({ err: (err as Error).message, seq }, 'delivery ledger not written; counting in this process only');
      unrecorded.add(seq);
      ledgerFailingUntil = Date.now() + 60_000;
      return local;
    }
  };
  const forget = (seq: number, retried: boolean) => {
    failures.forget(seq);
    unrecorded.forget(seq);
    if (retried) void ledger.forget(seq).catch(() => undefined); // the key's TTL ends it otherwise
  };

  const deadLetter = async (m: JsMsg, reason: string, failed: number) => {
    try {
      await opts.deadLetter(m, reason);
      forget(m.info.streamSequence, true);
      m.term(reason);
    } catch (dlqErr) {
      opts.logger.error({ err: dlqErr }, 'dead-lettering failed; will retry');
      await answer(m.info.streamSequence, false);
      m.nak(nakDelayMs(failed));
    }
  };

  const process1 = async (m: JsMsg) => {
    const deliveries = m.info.deliveryCount;
    const seq = m.info.streamSequence;
    if (deliveries > 1) {
      opts.onRedelivery?.(m);
      // Deliveries no process answered: it died or hung holding the message. One that keeps
      // killing its consumer is dead-lettered without being handled again.
      const record = Date.now() < ledgerFailingUntil ? undefined : await ledger.read(seq).catch(() => undefined);
      const lost = record ? deliveries - 1 - record.answered - unrecorded.get(seq) : 0;
      // Only a ledger that takes writes now is believed: one that refuses them has missed other
      // processes' answers as well (this one's own are counted above).
      if (lost >= maxLost && await ledger.answered(seq, false).then(() => true, () => { ledgerFailingUntil = Date.now() + 60_000; return false; })) {
        await deadLetter(m, `delivered ${deliveries} times and ${lost} of them never answered: its consumer died or hung each time`, record!.failed);
        return;
      }
    }
    // Keep the message ours while slow work runs (e.g. Temporal briefly away).
    const keepAlive = setInterval(() => m.working(), Math.max(ackWait / 3, 1000));
    try {
      await opts.handle(m);
      // A lost ack means a redelivery, which the handler absorbs; the record stays for it, or
      // its earlier answered deliveries would count as lost.
      await m.ackAck().then(() => forget(seq, deliveries > 1), () => undefined);
    } catch (err) {
      const poison = err instanceof PoisonMessageError;
      if (err instanceof DependencyUnavailableError) {
        opts.logger.warn({ err: err.message, deliveries, subject: m.subject }, 'dependency unavailable; will retry');
        await answer(seq, false);
        m.nak(nakDelayMs(deliveries, OUTAGE_RETRY_CAP_MS));
        return;
      }
      if (poison) {
        await deadLetter(m, (err as Error).message, 0);
        return;
      }
      const failed = await answer(seq, true);
      if (failed >= opts.maxDeliver) {
        await deadLetter(m, `gave up after ${failed} failed deliveries: ${(err as Error).message}`, failed);
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
