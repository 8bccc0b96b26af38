// A minimal corporate-style forward proxy (CONNECT only, optional Basic auth) that records what passes
// through it, to prove regcache sends its upstream traffic there.
import http from 'node:http';
import net from 'node:net';

export interface ForwardProxy {
  port: number;
  /** CONNECT targets in arrival order, with whether the credentials matched. */
  connects: { target: string; authorized: boolean }[];
  close(): Promise<void>;
}

export async function startForwardProxy(credentials?: { user: string; pass: string }): Promise<ForwardProxy> {
  const connects: ForwardProxy['connects'] = [];
  const expected = credentials ? 'Basic ' + Buffer.from(`${credentials.user}:${credentials.pass}`).toString('base64') : null;
  const server = http.createServer((_req, res) => res.writeHead(501).end());
  const sockets = new Set<net.Socket>();
  server.on('connect', (req: http.IncomingMessage, client: net.Socket, head: Buffer) => {
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    const target = req.url ?? '';
    const authorized = expected === null || req.headers['proxy-authorization'] === expected;
    connects.push({ target, authorized });
    if (!authorized) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n');
      return;
    }
    const [host, port] = [target.slice(0, target.lastIndexOf(':')).replace(/^\[|\]$/g, ''), Number(target.slice(target.lastIndexOf(':') + 1))];
    const origin = net.connect(port, host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) origin.write(head);
      origin.pipe(client);
      client.pipe(origin);
    });
    sockets.add(origin);
    origin.once('close', () => sockets.delete(origin));
    origin.on('error', () => client.destroy());
    client.on('error', () => origin.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    connects,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
