import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';

/** A client-facing failure with a stable machine-readable code. */
export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers?: Record<string, string>,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const notFound = (what: string) => new ApiError(404, 'not_found', `${what} not found`);

/** Turns zod issues into `{field, message}` pairs naming each offending field. */
export function validationError(error: z.ZodError, where: 'body' | 'query' | 'params' | 'signal'): ApiError {
  // zod reports unknown keys on the object that holds them: each is named as the field it is.
  const details = error.issues.flatMap((i) => i.code === 'unrecognized_keys'
    ? i.keys.map((k) => ({ field: [where, ...i.path.map(String), k].join('.'), message: 'not a known field' }))
    : [{ field: [where, ...i.path.map(String)].join('.'), message: i.message }]);
  return new ApiError(400, 'validation_failed', `invalid ${where}: ${details.map((d) => d.field).join(', ')}`, details);
}

/**
 * A 400 naming the first string (or object key) in `value` that holds a NUL character, which
 * PostgreSQL text cannot store; undefined when there is none.
 */
export function nulCharacter(value: unknown, where: 'body' | 'query' | 'params'): ApiError | undefined {
  const find = (v: unknown, path: string[], depth: number): string[] | undefined => {
    if (typeof v === 'string') return v.includes('\0') ? path : undefined;
    if (depth > 32 || v === null || typeof v !== 'object' || Buffer.isBuffer(v)) return undefined;
    for (const [k, child] of Object.entries(v)) {
      if (k.includes('\0')) return [...path, k];
      const found = find(child, [...path, k], depth + 1);
      if (found) return found;
    }
    return undefined;
  };
  const path = find(value, [where], 0);
  return path && new ApiError(400, 'validation_failed', `invalid ${where}: ${path.join('.')}`, [{ field: path.join('.'), message: 'must not contain a NUL character' }]);
}

const FASTIFY_CODES: Record<string, { status: number; code: string }> = {
  FST_ERR_CTP_BODY_TOO_LARGE: { status: 413, code: 'body_too_large' },
  FST_ERR_CTP_INVALID_JSON_BODY: { status: 400, code: 'malformed_json' },
  FST_ERR_CTP_EMPTY_JSON_BODY: { status: 400, code: 'malformed_json' },
  FST_ERR_CTP_INVALID_MEDIA_TYPE: { status: 415, code: 'unsupported_media_type' },
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: { status: 400, code: 'invalid_content_length' },
};

/**
 * The one root error handler: ApiErrors and Fastify's 4xx pass through with a stable code;
 * everything else is logged and masked as `internal_error`.
 */
export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | ApiError | Error, req: FastifyRequest, reply: FastifyReply) => {
    const correlation_id = req.id;
    if (err instanceof ApiError) {
      if (err.headers) reply.headers(err.headers);
      return reply.code(err.statusCode).send({ error: { code: err.code, message: err.message, details: err.details }, correlation_id });
    }
    const fe = err as FastifyError;
    const known = fe.code ? FASTIFY_CODES[fe.code] : undefined;
    if (known) return reply.code(known.status).send({ error: { code: known.code, message: fe.message }, correlation_id });
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.code(fe.statusCode).send({ error: { code: 'bad_request', message: fe.message }, correlation_id });
    }
    req.log.error({ err }, 'unhandled error');
    return reply.code(500).send({ error: { code: 'internal_error', message: 'internal error' }, correlation_id });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: 'route_not_found', message: `no route for ${req.method} ${req.url.split('?')[0]}` }, correlation_id: req.id }),
  );
}
