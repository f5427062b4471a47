// A bare @fastify/http-proxy in one process, defaults only: bench/gateway.ts's Node reference.
// Usage: node --import tsx bench/peers/http-proxy.ts <upstream url> <port>
import proxy from '@fastify/http-proxy';
import Fastify from 'fastify';

async function main() {
  const [upstream, port] = process.argv.slice(2);
  if (!upstream || !port) throw new Error('usage: http-proxy.ts <upstream url> <port>');
  const app = Fastify({ logger: false });
  await app.register(proxy, { upstream });
  await app.listen({ host: '127.0.0.1', port: Number(port) });
  process.once('SIGTERM', () => void app.close().then(() => process.exit(0)));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
