// The host off the allowlist that the load bench's tunnels reach: an HTTPS server answering GET /hello
// with a fixed small body, which regcache carries byte for byte and never decrypts.
import { createHash, randomBytes } from 'node:crypto';
import { listenHttps, type TlsFiles } from '../../test/harness/https-server.js';

export interface TunnelTarget {
  port: number;
  path: string;
  digest: string; // of the body every GET gets
  requests(): number;
  close(): Promise<void>;
}

export async function startTunnelTarget(tls: TlsFiles, bodyBytes: number): Promise<TunnelTarget> {
  const body = randomBytes(bodyBytes);
  const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
  let served = 0;
  const server = await listenHttps(tls, (req, res) => {
    if (req.url !== '/hello') return void res.writeHead(404, { 'content-length': 0 }).end();
    served++;
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length }).end(body);
  });
  return { port: server.port, path: '/hello', digest, requests: () => served, close: () => server.close() };
}
