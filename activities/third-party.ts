import { ApplicationFailure, Context } from '@temporalio/activity';
import { BreakerOpenError } from '../lib/third-party/breakers';
import { ThirdPartyUnavailable, UnknownServiceError, type ThirdPartyClient, type ThirdPartyRequest } from '../lib/third-party/client';
import { CredentialUnavailable } from '../lib/third-party/credentials';
import { PathOutsideService } from '../lib/third-party/services';
import { whileBeating } from './heartbeating';

/** The smallest wait before retrying past an open breaker (it may be half-open with a probe in flight). */
const MIN_BREAKER_WAIT_MS = 1000;

/**
 * The client's errors as Temporal failures. An open breaker is retryable, and its next retry
 * waits for the breaker's remaining open time rather than the policy's backoff, so Temporal does
 * not hammer a service the fleet already knows is down.
 */
export function thirdPartyFailure(err: unknown): Error {
  if (err instanceof BreakerOpenError) {
    const wait = Math.max(err.retryAfterMs, MIN_BREAKER_WAIT_MS);
    return ApplicationFailure.create({
      type: 'BreakerOpen', message: err.message, nextRetryDelay: wait,
      details: [{ service: err.service, retry_after_ms: wait, retry_at: new Date(Date.now() + wait).toISOString() }],
    });
  }
  if (err instanceof ThirdPartyUnavailable) {
    return ApplicationFailure.create({ type: 'ThirdPartyUnavailable', message: err.message, details: [{ service: err.service, error_code: err.errorCode, status: err.status, attempts: err.attempts }] });
  }
  if (err instanceof CredentialUnavailable) return ApplicationFailure.create({ type: 'CredentialUnavailable', message: err.message, details: [{ service: err.service }] });
  if (err instanceof UnknownServiceError) return ApplicationFailure.nonRetryable(err.message, 'UnknownThirdParty', { service: err.service });
  if (err instanceof PathOutsideService) return ApplicationFailure.nonRetryable(err.message, 'PathOutsideService', { service: err.service });
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Runs one client call inside an activity: heartbeats while it waits (so a dead worker is noticed
 * within the heartbeat timeout, not the start-to-close one) and stops when the activity is
 * cancelled, unless `untilAnswered`: a call that may be moving money is waited for (within the
 * client's own timeouts), so whatever undoes it after a cancel finds what it did.
 */
export async function callFromActivity(client: ThirdPartyClient, req: Omit<ThirdPartyRequest, 'signal'>, opts: { untilAnswered?: boolean } = {}) {
  const ctx = Context.current();
  try {
    return await whileBeating(() => client.call({ ...req, signal: opts.untilAnswered ? undefined : ctx.cancellationSignal }), 1000);
  } catch (err) {
    throw thirdPartyFailure(err);
  }
}

export type OutboundCall = { tenant: string; correlation_id: string; service: string; method: ThirdPartyRequest['method']; path: string; body?: unknown; idempotency_key?: string };
export type OutboundResult = { status: number; data: unknown; attempts: number; latency_ms: number };

/** The Idempotency-Key an outbound call sends for a client's key (payments' keys are `fg:<tenant>:key:…` and `fg:<tenant>:run:…`). */
export const outboundKeyOf = (tenant: string, key: string) => `fg:${tenant}:outbound:${key}`;

/** The activities behind `POST /outbound/3rdparty/{service}/{path}`. */
export function thirdPartyActivities(deps: { thirdParty: ThirdPartyClient }) {
  return {
    /**
     * One call; an answer below 500 (4xx included) is the caller's to interpret, except a 401 (the
     * platform's own key refused, after one re-read from Vault) and a redirect (never followed):
     * those fail the run, so a retry with the same Idempotency-Key starts it again.
     */
    async callThirdParty(call: OutboundCall): Promise<OutboundResult> {
      const res = await callFromActivity(deps.thirdParty, {
        tenant: call.tenant, service: call.service, method: call.method, path: call.path, body: call.body,
        // The provider keeps one key space for the platform's account: a client's key is scoped to
        // its tenant, so two tenants' `order-42` are two charges, and no key names another's payment.
        correlationId: call.correlation_id, idempotencyKey: call.idempotency_key === undefined ? undefined : outboundKeyOf(call.tenant, call.idempotency_key),
      });
      if (res.status === 401) throw ApplicationFailure.nonRetryable(`${call.service} refused the platform's credential`, 'CredentialRejected', { status: res.status });
      if (res.status >= 300 && res.status < 400) throw ApplicationFailure.nonRetryable(`${call.service} answered a redirect (${res.status})`, 'ThirdPartyRedirect', { status: res.status });
      return { status: res.status, data: res.body, attempts: res.attempts, latency_ms: Math.round(res.latencyMs) };
    },
  };
}
