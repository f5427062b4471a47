import type { FastifyInstance, FastifyRequest } from 'fastify';

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
