import { readFile } from 'node:fs/promises';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';

export interface TlsFiles {
  certFile: string;
  keyFile: string;
}

export interface RunningServer {
  port: number;
  close(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/**
 * HTTPS server on 127.0.0.1 with a kernel-chosen port (no freePort race).
 * Handler exceptions become 500s instead of crashing the test process.
 */
export async function listenHttps(tls: TlsFiles, handler: Handler): Promise<RunningServer> {
  const [cert, key] = await Promise.all([readFile(tls.certFile), readFile(tls.keyFile)]);
  const server = https.createServer({ cert, key }, (req, res) => {
    Promise.resolve(handler(req, res)).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('listenHttps: no port');
  return {
    port: addr.port,
    close: () =>
      new Promise<void>((resolve) => {
        // Keep-alive sockets from clients would otherwise hold close() open.
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
