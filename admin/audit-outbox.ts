import type { Kafka, Producer } from 'kafkajs';
import type { Pool } from 'pg';
import type { Logger } from '../lib/logger';
import { TOPICS } from '../lib/kafka';
import { asPlatform } from '../lib/postgres';

/**
 * Sends audit rows to Kafka from the transactional outbox (audit_outbox, filled by a trigger
 * in the audit row's own transaction). A batch is removed from the outbox only after Kafka
 * acknowledged it, so while Kafka is down records wait in PostgreSQL and none is lost; a crash
 * between the send and the delete sends a batch twice (consumers dedupe on the audit id).
 * Every row goes to api.audit-trail; config changes also to api.config-changes. Keyed by tenant.
 */
export class AuditOutbox {
  private producer?: Producer;
  private timer?: NodeJS.Timeout;
  private running?: Promise<void>;
  private stopped = false;
  /** Rows waiting in the outbox at the last pass (a gauge for tests and metrics). */
  backlog = 0;

  constructor(private readonly pool: Pool, private readonly kafka: Kafka, private readonly logger: Logger, private readonly intervalMs = 500) {}

  start(): void {
    const tick = () => {
      if (this.stopped) return;
      this.running = this.drain()
        .then(() => undefined)
        .catch((err: unknown) => this.logger.warn({ err }, 'audit outbox: a pass failed (Kafka or PostgreSQL unavailable); records stay in the outbox'))
        .finally(() => { if (!this.stopped) this.timer = setTimeout(tick, this.intervalMs); });
    };
    tick();
  }

  /** Sends everything waiting, batch by batch; throws if Kafka refuses (the batch stays). */
  async drain(batch = 200): Promise<number> {
    let sent = 0;
    for (;;) {
      const n = await asPlatform(this.pool, async (db) => {
        const rows = (await db.query(
          `SELECT a.* FROM audit_outbox o JOIN audit_logs a ON a.id = o.audit_id
            ORDER BY o.audit_id LIMIT $1 FOR UPDATE OF o SKIP LOCKED`, [batch],
        )).rows as { id: string; workspace_id: string | null; config_version: string | null }[];
        this.backlog = rows.length;
        if (!rows.length) return 0;
        const producer = await this.connected();
        const message = (r: (typeof rows)[number]) => ({ key: r.workspace_id ?? '_platform', value: JSON.stringify(r), headers: { 'audit-id': String(r.id) } });
        const send = (batchRows: typeof rows, as = message) => producer.sendBatch({
          acks: -1,
          topicMessages: [
            { topic: TOPICS.auditTrail, messages: batchRows.map(as) },
            { topic: TOPICS.configChanges, messages: batchRows.filter((r) => r.config_version !== null).map(as) },
          ].filter((t) => t.messages.length),
        });
        try {
          await send(rows).catch(async (err: unknown) => {
            if (!tooLarge(err)) throw err;
            // Past the broker's record size (a route with a large static body, twice in one row):
            // one row at a time, and a row too large alone goes as a stand-in naming its size
            // (the whole row stays in audit_logs): one row must not hold back every later one.
            for (const r of rows) {
              await send([r]).catch(async (one: unknown) => {
                if (!tooLarge(one)) throw one;
                const bytes = Buffer.byteLength(message(r).value);
                this.logger.warn({ audit_id: r.id, bytes }, 'audit outbox: a row too large for Kafka is sent without its before and after');
                await send([r], (x) => message({ ...x, before: null, after: null, truncated: { bytes } } as typeof x));
              });
            }
          });
        } catch (err) {
          // Start over with a fresh connection next time; the rows stay in the outbox.
          this.producer = undefined;
          await producer.disconnect().catch(() => undefined);
          throw err;
        }
        await db.query('DELETE FROM audit_outbox WHERE audit_id = ANY($1::bigint[])', [rows.map((r) => r.id)]);
        return rows.length;
      });
      sent += n;
      if (n < batch) return sent;
    }
  }

  private async connected(): Promise<Producer> {
    if (!this.producer) {
      const p = this.kafka.producer({ allowAutoTopicCreation: false });
      try {
        await p.connect();
      } catch (err) {
        await p.disconnect().catch(() => undefined);
        throw err;
      }
      p.on(p.events.DISCONNECT, () => { if (this.producer === p) this.producer = undefined; });
      this.producer = p;
    }
    return this.producer;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
    await this.producer?.disconnect().catch(() => undefined);
  }
}

/** Kafka refused a record as larger than the broker or topic takes. */
const tooLarge = (err: unknown): boolean => {
  const e = err as { type?: string; message?: string; errors?: unknown[] };
  return e.type === 'MESSAGE_TOO_LARGE' || e.type === 'RECORD_LIST_TOO_LARGE' || /too large/i.test(e.message ?? '') || (Array.isArray(e.errors) && e.errors.some(tooLarge));
};
