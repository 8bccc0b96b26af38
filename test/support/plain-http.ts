// One plain-HTTP request to a regcache port on a connection of its own (no pooling: every request is
// a new client as far as regcache's checks go), answered with status, headers and the body as text.
import http from 'node:http';

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  method?: string;
  localAddress?: string; // e.g. 127.0.1.7: another client address as regcache sees it
}

export function request(port: number, pathAndQuery: string, opts: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: pathAndQuery, method: opts.method ?? 'GET', headers: opts.headers ?? {}, agent: false, ...(opts.localAddress ? { localAddress: opts.localAddress } : {}) }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.once('error', reject);
    req.end();
  });
}
