import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from '../lib/errors';

/**
 * JSON bodies parsed as Fastify does (prototype and constructor poisoning refused), with their
 * bytes kept: a proxied JSON body goes upstream exactly as the client sent it (re-serialized,
 * numbers past 2^53 would change and a signature over the body would break), and a size limit
 * counts the bytes that came.
 */
const RAW = Symbol('flowgate.rawJson');
type WithRaw = FastifyRequest & { [RAW]?: Buffer };

export function keepRawJson(app: FastifyInstance): void {
  const parse = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, (req, body, done) => {
    (req as WithRaw)[RAW] = body as Buffer;
    parse(req, (body as Buffer).toString('utf8'), done);
  });
}

/** The bytes of a JSON body as received, when the request had one. */
export const rawJsonOf = (req: FastifyRequest): Buffer | undefined => (req as WithRaw)[RAW];

/** The body's size as received. */
export function bodySize(req: FastifyRequest): number {
  const body = req.body;
  if (body === undefined || body === null) return 0;
  if (Buffer.isBuffer(body)) return body.length;
  if (typeof body === 'string') return Buffer.byteLength(body);
  return rawJsonOf(req)?.length ?? Buffer.byteLength(JSON.stringify(body));
}

/**
 * The `request-size-limiting` plugin on the body as read. The pipeline checks Content-Length
 * before reading; a chunked body has none, so every handler that reads a body checks here too.
 */
export function assertBodyWithinLimit(req: FastifyRequest): void {
  const limit = req.flowgate?.plugins['request-size-limiting']?.allowed_payload_size_bytes;
  if (limit !== undefined && bodySize(req) > limit) {
    throw new ApiError(413, 'payload_too_large', `the body may be at most ${limit} bytes`, [{ field: 'body', message: 'too large' }]);
  }
}
