// The measured client of the auth bench: one request after another, each on a new connection so that
// each one is authenticated (a client on a keep-alive connection authenticates once, and would measure
// nothing of the password checks): through the proxy, CONNECT with Proxy-Authorization + TLS + GET of
// the cached manifest; on the mirror, GET of the cached manifest with Authorization. Every body is
// hashed against the manifest's digest; latency is from the first byte sent to the last received.
import { createHash } from 'node:crypto';
import http from 'node:http';
import { Http1Connection } from '../load/http1-connection.js';

export interface Door {
  name: 'proxy' | 'mirror';
  port: number;
  path: string; // the manifest by digest (with ?ns= on the mirror)
  digest: string;
  accept: string;
  authorization: string; // the client's good credentials, as a Basic header value
  connect?: { target: string; servername: string; ca: string }; // the proxy door
}

export interface Measured {
  latenciesMs: number[];
  errors: number;
  errorSamples: string[];
}

const TIMEOUT_MS = 30_000;

/** Requests back to back for `seconds`. */
export async function measureDoor(door: Door, seconds: number): Promise<Measured> {
  const latenciesMs: number[] = [];
  const errorSamples: string[] = [];
  let errors = 0;
  const end = performance.now() + seconds * 1000;
  while (performance.now() < end) {
    const started = performance.now();
    try {
      await (door.connect ? throughProxy(door, door.connect) : fromMirror(door));
      latenciesMs.push(performance.now() - started);
    } catch (err) {
      errors++;
      if (errorSamples.length < 5) errorSamples.push((err as Error).message);
    }
  }
  return { latenciesMs, errors, errorSamples };
}

async function throughProxy(door: Door, connect: NonNullable<Door['connect']>): Promise<void> {
  const connection = await Http1Connection.open(
    { port: door.port, connect: connect.target, proxyAuthorization: door.authorization, servername: connect.servername, ca: connect.ca },
    TIMEOUT_MS,
  );
  try {
    await connection.get(door.path, { accept: door.accept }, door.digest, TIMEOUT_MS);
  } finally {
    connection.close();
  }
}

function fromMirror(door: Door): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = http.get(
      {
        host: '127.0.0.1',
        port: door.port,
        path: door.path,
        agent: false,
        timeout: TIMEOUT_MS,
        headers: { accept: door.accept, authorization: door.authorization },
      },
      (res) => {
        const hash = createHash('sha256');
        res.on('data', (chunk: Buffer) => hash.update(chunk));
        res.on('end', () => {
          const digest = `sha256:${hash.digest('hex')}`;
          if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
          else if (digest !== door.digest) reject(new Error(`body hashes to ${digest}`));
          else resolve();
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.once('error', reject);
  });
}
