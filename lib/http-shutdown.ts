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
  app.addHook('onSend', async (_req, reply) => {
    if (closing) reply.header('connection', 'close');
  });
}
