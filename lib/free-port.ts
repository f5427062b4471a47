import net from 'node:net';

/** A loopback port free right now (the OS picks it); for a server another program binds next. */
export const freeLoopbackPort = () => new Promise<number>((resolve, reject) => {
  const s = net.createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address() as net.AddressInfo;
    s.close(() => resolve(port));
  });
});
