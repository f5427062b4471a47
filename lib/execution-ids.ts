import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Execution ids are `fgx_<body>_<mac>`. The body is random, or derived from the tenant and
 * its Idempotency-Key (and, for a client's key, the request's fingerprint: a key reused with
 * another body once the gateway has forgotten it, after 24 hours, names a new execution rather
 * than the old one); the mac binds the id to its tenant. Only the gateway can mint one, so
 * the status API can answer ACCEPTED for an id that Temporal does not know yet (the trigger is
 * durable in JetStream, not started) and 404 for anything else. The id is the workflow id.
 */
const PREFIX = 'fgx_';
const ID_PATTERN = /^fgx_([A-Za-z0-9_-]{22})_([A-Za-z0-9_-]{16})$/;
const CURSOR_PATTERN = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]{22})$/;

export class ExecutionIds {
  constructor(private readonly secret: string) {}

  private mac(tenant: string, body: string): string {
    return createHmac('sha256', this.secret).update(`id|${tenant}|${body}`).digest('base64url').slice(0, 16);
  }

  /** A fresh id, or with a key the same id for the same tenant, key and fingerprint, always. */
  mint(tenant: string, idempotencyKey?: string, fingerprint?: string): string {
    const derivedFrom = `idem|${tenant}|${idempotencyKey}${fingerprint === undefined ? '' : `|${fingerprint}`}`;
    const body = idempotencyKey === undefined
      ? randomBytes(16).toString('base64url')
      : createHmac('sha256', this.secret).update(derivedFrom).digest('base64url').slice(0, 22);
    return `${PREFIX}${body}_${this.mac(tenant, body)}`;
  }

  /** True when the gateway minted this id for this tenant. */
  belongsTo(id: string, tenant: string): boolean {
    const m = ID_PATTERN.exec(id);
    if (!m) return false;
    const expected = Buffer.from(this.mac(tenant, m[1]!));
    const given = Buffer.from(m[2]!);
    return expected.length === given.length && timingSafeEqual(expected, given);
  }

  /**
   * A list page's cursor: Temporal's page token, signed for the tenant. Temporal answers a token
   * it cannot read with UNKNOWN, which its client retries until the deadline, so only a cursor
   * the gateway handed out is ever passed on; anything else is a 400 at once.
   */
  sealCursor(tenant: string, token: Uint8Array): string {
    const body = Buffer.from(token).toString('base64url');
    return `${body}.${this.cursorMac(tenant, body)}`;
  }

  /** The page token inside a cursor sealed for this tenant, or undefined. */
  openCursor(tenant: string, cursor: string): Buffer | undefined {
    const m = CURSOR_PATTERN.exec(cursor);
    if (!m) return undefined;
    const expected = Buffer.from(this.cursorMac(tenant, m[1]!));
    const given = Buffer.from(m[2]!);
    return expected.length === given.length && timingSafeEqual(expected, given) ? Buffer.from(m[1]!, 'base64url') : undefined;
  }

  private cursorMac(tenant: string, body: string): string {
    return createHmac('sha256', this.secret).update(`cursor|${tenant}|${body}`).digest('base64url').slice(0, 22);
  }
}
