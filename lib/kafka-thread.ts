import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Logger } from './logger';

/**
 * A KafkaBatcher (lib/kafka-batcher.ts) in a worker thread, for a producer on a hot path: the
 * gateway's audit trail sends one record per request, and kafkajs's encoding, its promises and
 * the batcher's bookkeeping cost the event loop more than the rest of the audit entry. Here
 * the caller only serializes the record; records go to the thread every few milliseconds in
 * one message, and the thread batches, sends, retries and spools them exactly as the batcher
 * does in process (same guarantees: held in memory while Kafka is away, on disk after a
 * second of that, recovered from the spool file at the next start).
 *
 * The difference: `send` does not say when Kafka acknowledged the record (fire and forget,
 * which is how the audit trail sends), and records from the last POST_MS before a crash were
 * still in this thread. A thread that dies is started again, and it recovers the spool file.
 */

export type ProducerThreadOptions = {
  brokers: string[];
  clientId: string;
  /** The process's name and log level, for the thread's own logger. */
  service: string;
  logLevel: string;
  lingerMs?: number;
  maxBatch?: number;
  maxQueued?: number;
  spoolFile?: string;
};

/** Main thread → producer thread. */
export type ToProducer =
  | { type: 'records'; topics: string[]; keys: string[]; values: string[] }
  | { type: 'close'; ms: number };
/** Producer thread → main thread. */
export type FromProducer =
  | { type: 'stats'; queued: number; dropped: number }
  | { type: 'closed' };

const POST_MS = 10;
const POST_MAX = 1000;
/** A thread that died within this long of its start is started again only after it. */
const RESTART_MS = 1000;

export class KafkaProducerThread {
  private worker?: Worker;
  private restart?: NodeJS.Timeout;
  private topics: string[] = [];
  private keys: string[] = [];
  private values: string[] = [];
  private timer?: NodeJS.Timeout;
  private threadQueued = 0;
  private closing?: Promise<void>;
  private onClosed?: () => void;
  /** Dropped by the thread (its queue full while Kafka was away), as it last reported, and here. */
  private threadDropped = 0;
  /** What threads before the current one dropped (each counts from 0). */
  private earlierThreadsDropped = 0;
  private localDropped = 0;
  get dropped(): number { return this.earlierThreadsDropped + this.threadDropped + this.localDropped; }

  constructor(private readonly opts: ProducerThreadOptions, private readonly logger: Logger) {
    this.start();
  }

  private start(): void {
    // A new thread counts from 0: what the one before it dropped stays counted.
    this.earlierThreadsDropped += this.threadDropped;
    this.threadDropped = 0;
    // Compiled, this module is a .js file next to a .js worker. Under tsx (tests, make up) both
    // are .ts, and tsx does not hook a worker thread's loading: the thread registers it first.
    const ext = path.extname(__filename);
    const file = path.join(__dirname, `kafka-thread-worker${ext}`);
    const code = `${ext === '.ts' ? "require('tsx/cjs/api').register();" : ''}require(${JSON.stringify(file)});`;
    const worker = new Worker(code, { eval: true, workerData: this.opts });
    const started = Date.now();
    worker.on('message', (m: FromProducer) => {
      if (m.type === 'stats') {
        this.threadQueued = m.queued;
        this.threadDropped = m.dropped;
      } else if (m.type === 'closed') {
        this.onClosed?.();
      }
    });
    worker.on('error', (err) => this.logger.error({ err: err.message }, 'kafka producer thread failed'));
    worker.on('exit', (code) => {
      if (this.closing || worker !== this.worker) return;
      // Its queue was lost with it, but not what it had spooled: a new thread recovers the spool
      // file. Records sent meanwhile wait here (bounded like the thread's queue).
      this.worker = undefined;
      this.logger.error({ code, queued: this.threadQueued }, 'kafka producer thread exited; starting it again');
      this.threadQueued = 0;
      this.restart = setTimeout(() => { this.restart = undefined; this.start(); this.post(); }, Date.now() - started < RESTART_MS ? RESTART_MS : 0);
    });
    this.worker = worker;
  }

  /** Queues a record (its value serialized here, as JSON); it reaches the thread within POST_MS. */
  send(topic: string, key: string, value: unknown): void {
    if (this.closing) {
      // Nothing sends after the shutdown closed the thread; a straggler is counted, not thrown into a request.
      this.localDropped += 1;
      return;
    }
    this.topics.push(topic);
    this.keys.push(key);
    this.values.push(JSON.stringify(value));
    if (this.values.length > (this.opts.maxQueued ?? 100_000)) {
      // No thread to take them for a while: the oldest go first, as in the thread's own queue.
      this.topics.shift();
      this.keys.shift();
      this.values.shift();
      this.localDropped += 1;
    }
    if (this.values.length >= POST_MAX) this.post();
    else this.timer ??= setTimeout(() => this.post(), POST_MS);
  }

  /** Records not yet acknowledged by Kafka: here and in the thread (as of its last report, every 250 ms). */
  get queued(): number {
    return this.values.length + this.threadQueued;
  }

  private post(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (!this.values.length || !this.worker) return;
    const message: ToProducer = { type: 'records', topics: this.topics, keys: this.keys, values: this.values };
    this.worker.postMessage(message);
    this.threadQueued += this.values.length;
    this.topics = [];
    this.keys = [];
    this.values = [];
  }

  /** Hands over what is here, lets the thread flush (bounded by `ms`, spooling what it could not send), then ends it. */
  close(ms = 5000): Promise<void> {
    if (this.closing) return this.closing;
    clearTimeout(this.restart);
    if (!this.worker) this.start();
    this.post();
    const worker = this.worker!;
    this.closing = (async () => {
      const closed = new Promise<void>((resolve) => { this.onClosed = resolve; });
      worker.postMessage({ type: 'close', ms } satisfies ToProducer);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<void>((resolve) => { timer = setTimeout(resolve, ms + 2000); });
      await Promise.race([closed, late]);
      clearTimeout(timer);
      await worker.terminate();
    })();
    return this.closing;
  }
}
