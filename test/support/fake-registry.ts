// An in-process HTTPS server shaped like a registry, for behaviour the real one never shows:
// wrong bytes for a digest, truncated bodies, redirects to a CDN, scripted statuses. Records requests.
import crypto from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { listenHttps, type RunningServer, type TlsFiles } from '../harness/https-server.js';

export interface SeenRequest {
  method: string;
  path: string;
  authorization: string | undefined;
  range: string | undefined;
}

export type BlobBehaviour =
  | { kind: 'ok' }
  | { kind: 'wrong-bytes' } // same length, one byte flipped
  | { kind: 'truncate'; after: number } // Content-Length says all, the socket closes early
  | { kind: 'redirect'; location: string } // 307 to a CDN (absolute or relative)
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  | { kind: 'slow'; chunk: number; delayMs: number }
  | { kind: 'hang' }; // never answers

export interface FakeBlob {
  digest: string;
  data: Buffer;
  mediaType?: string;
}

/**
 * `size` bytes that the seed alone determines: AES-256-CTR keystream keyed by the seed's hash (incompressible;
 * 24 MiB with its digest took 0.23 s of CPU here, where a hash chain of 32-byte blocks took 1.9 s).
 */
export function makeBlob(size: number, seed: string, mediaType?: string): FakeBlob {
  const key = crypto.createHash('sha256').update(seed).digest();
  const data = crypto.createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
  return { digest: 'sha256:' + crypto.createHash('sha256').update(data).digest('hex'), data, mediaType };
}

export class FakeRegistry {
  readonly seen: SeenRequest[] = [];
  readonly blobs = new Map<string, FakeBlob>();
  readonly behaviour = new Map<string, BlobBehaviour>(); // by digest; by "name:tag" only 'status' applies
  readonly tags = new Map<string, FakeBlob>(); // "name:tag" -> manifest
  private server: RunningServer | null = null;

  get port(): number {
    if (!this.server) throw new Error('not started');
    return this.server.port;
  }

  async start(tls: TlsFiles): Promise<void> {
    this.server = await listenHttps(tls, (req, res) => this.handle(req, res));
  }

  add(blob: FakeBlob, behaviour: BlobBehaviour = { kind: 'ok' }): FakeBlob {
    this.blobs.set(blob.digest, blob);
    this.behaviour.set(blob.digest, behaviour);
    return blob;
  }

  count(method: string, pathSuffix: string): number {
    return this.seen.filter((r) => r.method === method && r.path.endsWith(pathSuffix)).length;
  }

  close(): Promise<void> {
    return this.server?.close() ?? Promise.resolve();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?', 1)[0]!;
    this.seen.push({ method: req.method ?? '', path, authorization: req.headers.authorization, range: req.headers.range });
    if (path === '/v2/') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const tag = /^\/v2\/(.+)\/manifests\/([^:]+)$/.exec(path);
    if (tag) {
      const scripted = this.behaviour.get(`${tag[1]}:${tag[2]}`); // a status scripted for "name:tag"
      if (scripted?.kind === 'status') return void res.writeHead(scripted.status, scripted.headers ?? {}).end();
      const manifest = this.tags.get(`${tag[1]}:${tag[2]}`);
      if (!manifest) return void res.writeHead(404).end();
      res.writeHead(200, {
        'content-type': manifest.mediaType ?? 'application/vnd.oci.image.manifest.v1+json',
        'content-length': manifest.data.length,
        'docker-content-digest': manifest.digest,
        'ratelimit-remaining': '99;w=21600', // as Docker Hub sends on manifest requests
      });
      res.end(req.method === 'HEAD' ? undefined : manifest.data);
      return;
    }
    const m = /\/(?:blobs|manifests)\/(sha256:[a-f0-9]{64})$/.exec(path) ?? /^\/cdn\/(sha256:[a-f0-9]{64})$/.exec(path);
    const blob = m ? this.blobs.get(m[1]!) : undefined;
    if (!blob) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
    const behaviour = path.startsWith('/cdn/') ? { kind: 'ok' as const } : (this.behaviour.get(blob.digest) ?? { kind: 'ok' as const });
    const headers = { 'content-type': blob.mediaType ?? 'application/octet-stream', 'content-length': blob.data.length, 'docker-content-digest': blob.digest };
    // A single "bytes=a-b" range, as S3 and the registry answer it (used by regcache to resume).
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range && (behaviour.kind === 'ok' || behaviour.kind === 'slow')) {
      const first = Number(range[1]);
      const last = range[2] ? Math.min(Number(range[2]), blob.data.length - 1) : blob.data.length - 1;
      const part = blob.data.subarray(first, last + 1);
      res.writeHead(206, { ...headers, 'content-length': part.length, 'content-range': `bytes ${first}-${last}/${blob.data.length}` }).end(part);
      return;
    }
    if (req.method === 'HEAD' && ['ok', 'slow', 'wrong-bytes', 'truncate'].includes(behaviour.kind)) {
      res.writeHead(200, headers).end(); // headers only, at once, whatever the body would do
      return;
    }
    switch (behaviour.kind) {
      case 'redirect':
        res.writeHead(307, { location: behaviour.location }).end();
        return;
      case 'hang':
        return;
      case 'status':
        res.writeHead(behaviour.status, behaviour.headers ?? {}).end();
        return;
      case 'wrong-bytes': {
        const bad = Buffer.from(blob.data);
        bad[bad.length >> 1] = (bad[bad.length >> 1] ?? 0) ^ 0xff;
        res.writeHead(200, headers).end(req.method === 'HEAD' ? undefined : bad);
        return;
      }
      case 'truncate':
        res.writeHead(200, headers);
        res.write(blob.data.subarray(0, behaviour.after), () => res.socket?.destroy());
        return;
      case 'slow': {
        res.writeHead(200, headers);
        let off = 0;
        const tick = () => {
          if (off >= blob.data.length) return void res.end();
          res.write(blob.data.subarray(off, off + behaviour.chunk));
          off += behaviour.chunk;
          setTimeout(tick, behaviour.delayMs);
        };
        tick();
        return;
      }
      case 'ok':
        res.writeHead(200, headers).end(req.method === 'HEAD' ? undefined : blob.data);
    }
  }
}
