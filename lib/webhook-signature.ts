import { createHmac, timingSafeEqual } from 'node:crypto';

export const WEBHOOK_HEADERS = {
  id: 'x-flowgate-event-id',
  timestamp: 'x-flowgate-timestamp',
  signature: 'x-flowgate-signature',
} as const;

/** Receivers should refuse deliveries whose timestamp is older than this (replay window). */
export const WEBHOOK_TOLERANCE_S = 300;

/** `v1=` + hex HMAC-SHA256 over `${timestamp}.${body}`: the timestamp is signed with the body. */
export function signWebhook(secret: string, timestamp: number, body: string): string {
  return `v1=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

/** What a receiver does: check the signature and that the timestamp is recent. */
export function verifyWebhook(secret: string, headers: Record<string, string | undefined>, body: string, nowS = Math.floor(Date.now() / 1000)): boolean {
  const ts = Number(headers[WEBHOOK_HEADERS.timestamp]);
  const sig = headers[WEBHOOK_HEADERS.signature] ?? '';
  if (!Number.isInteger(ts) || Math.abs(nowS - ts) > WEBHOOK_TOLERANCE_S) return false;
  const expected = Buffer.from(signWebhook(secret, ts, body));
  const given = Buffer.from(sig);
  return expected.length === given.length && timingSafeEqual(expected, given);
}
