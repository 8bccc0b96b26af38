// tier: e2e
// HIT and MISS bodies are written from a ring of reused buffers (src/cache/ring-writer.ts): a buffer is
// read into again once its write called back. That must hold for a plain HTTP response and for one on a
// TLS socket (intercepted connections), with clients that read in bursts (writes pending) so that a buffer
// reused too early would show as wrong bytes: in process over real sockets (stored files, verified or not,
// and fills), then a real regcache process (MISS and HIT over intercepted TLS and the plain-HTTP mirror,
// a range, clients that leave mid-body).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { open, readdir, readlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { FillReader } from '../src/cache/fill-reader.js';
import { Fill } from '../src/cache/fill.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import { VerifiedFileReader } from '../src/cache/verified-file-reader.js';
import { createTestCA, type IssuedCert } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { sleep, waitFor } from './harness/proc.js';
import type { Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { makeBlob, type FakeBlob } from './support/fake-registry.js';
import { FakeUpstream } from './support/fake-upstream.js';
import type { ProxyClient } from './support/proxy-client.js';

const MiB = 1024 * 1024;
const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');

interface Read {
  bytes: number;
  digest: string; // of what arrived
  error: Error | null;
}

/** Reads a body in bursts (a pause every 64 chunks) so that the sender's writes back up; or leaves after `leaveAfter` bytes. */
async function readInBursts(body: AsyncIterable<Buffer> & { destroy(): unknown }, leaveAfter = Infinity): Promise<Read> {
  const hash = crypto.createHash('sha256');
  let bytes = 0;
  let chunks = 0;
  try {
    for await (const chunk of body) {
      hash.update(chunk);
      bytes += chunk.length;
      if (bytes >= leaveAfter) {
        body.destroy();
        break;
      }
      if (++chunks % 64 === 0) await sleep(15);
    }
  } catch (err) {
    return { bytes, digest: 'sha256:' + hash.digest('hex'), error: err as Error };
  }
  return { bytes, digest: 'sha256:' + hash.digest('hex'), error: null };
}

/** An HTTP server on plain TCP, or on TLS sockets made the way regcache's interceptor makes them. */
async function listen(secure: IssuedCert | null, handler: http.RequestListener): Promise<{ port: number; close(): void }> {
  const server = http.createServer(handler);
  const front = secure
    ? net.createServer((socket) => {
        const context = tls.createSecureContext({ cert: secure.certPem, key: secure.keyPem });
        server.emit('connection', new tls.TLSSocket(socket, { isServer: true, secureContext: context }));
      })
    : server;
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  return { port: (front.address() as net.AddressInfo).port, close: () => front.close() };
}

function get(secure: boolean, port: number, pathname: string): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const options = { host: '127.0.0.1', port, path: pathname, agent: false as const };
    // Trust is not what is tested here.
    const req = secure ? https.get({ ...options, rejectUnauthorized: false }) : http.get(options);
    req.once('response', resolve).once('error', reject);
  });
}

describe('bodies from a ring of buffers, over plain and TLS sockets (in process)', () => {
  const tmp = new TmpDirs();
  const data = crypto.randomBytes(40 * MiB + 4321); // random: a chunk written from a reused buffer cannot hash right
  const digest = sha256(data);
  let dir: string;
  let file: string;
  let cert: IssuedCert;
  const stores: LocalStore[] = [];

  before(async () => {
    dir = await tmp.make('regcache-ring-send');
    file = path.join(dir, 'content');
    await writeFile(file, data);
    cert = await (await createTestCA(dir, 'ring send CA')).issue(['localhost'], dir, 'server');
  });
  after(async () => {
    for (const store of stores) await store.close();
    await tmp.cleanup();
  });

  /** Serves the stored file (verified or not) or a growing fill of it; bytes [start, end] when asked for. */
  const handler =
    (counted: number[]): http.RequestListener =>
    (req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const start = Number(url.searchParams.get('start') ?? 0);
      const end = Number(url.searchParams.get('end') ?? data.length - 1);
      res.writeHead(200, { 'content-length': end - start + 1 });
      let bytes = 0;
      const onBytes = (n: number): void => void (bytes += n);
      const sent =
        url.pathname === '/fill'
          ? fillOf().then((fill) => new FillReader(fill, start, end).sendTo(res, onBytes))
          : openContentFile().then((content) =>
              new VerifiedFileReader(content, { size: data.length, digest, start, end }).sendTo(res, { verify: url.pathname === '/verified', onBytes }),
            );
      sent.then(
        () => counted.push(bytes),
        (err: Error) => res.destroy(err),
      );
    };

  /** The file as the store would hand it to the reader (a ContentFile), and its handle. */
  const openContentFile = async () => {
    const handle = await open(file, 'r');
    return {
      handle,
      size: data.length,
      read: (b: Buffer, l: number, p: number) => handle.read(b, 0, l, p).then((r) => r.bytesRead),
      close: () => handle.close(),
    };
  };

  /** A fill of the data from an upstream that delivers it in pieces while the client reads. */
  const fillOf = async (): Promise<Fill> => {
    const store = await LocalStore.open(path.join(dir, `store-${stores.length}`)); // each fill commits the same digest
    stores.push(store);
    const body = new PassThrough();
    const fill = await Fill.start(store, 'blob', digest, 'application/octet-stream', data.length, body, { ref: null, tag: null });
    assert.ok(fill.acquire());
    void (async () => {
      for (let off = 0; off < data.length; off += MiB) {
        if (!body.write(data.subarray(off, off + MiB))) await new Promise((resolve) => body.once('drain', resolve));
        await new Promise((resolve) => setImmediate(resolve));
      }
      body.end();
    })();
    return fill;
  };

  for (const secure of [false, true]) {
    for (const what of ['verified', 'unverified', 'fill']) {
      it(`${what} over ${secure ? 'TLS' : 'plain TCP'}: ${Math.round(data.length / MiB)} MiB byte for byte to a client reading in bursts, and a range`, async () => {
        const counted: number[] = [];
        const server = await listen(secure ? cert : null, handler(counted));
        try {
          const whole = await readInBursts(await get(secure, server.port, `/${what}`));
          assert.equal(whole.error, null);
          assert.equal(whole.bytes, data.length);
          assert.equal(whole.digest, digest, 'the same bytes');
          const [start, end] = [3 * MiB + 17, 29 * MiB + 5];
          const part = await readInBursts(await get(secure, server.port, `/${what}?start=${start}&end=${end}`));
          assert.equal(part.digest, sha256(data.subarray(start, end + 1)));
          // sendTo settles once its last write has called back, which may come after the client read the last byte.
          await waitFor(async () => counted.length === 2, { timeoutMs: 10_000, what: 'both sends to settle' });
          assert.deepEqual(counted, [data.length, end - start + 1], 'every byte counted once');
        } finally {
          server.close();
        }
      });
    }
  }

  it('stops and closes the file when the client leaves mid-body, over TLS', async () => {
    const closed: boolean[] = [];
    const server = await listen(cert, (req, res) => {
      void (async () => {
        res.writeHead(200, { 'content-length': data.length });
        const content = await openContentFile();
        await new VerifiedFileReader(content, { size: data.length, digest, start: 0, end: data.length - 1 }).sendTo(res, {
          verify: true,
          onBytes: () => undefined,
        });
        closed.push(content.handle.fd === -1);
      })();
    });
    try {
      const r = await readInBursts(await get(true, server.port, '/'), 5 * MiB);
      assert.ok(r.bytes < data.length);
      for (let i = 0; i < 100 && closed.length === 0; i++) await sleep(20);
      assert.deepEqual(closed, [true], 'sendTo returned and closed its file');
    } finally {
      server.close();
    }
  });
});

/** The regcache process's open files under its cache directory (content and spool files). */
async function openStoreFiles(proxy: Regcache): Promise<string[]> {
  const fdDir = `/proc/${proxy.daemon.pid}/fd`;
  const targets = await Promise.all((await readdir(fdDir)).map((fd) => readlink(path.join(fdDir, fd)).catch(() => '')));
  return targets.filter((t) => t.startsWith(proxy.cacheDir) && !t.endsWith('.lock') && !t.includes('index'));
}

describe('HIT and MISS bodies through regcache, over intercepted TLS and the plain-HTTP mirror', () => {
  const tmp = new TmpDirs();
  const fx = new FakeUpstream();
  let proxy: Regcache;
  let client: ProxyClient;
  const overTls = makeBlob(36 * MiB + 99, 'ring-send tls');
  const overMirror = makeBlob(36 * MiB + 7, 'ring-send mirror');
  const leftMiss = makeBlob(24 * MiB, 'ring-send left mid-miss');
  const tlsUrl = (b: FakeBlob): string => `https://registry.test/v2/lib/app/blobs/${b.digest}`;
  const mirrorUrl = (b: FakeBlob): string => `http://127.0.0.1:${proxy.mirrorPort}/v2/lib/app/blobs/${b.digest}?ns=registry.test`;

  before(async () => {
    const dir = await tmp.make('regcache-ring-send-e2e');
    await fx.start(dir, 'ring send upstream CA');
    for (const blob of [overTls, overMirror, leftMiss]) fx.upstream.add(blob);
    ({ proxy, client } = await fx.regcache({ dir: path.join(dir, 'proxy'), env: { MIRROR_PORT: String(await freePort()) } }));
  });
  after(async () => {
    await client?.close();
    await proxy?.stop();
    await fx.upstream.close();
    await tmp.cleanup();
  });

  const viaTls = async (blob: FakeBlob, headers: Record<string, string> = {}, leaveAfter?: number): Promise<Read & { status: number }> => {
    const res = await request(tlsUrl(blob), { dispatcher: client.agent, headers });
    return { status: res.statusCode, ...(await readInBursts(res.body, leaveAfter)) };
  };
  const viaMirror = async (blob: FakeBlob): Promise<Read & { status: number }> => {
    const res = await request(mirrorUrl(blob));
    return { status: res.statusCode, ...(await readInBursts(res.body)) };
  };

  for (const [name, blob, fetch] of [
    ['intercepted TLS', overTls, (b: FakeBlob) => viaTls(b)],
    ['the plain-HTTP mirror', overMirror, viaMirror],
  ] as const) {
    it(`MISS then HIT over ${name} to a client reading in bursts: byte for byte, every byte logged`, async () => {
      for (const cache of ['MISS', 'HIT']) {
        const mark = (await proxy.logs()).length;
        const r = await fetch(blob);
        assert.equal(r.status, 200);
        assert.equal(r.error, null);
        assert.equal(r.digest, blob.digest, `${cache}: the same bytes`);
        const lines = await proxy.requests(mark);
        const line = lines.find((l) => l.digest === blob.digest && l.kind === 'blob');
        assert.equal(line?.cache, cache, JSON.stringify(lines));
        assert.equal(line?.bytes, blob.data.length);
        assert.equal(line?.error, undefined);
      }
    });
  }

  it('a range of a HIT over intercepted TLS', async () => {
    const [start, end] = [1_000_001, 30_000_000];
    const r = await viaTls(overTls, { range: `bytes=${start}-${end}` });
    assert.equal(r.status, 206);
    assert.equal(r.digest, sha256(overTls.data.subarray(start, end + 1)));
  });

  it('a client that leaves a HIT mid-body: logged aborted, no file left open, the next one served', async () => {
    const mark = (await proxy.logs()).length;
    const r = await viaTls(overTls, {}, 6 * MiB);
    assert.ok(r.bytes < overTls.data.length);
    await proxy.waitForLog((l) => l.msg === 'request' && l.aborted === true, 'the aborted HIT');
    const line = (await proxy.requests(mark)).find((l) => l.aborted === true);
    assert.equal(line?.cache, 'HIT');
    assert.equal(line?.error, undefined);
    assert.ok((line?.bytes ?? 0) < overTls.data.length);
    for (let i = 0; i < 50 && (await openStoreFiles(proxy)).length > 0; i++) await sleep(50);
    assert.deepEqual(await openStoreFiles(proxy), []);
    assert.equal((await viaTls(overTls)).digest, overTls.digest);
  });

  it('a client that leaves a MISS mid-body: the fill completes and is stored, no file left open', async () => {
    const r = await viaTls(leftMiss, {}, 3 * MiB);
    assert.ok(r.bytes < leftMiss.data.length);
    await proxy.waitForLog((l) => l.msg === 'request' && l.digest === leftMiss.digest && l.aborted === true, 'the aborted MISS');
    const mark = (await proxy.logs()).length;
    for (let i = 0; i < 100; i++) {
      const again = await viaTls(leftMiss);
      if ((await proxy.requests(mark)).some((l) => l.digest === leftMiss.digest && l.cache === 'HIT')) {
        assert.equal(again.digest, leftMiss.digest);
        break;
      }
      await sleep(50);
    }
    assert.ok(
      (await proxy.requests(mark)).some((l) => l.digest === leftMiss.digest && l.cache === 'HIT'),
      'stored, served as a HIT',
    );
    for (let i = 0; i < 50 && (await openStoreFiles(proxy)).length > 0; i++) await sleep(50);
    assert.deepEqual(await openStoreFiles(proxy), []);
  });
});
