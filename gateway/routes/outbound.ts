import type { FastifyInstance } from 'fastify';
import { WorkflowFailedError, WorkflowIdReusePolicy } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { z } from 'zod';
import type { OutboundResult } from '../../activities/third-party';
import { ApiError, validationError } from '../../lib/errors';
import { startWorkflow } from '../../lib/start-workflow';
import { outboundAllows, PathOutsideService, servicePath } from '../../lib/third-party/services';
import { registeredWorkflowType } from '../../lib/workflow-registry';
import type { GatewayContext } from '../app';
import { assertBodyWithinLimit } from '../raw-body';
import { acceptedAnswer, createTriggering, idempotencyKeyOf } from '../triggering';

const outboundBody = z
  .object({
    /** What goes to the third party (seed 000's shape). */
    request_body: z.unknown().optional(),
    method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']).default('POST'),
    /** Optional; must be the caller's own tenant. */
    tenant_id: z.string().min(1).max(200).optional(),
  })
  .strict();
const outboundQuery = z.object({ wait: z.coerce.number().min(0).max(60).default(10) }).strict();
const PATH = /^[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/;

/** Seconds a caller should wait after a 502 (the breaker may open meanwhile and say more). */
const UNAVAILABLE_RETRY_AFTER_S = 5;

/**
 * `POST /outbound/3rdparty/{service}/{path}`: an internal caller (API key) has the platform call
 * a third party for it, through the worker's breaker and with the credential from Vault, which
 * the caller never sees. The call runs as a workflow; the caller waits up to `?wait=` seconds
 * (default 10) and gets the answer, 502/503 with `retry_after`, or past the deadline 202.
 */
export function registerOutboundRoutes(app: FastifyInstance, ctx: GatewayContext): void {
  const services = new Map(ctx.config.FLOWGATE_THIRD_PARTIES.map((s) => [s.name, s]));
  const def = registeredWorkflowType('third-party-call')!;
  const { idempotentId } = createTriggering(ctx);

  app.post('/outbound/3rdparty/:service/*', async (req, reply) => {
    const { tenant } = await ctx.auth.authenticate(req);
    const { service, '*': path } = req.params as { service: string; '*': string };
    const svc = services.get(service);
    if (!svc) {
      throw new ApiError(404, 'unknown_service', `no third party named ${service}`, [{ field: 'params.service', message: `one of: ${[...services.keys()].join(', ')}` }]);
    }
    if (!PATH.test(path)) throw new ApiError(400, 'validation_failed', 'invalid path', [{ field: 'params.path', message: 'URL path characters only' }]);
    // The path as it will be called (`..` folded), refused if it leaves the service's base URL.
    let called: string;
    try {
      called = servicePath(svc, path);
    } catch (err) {
      if (!(err instanceof PathOutsideService)) throw err;
      throw new ApiError(400, 'validation_failed', 'invalid path', [{ field: 'params.path', message: "must stay under the service's base URL" }]);
    }
    assertBodyWithinLimit(req);
    const raw = (req.body ?? {}) as Record<string, unknown>;
    if (raw && typeof raw === 'object' && 'internal_api_key' in raw) {
      throw new ApiError(400, 'validation_failed', 'credentials go in Authorization or X-API-Key, never in the body', [{ field: 'body.internal_api_key', message: 'not accepted' }]);
    }
    const body = outboundBody.safeParse(raw);
    if (!body.success) throw validationError(body.error, 'body');
    const query = outboundQuery.safeParse(req.query);
    if (!query.success) throw validationError(query.error, 'query');
    if (body.data.tenant_id !== undefined && body.data.tenant_id !== tenant) {
      throw new ApiError(403, 'tenant_mismatch', 'tenant_id is not the tenant of the credential', [{ field: 'body.tenant_id', message: 'must be your own tenant' }]);
    }
    if (!outboundAllows(svc, body.data.method, called)) {
      throw new ApiError(403, 'outbound_not_allowed', `${body.data.method} ${called} is not open to the outbound proxy for ${service}`,
        [{ field: 'params.path', message: `allowed: ${svc.outbound.map((e) => `${e.method} ${e.path}`).join(', ') || 'nothing'}` }]);
    }
    const key = idempotencyKeyOf(req);
    const input = { service, method: body.data.method, path: `/${path}`, body: body.data.request_body, ...(key ? { idempotency_key: key } : {}) };
    const executionId = key === undefined ? ctx.ids.mint(tenant) : await idempotentId(tenant, `outbound:${key}`, def.name, input);

    let handle;
    try {
      ({ handle } = await startWorkflow(ctx.temporal, {
        def, executionId, tenant, correlationId: req.id, acceptedAt: new Date().toISOString(), input, taskQueue: ctx.config.FLOWGATE_TASK_QUEUE,
        // A call that failed (502/503 to the client) may be retried with the same Idempotency-Key,
        // as the answer says: it starts again. One running or done is joined or replayed.
        reusePolicy: WorkflowIdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
      }));
    } catch (err) {
      req.log.warn({ err }, 'outbound: temporal unavailable');
      throw new ApiError(503, 'temporal_unavailable', 'the call could not be started; retry', undefined, { 'Retry-After': '2' });
    }
    /** 502/503 with Retry-After: the third party, or the platform's access to it, is what failed. */
    const unavailable = (status: number, code: string, reason: string, retryAfter: number) =>
      reply.code(status).header('Retry-After', String(retryAfter)).header('X-Workflow-Execution-ID', executionId).send({
        error: { code, message: '3rd-party service unavailable', details: { service, reason } },
        correlation_id: req.id,
        retry_after: retryAfter,
      });
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), query.data.wait * 1000);
    try {
      const result = (await ctx.temporal.withAbortSignal(abort.signal, () => handle.result())) as OutboundResult;
      reply.header('X-Workflow-Execution-ID', executionId);
      if (result.status < 400) return reply.code(result.status).send({ status: 'success', data: result.data, correlation_id: req.id });
      // The third party refused the request itself (4xx): the caller's to fix, passed through.
      return reply.code(result.status).send({
        status: 'error', error: { code: 'third_party_rejected', message: `${service} answered ${result.status}` }, data: result.data, correlation_id: req.id,
      });
    } catch (err) {
      if (abort.signal.aborted) {
        const answer = acceptedAnswer(executionId);
        return reply.code(202).headers(answer.headers).send(answer.body);
      }
      if (!(err instanceof WorkflowFailedError)) throw err;
      const cause = err.cause instanceof ApplicationFailure ? err.cause : undefined;
      const details = (cause?.details?.[0] ?? {}) as { retry_after_ms?: number };
      const breakerOpen = cause?.type === 'BreakerOpen';
      const retryAfter = breakerOpen ? Math.ceil((details.retry_after_ms ?? 60_000) / 1000) : UNAVAILABLE_RETRY_AFTER_S;
      // The platform's own credential missing or refused (a 401 after one re-read from Vault) is
      // not the caller's to fix, and not its 401; nor is a redirect (never followed) its 3xx.
      const credentials = cause?.type === 'CredentialUnavailable' || cause?.type === 'CredentialRejected';
      return unavailable(breakerOpen || credentials ? 503 : 502, breakerOpen ? 'third_party_unavailable' : credentials ? 'credentials_unavailable' : 'third_party_failed',
        cause?.type ?? 'failed', retryAfter);
    } finally {
      clearTimeout(timer);
    }
  });
}
