import { appendFileSync, existsSync, readFileSync, statSync } from 'node:fs';
import { appendFile, open, unlink } from 'node:fs/promises';
import type { Kafka, Message } from 'kafkajs';
import type { Logger } from './logger';

/** `done(true)` once Kafka acknowledged the record, `done(false)` if it was dropped or left unsent at close. */
type Pending = { topic: string; message: Message; done: (acked: boolean) => void; at: number };

/** A connected producer as the batcher uses it: one acknowledged (acks=all) send of a batch, and a close. */
export type BatchTransport = {
  send(topicMessages: { topic: string; messages: Message[] }[]): Promise<void>;
  close(): Promise<void>;
};

/** Connects a transport; called again after a failed send closed the last one. */
export type TransportFactory = () => Promise<BatchTransport>;

/** kafkajs's producer as a transport (every process but the gateway's producer thread). */
export function kafkajsTransport(kafka: Kafka): TransportFactory {
  return async () => {
    const producer = kafka.producer({ allowAutoTopicCreation: false });
    await producer.connect();
    return {
      send: async (topicMessages) => { await producer.sendBatch({ acks: -1, topicMessages }); },
      close: () => producer.disconnect(),
    };
  };
}

/**
 * Sends records to Kafka in small batches (one linger interval at a time). `send` resolves when
 * Kafka acknowledged the record, so a caller that must not lose it can wait; a caller on a hot
 * path waits with a bound (`sendWithin`). While Kafka is down records stay queued in memory (up
 * to `maxQueued`; without a spool file the oldest are then dropped and counted) and are retried
 * every interval.
 *
 * With a `spoolFile`, records also survive the process dying while Kafka is away: once a record
 * has waited a second (or a send failed), every queued record is appended to the file (within
 * 100 ms), and `recover()` at the next start queues the file's records again. Spooling ends (the
 * file is removed) once a send is acknowledged and Kafka keeps up again: nothing recovered is
 * left, and the oldest record waiting is younger than a second, as before the spell began.
 * Past `maxQueued`, records are kept in the spool file only, and read back from it in order as
 * the queue drains (and at the next start): an outage longer than the memory bound loses none. Under
 * steady traffic the queue is never quite empty, so "until the queue is empty" would never come.
 * That is at least once: a record acknowledged just before a crash may be sent twice, so
 * consumers deduplicate by the id inside it (the audit trail's `audit_id`).
 */
export class KafkaBatcher {
  private queue: Pending[] = [];
  private producer?: BatchTransport;
  private readonly connect: TransportFactory;
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private closed = false;
  dropped = 0;

  constructor(
    kafka: Kafka | TransportFactory,
    private readonly logger: Logger,
    private readonly opts: { lingerMs?: number; maxBatch?: number; maxQueued?: number; spoolFile?: string } = {},
  ) {
    this.connect = typeof kafka === 'function' ? kafka : kafkajsTransport(kafka);
    if (opts.spoolFile && existsSync(opts.spoolFile)) this.spoolBytes = statSync(opts.spoolFile).size;
  }

  private spooling = false;
  private spoolLines: string[] = [];
  /** Bytes of spoolLines, not yet handed to the file. */
  private spoolPendingBytes = 0;
  /** Bytes handed to the spool file (written, or on their way in spoolChain): where the next write starts. */
  private spoolBytes = 0;
  /**
   * While set, the newest records are in the spool file only, from byte `offset` on (`count` of
   * them): the queue was full. They are read back in order as it drains.
   */
  private overflow?: { offset: number; count: number };
  private refilling?: Promise<void>;
  private spoolTimer?: NodeJS.Timeout;
  /** Every file operation, in order: appends never race the unlink that ends a spell of spooling. */
  private spoolChain: Promise<void> = Promise.resolve();

  /**
   * Queues again what a previous process left in the spool file: up to `maxQueued` records, and
   * the rest is read back from the file as the queue drains. Returns how many records it holds.
   */
  recover(): number {
    const file = this.opts.spoolFile;
    if (!file || !existsSync(file)) return 0;
    // Read as bytes and split here: a spool of more than 512 MB is more than one string can hold.
    const bytes = readFileSync(file);
    const max = this.opts.maxQueued ?? 100_000;
    const records: Pending[] = [];
    let rest = 0;
    let restOffset = -1;
    for (let start = 0; start < bytes.length;) {
      let end = bytes.indexOf(10, start);
      if (end === -1) end = bytes.length;
      const record = end > start ? parseSpoolLine(bytes.toString('utf8', start, end)) : undefined; // the last line may have been cut by the crash
      if (record && records.length < max) records.push(record);
      else if (record) {
        if (restOffset === -1) restOffset = start;
        rest += 1;
      }
      start = end + 1;
    }
    // A line the crash cut short is ended, so the next append starts a line of its own.
    if (bytes.length && bytes[bytes.length - 1] !== 10) appendFileSync(file, '\n', { mode: 0o600 });
    this.spoolBytes = statSync(file).size;
    this.queue.push(...records);
    if (rest) this.overflow = { offset: restOffset, count: rest };
    // The file stays until all of it is acknowledged: a second crash before that loses nothing either.
    this.spooling = true;
    if (records.length) this.schedule();
    else this.stopSpooling();
    return records.length + rest;
  }

  private spoolLine(p: Pending): string {
    return `${JSON.stringify({ t: p.topic, k: p.message.key, v: p.message.value, h: p.message.headers })}\n`;
  }

  private spoolWrite(data: string): void {
    const file = this.opts.spoolFile!;
    this.spoolBytes += Buffer.byteLength(data);
    this.spoolChain = this.spoolChain.then(() => appendFile(file, data, { mode: 0o600 })).catch((err: Error) => {
      this.logger.error({ err: err.message, file }, 'kafka spool not written');
    });
  }

  private startSpooling(): void {
    if (!this.opts.spoolFile || this.spooling) return;
    this.spooling = true;
    this.spoolWrite([...this.inFlightBatch, ...this.queue].map((p) => this.spoolLine(p)).join(''));
    this.logger.warn({ file: this.opts.spoolFile, queued: this.queue.length }, 'kafka unavailable; queued records spooled to disk too');
  }

  private stopSpooling(): void {
    // Records in the file only are still to be read back from it.
    if (!this.spooling || this.overflow) return;
    this.spooling = false;
    this.spoolLines = [];
    this.spoolPendingBytes = 0;
    this.spoolBytes = 0; // the unlink comes first in spoolChain: the next spell writes a new file
    clearTimeout(this.spoolTimer);
    this.spoolTimer = undefined;
    const file = this.opts.spoolFile!;
    this.spoolChain = this.spoolChain.then(() => unlink(file)).catch(() => undefined);
  }

  /**
   * Queues a record; resolves `true` once Kafka acknowledged it, `false` if it never will be from
   * this process: dropped as the oldest of a full queue, or still unsent when `close()` ended
   * (then it is in the spool, if there is one). Never rejects.
   */
  send(topic: string, key: string, value: unknown, headers?: Record<string, string>): Promise<boolean> {
    return this.sendJson(topic, key, JSON.stringify(value), headers);
  }

  /** send() for a value already serialized as JSON (the producer thread's records come so). */
  sendJson(topic: string, key: string, json: string, headers?: Record<string, string>): Promise<boolean> {
    return new Promise((resolve) => {
      const pending = { topic, message: { key, value: json, headers }, done: resolve, at: Date.now() };
      const full = this.queue.length >= (this.opts.maxQueued ?? 100_000);
      if (this.opts.spoolFile && !this.closed && (full || this.overflow)) {
        // The queue is full: the record goes to the spool file only, after every record already
        // there, and is read back from it in its turn. Not acknowledged by then: false.
        this.startSpooling();
        this.overflow ??= { offset: this.spoolBytes + this.spoolPendingBytes, count: 0 };
        this.overflow.count += 1;
        this.spoolAppend(this.spoolLine(pending));
        resolve(false);
        this.schedule();
        return;
      }
      if (full) {
        this.queue.shift()?.done(false);
        this.dropped += 1;
      }
      this.queue.push(pending);
      if (this.opts.spoolFile && !this.spooling) this.armSpoolCheck();
      if (this.spooling) this.spoolAppend(this.spoolLine(pending));
      this.schedule();
    });
  }

  /** Appends a line to the spool within 100 ms (lines are written together). */
  private spoolAppend(line: string): void {
    this.spoolLines.push(line);
    this.spoolPendingBytes += Buffer.byteLength(line);
    this.spoolTimer ??= setTimeout(() => this.spoolFlushLines(), 100);
  }

  private spoolFlushLines(): void {
    clearTimeout(this.spoolTimer);
    this.spoolTimer = undefined;
    if (!this.spoolLines.length) return;
    const data = this.spoolLines.join('');
    this.spoolLines = [];
    this.spoolPendingBytes = 0;
    this.spoolWrite(data);
  }

  /**
   * Reads records kept in the spool file only back into the queue, oldest first, up to the room
   * the queue has; once none is left, new records go to the queue again.
   */
  private async refill(): Promise<void> {
    const o = this.overflow!;
    const room = (this.opts.maxQueued ?? 100_000) - this.queue.length;
    if (room <= 0) return;
    this.spoolFlushLines();
    await this.spoolChain;
    let fh;
    try {
      fh = await open(this.opts.spoolFile!, 'r');
      const buf = Buffer.alloc(REFILL_BYTES);
      const { bytesRead } = await fh.read(buf, 0, buf.length, o.offset);
      if (bytesRead === 0) throw new Error(`the spool file ends before the ${o.count} record(s) written to it`);
      let start = 0;
      let read = 0;
      for (let end = buf.indexOf(10); end !== -1 && end < bytesRead && read < room; end = buf.indexOf(10, start)) {
        const record = parseSpoolLine(buf.toString('utf8', start, end));
        if (record) {
          this.queue.push(record);
          read += 1;
        }
        start = end + 1;
      }
      // A line longer than the buffer cannot be read back: skipped, counted as dropped.
      if (start === 0 && bytesRead === buf.length) {
        start = bytesRead;
        this.dropped += 1;
        o.count -= 1;
      }
      o.offset += start;
      o.count = Math.max(0, o.count - read);
    } catch (err) {
      this.logger.error({ err: (err as Error).message, lost: o.count }, 'kafka spool not read back');
      this.dropped += o.count;
      o.count = 0;
      o.offset = this.spoolBytes;
    } finally {
      await fh?.close();
    }
    if (o.offset >= this.spoolBytes && !this.spoolLines.length) this.overflow = undefined;
  }

  /** Sends, waiting at most `ms` for the acknowledgement (true); the record stays queued after that. */
  async sendWithin(ms: number, topic: string, key: string, value: unknown): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms); });
    try {
      return await Promise.race([this.send(topic, key, value), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Records not yet acknowledged by Kafka: waiting, and in the batch being sent. */
  get queued(): number {
    return this.queue.length + this.inFlightBatch.length + (this.overflow?.count ?? 0);
  }

  private inFlightBatch: Pending[] = [];
  private spoolCheck?: NodeJS.Timeout;

  /** A record unacknowledged after a second means Kafka is slow or away: from then on the queue is on disk too. */
  private armSpoolCheck(): void {
    this.spoolCheck ??= setTimeout(() => {
      this.spoolCheck = undefined;
      const oldest = this.inFlightBatch[0] ?? this.queue[0];
      if (!oldest || this.spooling) return;
      if (Date.now() - oldest.at >= 1000) this.startSpooling();
      else this.armSpoolCheck();
    }, 1000);
    this.spoolCheck.unref();
  }

  /** One flush at a time, in order: a record sent during a flush waits for the next one, which the flush schedules. */
  private schedule(delay = this.opts.lingerMs ?? 10): void {
    if (this.timer || this.flushing || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flush().finally(() => {
        this.flushing = undefined;
        if (this.queue.length || this.overflow) this.schedule(this.lastFailed ? 1000 : undefined);
      });
    }, delay);
  }

  private lastFailed = false;

  private async flush(): Promise<void> {
    // Records kept in the file only come back once half the queue is free.
    // One read-back at a time: two flushes (close() beside a timer's) must not read one offset twice.
    if (this.overflow && this.queue.length <= (this.opts.maxQueued ?? 100_000) / 2) {
      await (this.refilling ??= this.refill().finally(() => { this.refilling = undefined; }));
    }
    const batch = this.queue.splice(0, this.opts.maxBatch ?? 500);
    if (!batch.length) return;
    this.inFlightBatch = batch;
    const byTopic = new Map<string, Message[]>();
    for (const p of batch) {
      const list = byTopic.get(p.topic);
      if (list) list.push(p.message);
      else byTopic.set(p.topic, [p.message]);
    }
    try {
      if (!this.producer) {
        const connected = await this.connect();
        // close() gave up on this flush while it connected: the batch is spooled or reported lost
        // already, and nobody would close this connection.
        if (this.closed) {
          await connected.close().catch(() => undefined);
          return;
        }
        this.producer = connected;
      }
      await this.producer.send([...byTopic].map(([topic, messages]) => ({ topic, messages })));
      this.lastFailed = false;
      for (const p of batch) p.done(true);
      if (this.queue.length === 0 || Date.now() - this.queue[0]!.at < 1000) this.stopSpooling();
    } catch (err) {
      if (!this.lastFailed) this.logger.warn({ err: (err as Error).message, queued: this.queue.length + batch.length }, 'kafka unavailable; records stay queued');
      this.lastFailed = true;
      const p = this.producer;
      this.producer = undefined;
      await p?.close().catch(() => undefined);
      this.inFlightBatch = [];
      this.queue.unshift(...batch);
      this.startSpooling();
    } finally {
      this.inFlightBatch = [];
    }
  }

  /**
   * Flushes what is queued, then disconnects. Bounded by `ms`, the in-flight send included: a
   * send still retrying its connection at the deadline is left behind, and its batch is kept
   * with the queue (spooled, or reported lost).
   */
  async close(ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (Date.now() < deadline) {
      if (!(await this.within(this.flushing, deadline))) break;
      if (!this.queue.length && !this.overflow) break;
      this.flushing = this.flush();
      if (!(await this.within(this.flushing, deadline))) break;
      if (this.lastFailed) await this.within(new Promise((r) => setTimeout(r, 200)), deadline);
    }
    this.closed = true;
    // A batch whose send did not end by the deadline counts as unsent: it is spooled with the queue.
    const unsent = [...this.inFlightBatch, ...this.queue];
    if (this.inFlightBatch.length) {
      this.queue = unsent;
      this.inFlightBatch = [];
    }
    if (this.queue.length && this.opts.spoolFile) {
      // Everything still queued is on disk before the process ends; the next start sends it.
      this.startSpooling();
      this.spoolFlushLines();
      this.logger.warn({ spooled: this.queue.length, file: this.opts.spoolFile }, 'kafka records kept in the spool for the next start');
    } else if (this.queue.length) {
      this.logger.error({ lost: this.queue.length }, 'kafka records not sent at shutdown');
    }
    for (const p of unsent) p.done(false);
    await this.spoolChain;
    await this.within(this.producer?.close().catch(() => undefined), deadline + 1000);
  }

  /** Waits for `p` until `deadline`; true if it settled by then. */
  private async within(p: Promise<unknown> | undefined, deadline: number): Promise<boolean> {
    if (!p) return true;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<false>((r) => { timer = setTimeout(() => r(false), Math.max(deadline - Date.now(), 0)); });
    try {
      return await Promise.race([p.then(() => true, () => true), late]);
    } finally {
      clearTimeout(timer);
    }
  }
}

/** How much of the spool file one read-back takes at most. */
const REFILL_BYTES = 4 * 1024 * 1024;

/** A spool file's line as a queued record, or undefined for a line that is not one (cut by a crash). */
function parseSpoolLine(line: string): Pending | undefined {
  try {
    const r = JSON.parse(line) as { t: string; k: string; v: string; h?: Record<string, string> };
    // at 0: a record read back counts as old, so spooling lasts until it is acknowledged.
    return { topic: r.t, message: { key: r.k, value: r.v, headers: r.h }, done: () => undefined, at: 0 };
  } catch {
    return undefined;
  }
}
