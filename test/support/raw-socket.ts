// Raw bytes to the proxy, for what a well-behaved HTTP client would never send (or would rewrite first).
import net from 'node:net';
import type tls from 'node:tls';

/** Writes raw bytes to a socket and collects what comes back until it closes (or 3 s pass). */
export function exchange(socket: net.Socket | tls.TLSSocket, data: string | Buffer): Promise<string> {
  return new Promise((resolve) => {
    let reply = '';
    socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    socket.once('close', () => resolve(reply));
    socket.once('error', () => resolve(reply));
    setTimeout(() => {
      socket.destroy();
      resolve(reply);
    }, 3000);
    socket.write(data);
  });
}

/** One request on a new connection to the proxy, answered in full (the answer closes the connection). */
export function proxyExchange(port: number, request: string): Promise<string> {
  return exchange(net.connect(port, '127.0.0.1'), request);
}

/** A CONNECT that the proxy answers with 200; rejects with the answer otherwise. */
export async function connectTunnel(port: number, authority: string): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  await new Promise<void>((resolve, reject) => {
    socket.once('data', (d: Buffer) => (d.toString().startsWith('HTTP/1.1 200') ? resolve() : reject(new Error(d.toString()))));
    socket.once('error', reject);
  });
  return socket;
}
