// The soak's upstream as regcache sees it: an HTTPS server in front of the real docker-registry (its
// certificate from the upstream's CA, so regcache trusts it as registry.test), forwarding every request,
// recording every content GET (start, end, status, bytes, whether it was a Range), and on the fault
// schedule's say-so slowing its answers, answering 5xx, or resetting connections mid-body. One per
// configuration under test, so the GETs each one makes are counted apart.
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { IssuedCert } from '../harness/pki.js';

export type UpstreamMode = 'ok' | 'slow' | 'error' | 'reset';

export interface ContentGet {
  digest: string;
  kind: 'blob' | 'manifest';
  start: number;
  end: number;
  status: number;
  range: boolean;
  bytes: number;
  /** The whole body went out. */
  complete: boolean;
}

const SLOW_BYTES_PER_SECOND = 512 * 1024;
const CONTENT_PATH = /^\/v2\/.+\/(blobs|manifests)\/(sha256:[0-9a-f]{64})(\?|$)/;

export class FaultUpstream {
  mode: UpstreamMode = 'ok';
  readonly gets: ContentGet[] = [];
  port = 0;
  private server: https.Server | null = null;
  private readonly agent: https.Agent;

  constructor(
    private readonly tls: IssuedCert,
    private readonly target: { port: number; caFile: string },
  ) {
    this.agent = new https.Agent({ keepAlive: true, maxSockets: 64, ca: readFileSync(target.caFile, 'utf8') });
  }

  async start(): Promise<void> {
    this.server = https.createServer({ cert: readFileSync(this.tls.certFile), key: readFileSync(this.tls.keyFile) }, (req, res) => {
      const content = CONTENT_PATH.exec(req.url ?? '');
      const mode = this.mode;
      const record: ContentGet | null =
        content && req.method === 'GET'
          ? {
              digest: content[2]!,
              kind: content[1] === 'blobs' ? 'blob' : 'manifest',
              start: Date.now(),
              end: 0,
              status: 0,
              range: req.headers.range !== undefined,
              bytes: 0,
              complete: false,
            }
          : null;
      if (record) this.gets.push(record);
      const done = (status: number, complete: boolean) => {
        if (!record) return;
        record.end = Date.now();
        record.status = status;
        record.complete = complete;
      };
      if (content && mode === 'error') {
        const status = [500, 502, 503][Math.floor(Math.random() * 3)]!;
        res.writeHead(status, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAVAILABLE","message":"soak fault"}]}');
        done(status, true);
        return;
      }
      const forward = https.request(
        { host: '127.0.0.1', port: this.target.port, method: req.method, path: req.url, headers: req.headers, agent: this.agent },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          const cut = content && mode === 'reset' && (answer.statusCode ?? 0) < 300 ? 16 * 1024 : Infinity;
          let sent = 0;
          const meter = new Transform({
            transform(chunk: Buffer, _enc, callback: TransformCallback) {
              sent += chunk.length;
              if (record) record.bytes = sent;
              if (sent > cut) {
                res.socket?.destroy(); // the connection cut mid-body (TLS: no RST from here)
                callback(new Error('soak: reset'));
                return;
              }
              if (mode !== 'slow') return callback(null, chunk);
              setTimeout(() => callback(null, chunk), (chunk.length / SLOW_BYTES_PER_SECOND) * 1000);
            },
          });
          pipeline(answer, meter, res).then(
            () => done(answer.statusCode ?? 0, true),
            () => done(answer.statusCode ?? 0, false),
          );
        },
      );
      forward.on('error', () => {
        if (!res.headersSent) res.writeHead(502).end();
        else res.destroy();
        done(502, false);
      });
      req.pipe(forward);
    });
    this.server.on('clientError', (_err, socket) => socket.destroy()); // regcache cut a connection: nothing to answer
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((resolve) => this.server?.close(resolve) ?? resolve(undefined));
    this.agent.destroy();
  }
}
