// One connection of the load generator: TCP to 127.0.0.1, optionally an HTTP CONNECT through the proxy,
// then TLS, then GETs one after another on it (keep-alive), each body hashed against the digest it
// should have. Raw sockets rather than an HTTP client library, so that every reset, timeout and wrong
// byte is seen and counted, and nothing is retried, pooled or pipelined behind the bench's back.
import { createHash, type Hash } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';

export interface Endpoint {
  port: number; // on 127.0.0.1: the proxy's port when `connect` is set, else the TLS server's
  connect?: string; // CONNECT this host:port through the proxy first
  proxyAuthorization?: string; // sent with the CONNECT (PROXY_AUTH)
  servername: string; // TLS server name, certificate name and Host header
  ca: string; // PEM the server certificate must chain to
}

/** Why a request failed; the generator counts failures by kind. */
export type FailureKind = 'connect' | 'proxy-refused' | 'tls' | 'status' | 'digest' | 'protocol' | 'reset' | 'timeout';

export class RequestFailure extends Error {
  constructor(
    readonly kind: FailureKind,
    message: string,
  ) {
    super(message);
  }
}

const MAX_HEAD = 64 * 1024;

// One context per CA: building one from the PEM for every connection costs the generator more CPU
// than the handshake itself.
const contexts = new Map<string, tls.SecureContext>();
function contextFor(ca: string): tls.SecureContext {
  let context = contexts.get(ca);
  if (!context) contexts.set(ca, (context = tls.createSecureContext({ ca })));
  return context;
}

interface Pending {
  expectedDigest: string;
  head: Buffer; // bytes of the response head received so far
  status: number;
  bodyLeft: number; // -1 until the head is parsed
  bytes: number;
  hash: Hash;
  closeAfter: boolean; // the server said Connection: close
  resolve: (r: { bytes: number }) => void;
  reject: (err: RequestFailure) => void;
}

export class Http1Connection {
  private pending: Pending | null = null;
  private ended = false; // the server closed, or said it would: open a new one for the next request
  session: Buffer | undefined; // TLS session ticket, for a resumed handshake on the next connection

  private constructor(
    private readonly socket: tls.TLSSocket,
    private readonly host: string,
  ) {
    socket.on('session', (s: Buffer) => (this.session = s));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.fail('reset', `socket error: ${(err as NodeJS.ErrnoException).code ?? err.message}`));
    socket.on('close', () => this.fail('reset', 'connection closed before the response was complete'));
  }

  get usable(): boolean {
    return !this.ended && !this.socket.destroyed;
  }

  /** TCP, CONNECT (when the endpoint says so) and TLS, within timeoutMs. */
  static async open(endpoint: Endpoint, timeoutMs: number, session?: Buffer): Promise<Http1Connection> {
    const signal = AbortSignal.timeout(timeoutMs);
    const raw = net.connect(endpoint.port, '127.0.0.1');
    raw.setNoDelay(true);
    try {
      await once(raw, 'connect', { signal }).catch((err: Error) => {
        throw new RequestFailure(signal.aborted ? 'timeout' : 'connect', `connect: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
      });
      if (endpoint.connect !== undefined) await proxyConnect(raw, endpoint.connect, endpoint.proxyAuthorization, signal);
      const secure = tls.connect({ socket: raw, servername: endpoint.servername, secureContext: contextFor(endpoint.ca), ...(session ? { session } : {}) });
      // Listening from here on: a TLS 1.3 session ticket can arrive with the end of the handshake.
      const connection = new Http1Connection(secure, endpoint.servername);
      await once(secure, 'secureConnect', { signal }).catch((err: Error) => {
        secure.destroy();
        throw new RequestFailure(signal.aborted ? 'timeout' : 'tls', `TLS: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
      });
      return connection;
    } catch (err) {
      raw.destroy();
      throw err instanceof RequestFailure ? err : new RequestFailure('connect', (err as Error).message);
    }
  }

  /** GET path; resolves once the whole body is in and hashes to expectedDigest, else rejects. */
  get(path: string, headers: Record<string, string>, expectedDigest: string, timeoutMs: number): Promise<{ bytes: number }> {
    if (this.pending) throw new Error('one request at a time');
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail('timeout', `no complete response within ${timeoutMs} ms`), timeoutMs);
      this.pending = {
        expectedDigest,
        head: Buffer.alloc(0),
        status: 0,
        bodyLeft: -1,
        bytes: 0,
        hash: createHash('sha256'),
        closeAfter: false,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      let head = `GET ${path} HTTP/1.1\r\nHost: ${this.host}\r\nUser-Agent: regcache-load-bench\r\n`;
      for (const [name, value] of Object.entries(headers)) head += `${name}: ${value}\r\n`;
      this.socket.write(head + '\r\n');
    });
  }

  /** Ends the connection politely (TLS close_notify, FIN). */
  close(): void {
    this.ended = true;
    this.socket.end();
  }

  destroy(): void {
    this.ended = true;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    const p = this.pending;
    if (!p) {
      this.fail('protocol', `${chunk.length} bytes arrived with no request outstanding`);
      return;
    }
    let body = chunk;
    if (p.bodyLeft < 0) {
      p.head = Buffer.concat([p.head, chunk]);
      const end = p.head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (p.head.length > MAX_HEAD) this.fail('protocol', 'response head too large');
        return;
      }
      if (!this.parseHead(p, p.head.subarray(0, end).toString('latin1'))) return;
      body = p.head.subarray(end + 4);
    }
    if (body.length > p.bodyLeft) {
      this.fail('protocol', `${body.length - p.bodyLeft} bytes beyond Content-Length`);
      return;
    }
    p.hash.update(body);
    p.bytes += body.length;
    p.bodyLeft -= body.length;
    if (p.bodyLeft > 0) return;
    this.pending = null;
    if (p.closeAfter) this.ended = true;
    const digest = `sha256:${p.hash.digest('hex')}`;
    if (p.status !== 200) p.reject(new RequestFailure('status', `HTTP ${p.status}`));
    else if (digest !== p.expectedDigest) p.reject(new RequestFailure('digest', `body hashes to ${digest}, expected ${p.expectedDigest}`));
    else p.resolve({ bytes: p.bytes });
  }

  /** Status and framing; only Content-Length bodies (every answer the bench asks for has one). */
  private parseHead(p: Pending, head: string): boolean {
    const lines = head.split('\r\n');
    const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (!status) {
      this.fail('protocol', `bad status line ${JSON.stringify(lines[0]?.slice(0, 100))}`);
      return false;
    }
    p.status = Number(status[1]);
    let length: number | null = null;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim().toLowerCase();
      const value = line.slice(colon + 1).trim();
      if (name === 'content-length') length = Number(value);
      else if (name === 'transfer-encoding') length = NaN;
      else if (name === 'connection' && value.toLowerCase() === 'close') p.closeAfter = true;
    }
    if (length === null || !Number.isSafeInteger(length) || length < 0) {
      this.fail('protocol', `HTTP ${p.status} without a usable Content-Length`);
      return false;
    }
    p.bodyLeft = length;
    return true;
  }

  private fail(kind: FailureKind, message: string): void {
    const p = this.pending;
    this.pending = null;
    this.ended = true;
    this.socket.destroy();
    p?.reject(new RequestFailure(kind, message));
  }
}

/** Sends CONNECT and reads the proxy's answer head, which must be 200. */
async function proxyConnect(raw: net.Socket, authority: string, proxyAuthorization: string | undefined, signal: AbortSignal): Promise<void> {
  raw.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n${proxyAuthorization ? `Proxy-Authorization: ${proxyAuthorization}\r\n` : ''}\r\n`);
  const head = await new Promise<string>((resolve, reject) => {
    let bytes = Buffer.alloc(0);
    const done = (err: RequestFailure | null, text = ''): void => {
      raw.off('data', onData).off('end', onEnd).off('error', onError);
      signal.removeEventListener('abort', onAbort);
      if (err) reject(err);
      else resolve(text);
    };
    const onData = (chunk: Buffer): void => {
      bytes = Buffer.concat([bytes, chunk]);
      const end = bytes.indexOf('\r\n\r\n');
      if (end >= 0) done(null, bytes.subarray(0, end).toString('latin1'));
      else if (bytes.length > MAX_HEAD) done(new RequestFailure('protocol', 'CONNECT answer head too large'));
    };
    const onEnd = (): void => done(new RequestFailure('reset', 'CONNECT: the proxy closed the connection'));
    const onError = (err: NodeJS.ErrnoException): void => done(new RequestFailure('reset', `CONNECT: ${err.code ?? err.message}`));
    const onAbort = (): void => done(new RequestFailure('timeout', 'CONNECT: no answer in time'));
    raw.on('data', onData).on('end', onEnd).on('error', onError);
    signal.addEventListener('abort', onAbort);
    if (signal.aborted) onAbort();
  });
  // Nothing follows the head: the TLS server speaks only after our ClientHello.
  raw.pause();
  const statusLine = head.split('\r\n', 1)[0] ?? '';
  if (!/^HTTP\/1\.[01] 200/.test(statusLine)) throw new RequestFailure('proxy-refused', `CONNECT ${authority}: ${statusLine}`);
}
