// One plain-HTTP request to a regcache port on a connection of its own (no pooling: every request is
// a new client as far as regcache's checks go), answered with status, headers and the body as text; or a
// GET whose body is read as bytes as it comes (`get`), for transfers that may be cut.
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
  signal?: AbortSignal; // aborts the request: it rejects, its connection is closed
}

export function request(port: number, pathAndQuery: string, opts: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path: pathAndQuery,
        method: opts.method ?? 'GET',
        headers: opts.headers ?? {},
        agent: false,
        ...(opts.localAddress ? { localAddress: opts.localAddress } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.once('error', reject);
    req.end();
  });
}

export interface Got {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  length: number | null; // Content-Length
  complete: boolean; // the whole announced body arrived
  firstByteAt: number | null;
  doneAt: number;
}

/**
 * A GET on a connection of its own (with workers, the cluster picks a worker for it), reading the body as
 * it comes; `progress` sees the bytes so far. Never rejects: a cut body is `complete: false`.
 */
export function get(port: number, target: string, progress?: (received: number) => void, headers: Record<string, string> = {}): Promise<Got> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let received = 0;
    let firstByteAt: number | null = null;
    let status = 0;
    let resHeaders: http.IncomingHttpHeaders = {};
    let length: number | null = null;
    const finish = (complete: boolean) =>
      resolve({ status, headers: resHeaders, body: Buffer.concat(chunks), length, complete, firstByteAt, doneAt: Date.now() });
    const req = http.get({ host: '127.0.0.1', port, path: target, headers, agent: false }, (res) => {
      status = res.statusCode ?? 0;
      resHeaders = res.headers;
      length = res.headers['content-length'] === undefined ? null : Number(res.headers['content-length']);
      res.on('data', (chunk: Buffer) => {
        firstByteAt ??= Date.now();
        chunks.push(chunk);
        received += chunk.length;
        progress?.(received);
      });
      res.once('end', () => finish(res.complete && (length === null || received === length)));
      res.once('error', () => finish(false));
      res.once('aborted', () => finish(false));
    });
    req.once('error', () => finish(false));
  });
}
