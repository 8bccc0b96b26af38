import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { listenHttps, type TlsFiles } from './https-server.js';

export interface CdnRequest {
  method: string;
  /** URL path, without query string (signed-URL style queries are ignored). */
  path: string;
  /** Whether the client sent an Authorization header (it must not, cross-origin). */
  authorization: boolean;
  range?: string;
  status: number;
}

export interface Cdn {
  port: number;
  /** https://127.0.0.1:PORT */
  url: string;
  /** Live list, appended as requests complete. */
  requests: CdnRequest[];
  stop(): Promise<void>;
}

/** Parse a single "bytes=a-b" / "bytes=a-" / "bytes=-n" range; null if unsupported or unsatisfiable. */
function parseRange(header: string, size: number): { start: number; end: number } | null {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (m === null) return null;
  const [, a = '', b = ''] = m;
  let start: number;
  let end: number;
  if (a === '') {
    if (b === '') return null;
    start = Math.max(0, size - Number(b));
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  }
  return start <= end && start < size ? { start, end } : null;
}

/**
 * Static HTTPS file server standing in for the storage backend a registry
 * redirects blob downloads to. URL path == path under rootDir.
 */
export async function startCdn(opts: { rootDir: string; tls: TlsFiles }): Promise<Cdn> {
  const root = path.resolve(opts.rootDir);
  const requests: CdnRequest[] = [];

  const server = await listenHttps(opts.tls, async (req, res) => {
    const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'https://cdn.invalid').pathname);
    const record = (status: number): void => {
      const entry: CdnRequest = { method: req.method ?? '', path: urlPath, authorization: req.headers.authorization !== undefined, status };
      if (req.headers.range !== undefined) entry.range = req.headers.range;
      requests.push(entry);
    };
    const file = path.resolve(root, '.' + urlPath);
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      record(405);
      res.writeHead(405).end();
      return;
    }
    const info = file.startsWith(root + path.sep) ? await stat(file).catch(() => null) : null;
    if (info === null || !info.isFile()) {
      record(404);
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    let start = 0;
    let end = info.size - 1;
    let status = 200;
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' };
    if (req.headers.range !== undefined) {
      const range = parseRange(req.headers.range, info.size);
      if (range === null) {
        record(416);
        res.writeHead(416, { 'content-range': `bytes */${info.size}` }).end();
        return;
      }
      ({ start, end } = range);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${info.size}`;
    }
    headers['content-length'] = String(Math.max(0, end - start + 1));
    record(status);
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || info.size === 0) {
      res.end();
      return;
    }
    const stream = createReadStream(file, { start, end });
    stream.once('error', () => res.destroy());
    stream.pipe(res);
  });

  return { port: server.port, url: `https://127.0.0.1:${server.port}`, requests, stop: () => server.close() };
}
