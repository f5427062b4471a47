import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Execution ids are `fgx_<body>_<mac>`. The body is random, or derived from the tenant and
 * its Idempotency-Key; the mac binds the id to its tenant. Only the gateway can mint one, so
 * the status API can answer ACCEPTED for an id that Temporal does not know yet (the trigger is
 * durable in JetStream, not started) and 404 for anything else. The id is the workflow id.
 */
const PREFIX = 'fgx_';
const ID_PATTERN = /^fgx_([A-Za-z0-9_-]{22})_([A-Za-z0-9_-]{16})$/;

export class ExecutionIds {
  constructor(private readonly secret: string) {}

  private mac(tenant: string, body: string): string {
    return createHmac('sha256', this.secret).update(`id|${tenant}|${body}`).digest('base64url').slice(0, 16);
  }

  /** A fresh id, or with a key the same id for the same tenant and key, always. */
  mint(tenant: string, idempotencyKey?: string): string {
    const body = idempotencyKey === undefined
      ? randomBytes(16).toString('base64url')
      : createHmac('sha256', this.secret).update(`idem|${tenant}|${idempotencyKey}`).digest('base64url').slice(0, 22);
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
}
