import type { Kafka, Message, Producer } from 'kafkajs';
import type { Logger } from './logger';

type Pending = { topic: string; message: Message; done: () => void };

/**
 * Sends records to Kafka in small batches (one linger interval at a time). `send` resolves when
 * Kafka acknowledged the record, so a caller that must not lose it can wait; a caller on a hot
 * path waits with a bound (`sendWithin`). While Kafka is down records stay queued in memory (up
 * to `maxQueued`, oldest dropped and counted) and are retried every interval.
 */
export class KafkaBatcher {
  private queue: Pending[] = [];
  private producer?: Producer;
  private timer?: NodeJS.Timeout;
  private flushing?: Promise<void>;
  private closed = false;
  dropped = 0;

  constructor(
    private readonly kafka: Kafka,
    private readonly logger: Logger,
    private readonly opts: { lingerMs?: number; maxBatch?: number; maxQueued?: number } = {},
  ) {}

  send(topic: string, key: string, value: unknown, headers?: Record<string, string>): Promise<void> {
    return new Promise((resolve) => {
      if (this.queue.length >= (this.opts.maxQueued ?? 100_000)) {
        this.queue.shift()?.done();
        this.dropped += 1;
      }
      this.queue.push({ topic, message: { key, value: JSON.stringify(value), headers }, done: resolve });
      this.schedule();
    });
  }

  /** Sends, waiting at most `ms` for the acknowledgement; the record stays queued after that. */
  async sendWithin(ms: number, topic: string, key: string, value: unknown): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((r) => { timer = setTimeout(() => r(false), ms); });
    try {
      return await Promise.race([this.send(topic, key, value).then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Records not yet acknowledged by Kafka: waiting, and in the batch being sent. */
  get queued(): number {
    return this.queue.length + this.inFlight;
  }

  private inFlight = 0;

  /** One flush at a time, in order: a record sent during a flush waits for the next one, which the flush schedules. */
  private schedule(delay = this.opts.lingerMs ?? 10): void {
    if (this.timer || this.flushing || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flush().finally(() => {
        this.flushing = undefined;
        if (this.queue.length) this.schedule(this.lastFailed ? 1000 : undefined);
      });
    }, delay);
  }

  private lastFailed = false;

  private async flush(): Promise<void> {
    const batch = this.queue.splice(0, this.opts.maxBatch ?? 500);
    if (!batch.length) return;
    this.inFlight = batch.length;
    const byTopic = new Map<string, Message[]>();
    for (const p of batch) byTopic.set(p.topic, [...(byTopic.get(p.topic) ?? []), p.message]);
    try {
      this.producer ??= await this.connect();
      await this.producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })) });
      this.lastFailed = false;
      for (const p of batch) p.done();
    } catch (err) {
      if (!this.lastFailed) this.logger.warn({ err: (err as Error).message, queued: this.queue.length + batch.length }, 'kafka unavailable; records stay queued');
      this.lastFailed = true;
      const p = this.producer;
      this.producer = undefined;
      await p?.disconnect().catch(() => undefined);
      this.queue.unshift(...batch);
    } finally {
      this.inFlight = 0;
    }
  }

  private async connect(): Promise<Producer> {
    const p = this.kafka.producer({ allowAutoTopicCreation: false });
    await p.connect();
    return p;
  }

  /** Flushes what is queued (bounded by `ms`), then disconnects. */
  async close(ms = 5000): Promise<void> {
    const deadline = Date.now() + ms;
    clearTimeout(this.timer);
    this.timer = undefined;
    while (Date.now() < deadline) {
      await this.flushing;
      if (!this.queue.length) break;
      await this.flush();
      if (this.lastFailed) await new Promise((r) => setTimeout(r, 200));
    }
    this.closed = true;
    if (this.queue.length) this.logger.error({ lost: this.queue.length }, 'kafka records not sent at shutdown');
    await this.producer?.disconnect().catch(() => undefined);
  }
}
