import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import type { Registry } from 'prom-client';
import { TOPICS } from '../lib/kafka';
import type { Logger } from '../lib/logger';
import { prom } from '../lib/metrics';
import { asPlatform } from '../lib/postgres';

/**
 * The response pipeline's record of every request: one entry on Kafka `api.audit-trail`
 * (keyed by tenant, so a tenant's entries stay in order on one partition), sent in batches
 * off the request path and held in memory while Kafka is down; and the `api_calls` table,
 * which keeps every error and a sample of successes, written in batches.
 */

export type RequestRecord = {
  at: string;
  request_id: string;
  /** The request's trace (W3C trace id): the same one in every process the request reaches. */
  trace_id?: string;
  tenant?: string;
  consumer?: string;
  user?: string;
  auth_method?: string;
  method: string;
  /** The route pattern (bounded), never the raw path with ids in it. */
  route?: string;
  path: string;
  status: number;
  latency_ms: number;
  client_ip: string;
  upstream?: string;
  error_code?: string;
  rate_limited?: boolean;
  /** Masked and truncated; only on errors, and only in api_calls. */
  request_body?: string;
  response_body?: string;
};

const API_CALLS_BATCH = 500;
const API_CALLS_COLUMNS = ['at', 'workspace_id', 'method', 'path', 'status', 'latency_ms', 'request_id', 'consumer', 'route', 'upstream', 'client_ip', 'error_code', 'request_body', 'response_body'] as const;

/** PostgreSQL text cannot hold NUL: a body that carries one keeps a visible stand-in instead. */
const pgText = (s: string | undefined): string | null => (s === undefined ? null : s.includes('\0') ? s.replaceAll('\0', '\uFFFD') : s);

/** A PostgreSQL data error (SQLSTATE class 22: bad encoding, value out of range…): that row can never be written. */
const isDataError = (err: unknown): boolean => /^22/.test(String((err as { code?: unknown }).code ?? ''));

/** Where audit entries go: lib/kafka-thread.ts in the gateway, or a KafkaBatcher. Fire and forget. */
export type AuditProducer = { send(topic: string, key: string, value: unknown): unknown; readonly queued: number; readonly dropped?: number };

export class RequestAudit {
  private rows: RequestRecord[] = [];
  private timer: NodeJS.Timeout;
  private writing?: Promise<void>;
  private readonly recorded: prom.Counter;
  private readonly apiCallsDropped: prom.Counter;

  constructor(private readonly opts: {
    kafka?: AuditProducer; pool?: Pool; logger: Logger; registry: Registry; successSample: number; flushMs?: number; maxRows?: number;
  }) {
    this.recorded = new prom.Counter({ name: 'gateway_audit_records_total', help: 'Request audit entries handed to Kafka', registers: [opts.registry] });
    this.apiCallsDropped = new prom.Counter({ name: 'gateway_api_calls_dropped_total', help: 'api_calls rows dropped: PostgreSQL away too long, or a row it refuses', registers: [opts.registry] });
    new prom.Gauge({
      name: 'gateway_audit_queued', help: 'Audit entries waiting for Kafka', registers: [opts.registry],
      collect() { this.set(opts.kafka?.queued ?? 0); },
    });
    let droppedSeen = 0;
    new prom.Counter({
      name: 'gateway_audit_dropped_total', help: 'Audit entries lost before Kafka had them (a spool file not written or not read back)', registers: [opts.registry],
      collect() {
        const now = opts.kafka?.dropped ?? 0;
        if (now > droppedSeen) this.inc(now - droppedSeen);
        droppedSeen = Math.max(droppedSeen, now);
      },
    });
    this.timer = setInterval(() => void this.flushRows(), opts.flushMs ?? 1000);
    this.timer.unref();
  }

  record(r: RequestRecord): void {
    if (this.opts.kafka) {
      const { request_body: _req, response_body: _res, ...entry } = r;
      // audit_id: the entry's own id, for consumers to drop a repeat (delivery is at least once);
      // request_id is the client's X-Request-ID when it sent one, and a client may reuse it.
      this.opts.kafka.send(TOPICS.auditTrail, r.tenant ?? '_platform', { type: 'api.request', audit_id: randomUUID(), ...entry });
      this.recorded.inc();
    }
    if (this.opts.pool && (r.status >= 400 || Math.random() < this.opts.successSample)) {
      if (this.rows.length >= (this.opts.maxRows ?? 50_000)) {
        this.rows.shift();
        this.apiCallsDropped.inc();
      }
      this.rows.push(r);
    }
  }

  private flushRows(): Promise<void> {
    this.writing ??= this.writeRows().finally(() => { this.writing = undefined; });
    return this.writing;
  }

  private async writeRows(): Promise<void> {
    while (this.rows.length) {
      const batch = this.rows.slice(0, API_CALLS_BATCH);
      try {
        await this.insert(batch);
        this.rows.splice(0, batch.length);
      } catch (err) {
        // One row PostgreSQL refuses must not hold back every row after it: write them one by one.
        if (isDataError(err) && await this.insertEach(batch)) continue;
        // PostgreSQL away: the rows wait (bounded) for the next pass; the Kafka trail has every request meanwhile.
        this.opts.logger.warn({ err: (err as Error).message, waiting: this.rows.length }, 'api_calls not written; retrying');
        return;
      }
    }
  }

  private insert(batch: RequestRecord[]): Promise<unknown> {
    const cols = API_CALLS_COLUMNS;
    const values: unknown[] = [];
    const tuples = batch.map((r, i) => {
      values.push(r.at, r.tenant ?? null, r.method, pgText(r.path), r.status, r.latency_ms, r.request_id, r.consumer ?? null, r.route ?? null,
        r.upstream ?? null, r.client_ip, r.error_code ?? null, pgText(r.request_body), pgText(r.response_body));
      return `(${cols.map((_, j) => `$${i * cols.length + j + 1}`).join(', ')})`;
    });
    return asPlatform(this.opts.pool!, (db) => db.query(`INSERT INTO api_calls (${cols.join(', ')}) VALUES ${tuples.join(', ')}`, values));
  }

  /**
   * Each row on its own; a row PostgreSQL refuses as data is dropped (counted and logged), not
   * retried forever. False when PostgreSQL went away meanwhile: the rest waits for the next pass.
   */
  private async insertEach(batch: RequestRecord[]): Promise<boolean> {
    for (const r of batch) {
      try {
        await this.insert([r]);
      } catch (err) {
        if (!isDataError(err)) return false;
        this.apiCallsDropped.inc();
        this.opts.logger.warn({ err: (err as Error).message, request_id: r.request_id }, 'api_calls row refused by PostgreSQL; dropped');
      }
      const i = this.rows.indexOf(r);
      if (i >= 0) this.rows.splice(i, 1);
    }
    return true;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.flushRows();
  }
}
