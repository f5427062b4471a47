import type { FastifyInstance } from 'fastify';

/**
 * Once the server is closing, every response still in flight is sent with `Connection: close`,
 * so keep-alive clients let go and close() does not wait out the keep-alive timeout.
 */
export function closeConnectionsOnShutdown(app: FastifyInstance): void {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  // A callback hook: an async one would keep every answer from being written synchronously.
  app.addHook('onSend', (_req, reply, payload, done) => {
    if (closing) reply.header('connection', 'close');
    done(null, payload);
  });
}
