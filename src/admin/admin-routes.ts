// Requests addressed to the proxy itself (origin-form URLs on the proxy port): a status page and the
// CA certificate clients must trust.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../log.js';
import { RequestRecord } from '../server/access-log.js';

export interface AdminDeps {
  log: Logger;
  caCertPem: string;
  version: string;
}

export function handleAdmin(deps: AdminDeps, req: IncomingMessage, res: ServerResponse): void {
  const record = new RequestRecord(deps.log, req, res, 'regcache');
  record.cache = 'ADMIN';
  record.kind = 'admin';
  const path = record.path;
  const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
    res.end(req.method === 'HEAD' ? undefined : body);
    record.bytes = req.method === 'HEAD' ? 0 : Buffer.byteLength(body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(405, 'text/plain; charset=utf-8', 'method not allowed\n', { allow: 'GET, HEAD' });
    return;
  }
  switch (path) {
    case '/':
      send(200, 'text/plain; charset=utf-8', `regcache ${deps.version} is running.\nCA certificate: GET /ca.crt\n`);
      return;
    case '/ca.crt':
      send(200, 'application/x-pem-file', deps.caCertPem, { 'content-disposition': 'attachment; filename="regcache-ca.crt"' });
      return;
    default:
      send(404, 'text/plain; charset=utf-8', 'not found\n');
  }
}
