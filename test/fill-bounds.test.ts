// tier: e2e
// Fills bounded on every byte (issue 20, items 3 and 4). In process: the fill coordinator over a temp-dir
// store with a small CACHE_MAX_SIZE, fed endless and stalling upstream bodies. Against a real regcache
// process (one process and WORKERS=2), attack 2 as it was made: a hostile TLS origin (routed by CONNECT_TO)
// that sends an endless chunked blob, oversize manifests, an endless tags list and an endless token.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { request } from 'undici';
import type { Backend } from '../src/cache/backend.js';
import { FillCoordinator, type Fetched, type FillKey } from '../src/cache/fill-coordinator.js';
import { FillReader } from '../src/cache/fill-reader.js';
import { FillError, type Fill } from '../src/cache/fill.js';
import { LocalFillTable } from '../src/cache/fill-table.js';
import { openLocalBackend } from '../src/cache/local/local-backend.js';
import type { LocalStore } from '../src/cache/local/local-store.js';
import { Room } from '../src/cache/room.js';
import { PART_SIZE } from '../src/cache/s3/bucket-spool.js';
import { S3Store } from '../src/cache/s3/s3-store.js';
import { createLogger } from '../src/telemetry/log.js';
import { BodyTooLargeError, readBounded } from '../src/upstream/bounded-body.js';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { startRegcache, type LogLine, type Regcache } from './harness/regcache.js';
import { listKeys, s3ClientConfig, startS3Server, type S3Server } from './harness/s3-server.js';
import { TmpDirs } from './harness/tmp.js';
import { ProxyClient } from './support/proxy-client.js';
import { FakeBucket } from './support/fake-bucket.js';
import { Sink } from './support/sink.js';

const log = createLogger('silent', false);
const KiB = 1024;
const MiB = 1024 * KiB;
const FROM = { ref: 'registry.test/lib/app', tag: null };
const admitAll = () => Promise.resolve(true);
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const randomDigest = (): string => 'sha256:' + crypto.randomBytes(32).toString('hex');

/** A body that never ends: 64 KiB chunks as fast as they are read; `sent` counts them. */
function endlessBody(): { stream: Readable; sent: () => number } {
  let sent = 0;
  const chunk = crypto.randomBytes(64 * KiB);
  const stream = new Readable({
    read() {
      sent += chunk.length;
      this.push(chunk);
    },
  });
  return { stream, sent: () => sent };
}

const fetchOf =
  (stream: Readable, size: number | null = null) =>
  (): Promise<Fetched<null>> =>
    Promise.resolve({ answer: null, body: { stream, mediaType: 'application/octet-stream', size } });

/** What a reader of the fill got: its bytes and the error it ended with. */
async function read(fill: Fill): Promise<{ data: Buffer; error: Error | null }> {
  const sink = new Sink();
  const error = await new FillReader(fill, 0, null)
    .sendTo(sink, () => undefined)
    .then(
      () => null,
      (err: Error) => err,
    );
  return { data: sink.data, error };
}

describe('fill bounds in process (temp-dir store, CACHE_MAX_SIZE=1m, MANIFEST_MAX_SIZE=64k)', () => {
  const tmp = new TmpDirs();
  let cacheDir: string;
  let backend: Backend<LocalStore>;
  let coordinator: FillCoordinator;
  const kept = crypto.randomBytes(200 * KiB); // stored before: nothing may evict it

  before(async () => {
    cacheDir = await tmp.make('regcache-fill-bounds');
    backend = await openLocalBackend({ cacheDir, cacheMaxSize: MiB, cacheInactiveMs: 86_400_000 }, log);
    coordinator = new FillCoordinator(backend, log, { manifestMaxBytes: 64 * KiB, stallMs: 50 });
    await backend.store.putVerified({ kind: 'blob', digest: digestOf(kept), size: kept.length, mediaType: 'application/octet-stream' }, kept, FROM);
  });
  after(async () => {
    await backend.close();
    await tmp.cleanup();
  });

  it('stops an endless blob of unknown length at CACHE_MAX_SIZE: spool never past it, dropped, its reader told why, nothing evicted', async () => {
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: randomDigest() };
    const endless = endlessBody();
    const outcome = await coordinator.fill(key, FROM, fetchOf(endless.stream), admitAll);
    assert.equal(outcome.kind, 'started');
    if (outcome.kind !== 'started') return;
    const settled = once(outcome.fill, 'settled'); // emitted once the spool is dropped
    let most = 0;
    outcome.fill.on('progress', () => (most = Math.max(most, outcome.fill.written)));
    const { error } = await read(outcome.fill);
    assert.ok(error instanceof FillError, String(error));
    assert.equal(error.reason, 'oversize');
    assert.match(error.message, /^larger than CACHE_MAX_SIZE: /);
    await settled;
    assert.ok(most > 0 && most <= MiB, `the spool held ${most} bytes`);
    assert.ok(endless.stream.destroyed, 'the upstream body was closed');
    assert.deepEqual(await readdir(path.join(cacheDir, 'spool')), [], 'the spool was dropped');
    assert.equal(await backend.store.lookup('blob', key.digest), null);
    assert.ok(await backend.store.lookup('blob', digestOf(kept)), 'nothing was evicted for it');

    // Remembered: the retry streams through at once, no spool, no fill.
    const again = endlessBody();
    const retry = await coordinator.fill(key, FROM, fetchOf(again.stream), admitAll);
    assert.equal(retry.kind, 'bypassed');
    if (retry.kind === 'bypassed') {
      assert.equal(retry.reason, 'larger than CACHE_MAX_SIZE (remembered)');
      assert.equal(retry.oversize, true);
    }
    again.stream.destroy();
  });

  it('stops a fill of unknown length at the room the disk has, evicting nothing for it', async () => {
    const evictions: number[] = [];
    const store = backend.store;
    // A disk with 300 KiB free beyond the reserve; eviction could make more, and must not be asked.
    const room = new Room({ space: () => Promise.resolve({ free: 64 * MiB + 300 * KiB, reserve: 64 * MiB }) }, 1e12, {
      evictFor: (bytes) => (evictions.push(bytes), Promise.resolve(true)),
    });
    const tight = new FillCoordinator({ store, room, fills: new LocalFillTable() }, log);
    const endless = endlessBody();
    const outcome = await tight.fill({ origin: 'registry.test', kind: 'blob', digest: randomDigest() }, FROM, fetchOf(endless.stream), admitAll);
    assert.equal(outcome.kind, 'started');
    if (outcome.kind !== 'started') return;
    const { error } = await read(outcome.fill);
    assert.ok(error instanceof FillError && error.reason === 'oversize', String(error));
    assert.match(error.message, /^not enough free disk space: /);
    assert.ok(outcome.fill.written <= 300 * KiB, `${outcome.fill.written} bytes spooled`);
    assert.deepEqual(evictions, []);
  });

  it('gives up a fill of unknown length when its last reader leaves', async () => {
    const body = new PassThrough();
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: randomDigest() };
    const outcome = await coordinator.fill(key, FROM, fetchOf(body), admitAll);
    assert.equal(outcome.kind, 'started');
    if (outcome.kind !== 'started') return;
    body.write(crypto.randomBytes(10 * KiB));
    outcome.fill.release(); // the client went before reading
    await once(outcome.fill, 'settled');
    assert.equal(outcome.fill.state, 'failed');
    assert.equal(outcome.fill.error?.reason, 'unread');
    assert.ok(body.destroyed, 'the upstream body was closed');
    assert.equal(outcome.fill.acquire(), false, 'nobody joins it');
  });

  it('goes on with a fill of known size after its last reader left, and stores it', async () => {
    const data = crypto.randomBytes(300 * KiB);
    const body = new PassThrough();
    const outcome = await coordinator.fill({ origin: 'registry.test', kind: 'blob', digest: digestOf(data) }, FROM, fetchOf(body, data.length), admitAll);
    assert.equal(outcome.kind, 'started');
    if (outcome.kind !== 'started') return;
    body.write(data.subarray(0, 1000));
    outcome.fill.release();
    body.end(data.subarray(1000));
    await once(outcome.fill, 'settled');
    assert.equal(outcome.fill.state, 'committed', String(outcome.fill.error));
    assert.ok(await backend.store.lookup('blob', digestOf(data)));
  });

  it('does not take a spool write slower than the stall timeout for a stalled upstream', async () => {
    // A loaded disk (or machine): each write takes longer than the stall timeout while upstream has sent
    // everything. Before, the stall clock ran through the write and the fill was given up as stalled.
    const store = backend.store;
    const begin = store.beginSpool.bind(store);
    store.beginSpool = async (...args: Parameters<typeof begin>) => {
      const spool = await begin(...args);
      const write = spool.write.bind(spool);
      spool.write = async (chunks, position) => {
        await new Promise((resolve) => setTimeout(resolve, 150));
        return write(chunks, position);
      };
      return spool;
    };
    try {
      const data = crypto.randomBytes(100 * KiB);
      const body = new PassThrough();
      const outcome = await coordinator.fill({ origin: 'registry.test', kind: 'blob', digest: digestOf(data) }, FROM, fetchOf(body, data.length), admitAll);
      assert.equal(outcome.kind, 'started');
      if (outcome.kind !== 'started') return;
      outcome.fill.release(); // nobody reads it
      body.end(data);
      await once(outcome.fill, 'settled');
      assert.equal(outcome.fill.state, 'committed', String(outcome.fill.error));
    } finally {
      store.beginSpool = begin;
    }
  });

  it('gives up a fill of known size once no client reads it and upstream stalls', async () => {
    const data = crypto.randomBytes(300 * KiB);
    const body = new PassThrough();
    const outcome = await coordinator.fill({ origin: 'registry.test', kind: 'blob', digest: digestOf(data) + '' }, FROM, fetchOf(body, data.length), admitAll);
    assert.equal(outcome.kind, 'started');
    if (outcome.kind !== 'started') return;
    // Read and stalled for longer than the stall timeout: still running (the client's own timeout decides).
    const reader = outcome.fill.acquire();
    assert.ok(reader);
    body.write(data.subarray(0, 1000));
    await new Promise<void>((resolve) => outcome.fill.once('progress', () => resolve()));
    outcome.fill.release(); // the second reference: still one reader
    assert.equal(outcome.fill.settled, false);
    outcome.fill.release(); // no reader left, nothing more arrives
    await once(outcome.fill, 'settled');
    assert.equal(outcome.fill.error?.reason, 'stalled');
    assert.ok(body.destroyed);
  });

  it('bounds manifests by MANIFEST_MAX_SIZE: announced larger, refused; of unknown length, stopped past it', async () => {
    const big = endlessBody();
    const announced = await coordinator.fill(
      { origin: 'registry.test', kind: 'manifest', digest: randomDigest() },
      FROM,
      fetchOf(big.stream, 65 * KiB),
      admitAll,
    );
    assert.equal(announced.kind, 'bypassed');
    if (announced.kind === 'bypassed') assert.deepEqual([announced.reason, announced.oversize], ['larger than MANIFEST_MAX_SIZE', true]);
    big.stream.destroy();

    const endless = endlessBody();
    const outcome = await coordinator.fill({ origin: 'registry.test', kind: 'manifest', digest: randomDigest() }, FROM, fetchOf(endless.stream), admitAll);
    assert.equal(outcome.kind, 'started');
    if (outcome.kind !== 'started') return;
    const { error } = await read(outcome.fill);
    assert.ok(error instanceof FillError && error.reason === 'oversize', String(error));
    assert.match(error.message, /^larger than MANIFEST_MAX_SIZE: /);
    assert.ok(outcome.fill.written <= 64 * KiB);
  });

  it('reads a body up to a bound, and fails past it, announced or sent', async () => {
    assert.equal((await readBounded(Readable.from([Buffer.alloc(10), Buffer.alloc(6)]), 16, 'a body')).length, 16);
    await assert.rejects(readBounded(endlessBody().stream, 100 * KiB, 'an endless body'), (err: Error) => {
      assert.ok(err instanceof BodyTooLargeError);
      assert.equal(err.message, 'an endless body is larger than 102400 bytes; not read');
      return true;
    });
    const announced = new PassThrough();
    await assert.rejects(readBounded(announced, 16, 'a body', '17'), BodyTooLargeError);
    assert.ok(announced.destroyed);
  });
});

describe('fill bounds on the S3 store (in process, an in-memory bucket, CACHE_MAX_SIZE of 2.5 parts)', () => {
  const tmp = new TmpDirs();
  let store: S3Store;
  const bucket = new FakeBucket();
  after(async () => {
    await store?.close();
    await tmp.cleanup();
  });

  it('stops an endless blob at the bound after parts were uploaded: upload aborted, nothing in the bucket', async () => {
    ({ store } = await S3Store.open({ bucket, prefix: 'fleet/', dir: await tmp.make('regcache-s3-bounds'), log, probeMs: 50, refreshMs: 60_000 }));
    const bound = Math.floor(2.5 * PART_SIZE);
    const coordinator = new FillCoordinator({ store, room: new Room(store, bound), fills: new LocalFillTable() }, log);
    const endless = endlessBody();
    const outcome = await coordinator.fill({ origin: 'registry.test', kind: 'blob', digest: randomDigest() }, FROM, fetchOf(endless.stream), admitAll);
    assert.equal(outcome.kind, 'started');
    if (outcome.kind !== 'started') return;
    const settled = once(outcome.fill, 'settled');
    const { error } = await read(outcome.fill);
    assert.ok(error instanceof FillError && error.reason === 'oversize', String(error));
    await settled;
    assert.ok(outcome.fill.written <= bound);
    assert.ok(bucket.count('uploadPart') >= 2, `${bucket.count('uploadPart')} parts were uploaded before the bound`);
    assert.equal(bucket.uploads.size, 0, 'the upload was aborted');
    assert.deepEqual(
      [...bucket.objects.keys()].filter((k) => !k.startsWith('fleet/fills/')),
      [],
      'nothing stored',
    );
  });
});

/** What the hostile origin sent for one path, and whether the connection that carried it is closed. */
interface Sent {
  bytes: number;
  closed: Promise<void>;
}

/**
 * A hostile registry at registry.test: every blob and every manifest of its `hostile/app` repository is an
 * endless chunked body (a Range request too: it ignores ranges), tags lists are endless, manifests under
 * the tag `announced` say Content-Length 5 MiB, and the repository `hostile/tok` asks for a Bearer token
 * whose realm answers an endless body.
 */
class HostileOrigin {
  readonly sent = new Map<string, Sent>();
  private server: RunningServer | null = null;
  private readonly chunk = crypto.randomBytes(64 * KiB);

  get port(): number {
    return this.server!.port;
  }

  async start(tls: { certFile: string; keyFile: string }): Promise<void> {
    this.server = await listenHttps(tls, (req, res) => this.handle(req, res));
  }

  close(): Promise<void> {
    return this.server?.close() ?? Promise.resolve();
  }

  private readonly waiting: (() => void)[] = [];

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = req.url ?? '/';
    const p = url.split('?', 1)[0]!;
    if (p === '/v2/') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    if (p.startsWith('/v2/hostile/tok/')) {
      const challenge = 'Bearer realm="https://registry.test/token",service="registry.test",scope="repository:hostile/tok:pull"';
      return void res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    }
    if (req.method === 'HEAD') {
      // A tag's HEAD names a digest nobody has, so the GET goes upstream.
      return void res.writeHead(200, { 'docker-content-digest': randomDigest(), 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end();
    }
    if (p.endsWith('/manifests/announced')) {
      res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': 5 * MiB });
      return void this.endless(p, res);
    }
    if (p.startsWith('/v2/hostile/held/')) {
      // Of unknown length, and never ends: 1 MiB, then silence while the connection stays open.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      return void this.endless(p, res, MiB);
    }
    if (p === '/token' || p.startsWith('/v2/hostile/app/')) {
      res.writeHead(200, { 'content-type': p.includes('/manifests/') ? 'application/vnd.oci.image.manifest.v1+json' : 'application/octet-stream' });
      return void this.endless(p, res);
    }
    res.writeHead(404).end();
  }

  /** Writes chunks as fast as the connection takes them, until it closes (or `upTo` bytes were sent: then holds it open). */
  private endless(p: string, res: ServerResponse, upTo = Infinity): void {
    const sent: Sent = { bytes: 0, closed: once(res, 'close').then(() => undefined) };
    this.sent.set(`${this.sent.size} ${p}`, sent);
    for (const wake of this.waiting.splice(0)) wake();
    const pump = (): void => {
      while (!res.destroyed && sent.bytes < upTo) {
        sent.bytes += this.chunk.length;
        if (!res.write(this.chunk)) return void res.once('drain', pump);
      }
    };
    pump();
  }

  /** Resolves with what was sent for the first path ending in `suffix`, once it has been asked. */
  async request(suffix: string): Promise<Sent> {
    for (;;) {
      const found = [...this.sent].find(([p]) => p.endsWith(suffix));
      if (found) return found[1];
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
  }
}

/** A GET that reads up to `keep` bytes of the body and then leaves (aborts); what it read and how it ended. */
async function readThenLeave(client: ProxyClient | null, url: string, keep: number): Promise<{ status: number; bytes: number; error: Error | null }> {
  const controller = new AbortController();
  let res;
  try {
    res = await request(url, { dispatcher: client?.agent, signal: controller.signal });
  } catch (err) {
    return { status: 0, bytes: 0, error: err as Error }; // cut before the head left
  }
  let bytes = 0;
  let error: Error | null = null;
  try {
    for await (const chunk of res.body) {
      bytes += (chunk as Buffer).length;
      if (bytes >= keep) {
        controller.abort();
        break;
      }
    }
  } catch (err) {
    error = err as Error;
  }
  return { status: res.statusCode, bytes, error };
}

const S3_BUCKET = 'bounds';
for (const setup of ['WORKERS=1', 'WORKERS=2', 'CACHE_STORE (Ceph RGW)'] as const) {
  describe(`attack 2: a hostile origin's endless bodies (real regcache, CACHE_MAX_SIZE=4m, ${setup})`, () => {
    const tmp = new TmpDirs();
    const origin = new HostileOrigin();
    const BOUND = 4 * MiB;
    let proxy: Regcache;
    let client: ProxyClient;
    let s3: S3Server | null = null;
    const REG = 'https://registry.test';

    before(async () => {
      const dir = await tmp.make('regcache-attack2');
      const ca = await createTestCA(dir, 'hostile origin CA');
      await origin.start(await ca.issue(['registry.test'], dir, 'hostile'));
      let store: Record<string, string> = { WORKERS: setup === 'WORKERS=2' ? '2' : '1' };
      if (setup === 'CACHE_STORE (Ceph RGW)') {
        s3 = await startS3Server({ objectStore: 'memstore' });
        store = { ...store, ...s3.env, CACHE_STORE: `s3://${S3_BUCKET}/cache/` };
      }
      proxy = await startRegcache({
        dir,
        env: {
          ADDITIONAL_REGISTRIES: 'registry.test',
          UPSTREAM_CA_FILE: ca.certFile,
          CONNECT_TO: `registry.test:443:127.0.0.1:${origin.port}`,
          CACHE_MAX_SIZE: '4m',
          MANIFEST_MAX_SIZE: '64k',
          MIRROR_PORT: String(await freePort()),
          ...store,
        },
      });
      client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    });
    after(async () => {
      await client?.close();
      await proxy?.stop();
      await s3?.stop();
      await origin.close();
      await tmp.cleanup();
    });

    /** With CACHE_STORE: no content in the bucket and no multipart upload left open. */
    const bucketHoldsNothing = async (): Promise<void> => {
      if (!s3) return;
      const bucket = new S3Client(s3ClientConfig(s3));
      try {
        assert.deepEqual([...(await listKeys(bucket, S3_BUCKET, 'cache/', 'content/')).keys()], [], 'no content in the bucket');
        const uploads = await bucket.send(new ListMultipartUploadsCommand({ Bucket: S3_BUCKET }));
        assert.deepEqual(uploads.Uploads ?? [], [], 'no upload left open');
      } finally {
        bucket.destroy();
      }
    };

    it('streams an endless chunked blob through past CACHE_MAX_SIZE (BYPASS), its spool dropped, nothing evicted; the fill stops when the client leaves', async () => {
      const digest = randomDigest();
      // The client reads three times the bound: the spool stops at the bound, the rest comes from upstream.
      const got = await readThenLeave(client, `${REG}/v2/hostile/app/blobs/${digest}`, 3 * BOUND);
      assert.equal(got.status, 200);
      assert.ok(got.bytes >= 3 * BOUND, `the client got ${got.bytes} bytes`);
      const dropped = await proxy.waitForLog(
        (l) => l.msg === 'fill too large; spool dropped, clients served from upstream (BYPASS)' && l.digest === digest,
        'the drop',
      );
      assert.ok((dropped.bytes as number) <= BOUND, `the spool held ${String(dropped.bytes)} bytes`);
      assert.match(String(dropped.error), /^larger than CACHE_MAX_SIZE: /);
      const line = await proxy.waitForLog((l) => l.msg === 'request' && l.digest === digest, 'the request line');
      assert.equal(line.cache, 'BYPASS');
      assert.match(String(line.reason), /^larger than CACHE_MAX_SIZE: /);
      // Both of the origin's answers (the fill's, then the continuation's) end once the client is gone.
      const answers = [...origin.sent].filter(([p]) => p.endsWith(digest)).map(([, s]) => s);
      assert.equal(answers.length, 2, 'the fill and the continuation');
      await Promise.all(answers.map((s) => s.closed));
      assert.deepEqual(await readdir(path.join(proxy.cacheDir, 'spool')), []);
      assert.ok(!(await proxy.logs()).some((l) => l.msg === 'evicted'), 'nothing was evicted');
      await bucketHoldsNothing();
    });

    it('gives up a fill of unknown length as soon as its only client leaves, well before the bound', async () => {
      // The origin sends 1 MiB and holds: an origin sending as fast as it can filled the spool to the bound
      // (4 MiB) before regcache saw the client leave on a loaded machine, and the fill failed 'oversize'.
      // Given up for that leave, the fill ends 'unread' at once; not given up, it would wait out the stall.
      const digest = randomDigest();
      const got = await readThenLeave(client, `${REG}/v2/hostile/held/blobs/${digest}`, 256 * KiB);
      assert.ok(got.bytes >= 256 * KiB);
      const failed = await proxy.waitForLog((l) => l.msg === 'fill failed; nothing stored' && l.digest === digest, 'the fill to stop');
      assert.equal(failed.reason, 'unread');
      assert.ok((failed.bytes as number) < BOUND, `${String(failed.bytes)} bytes spooled`);
      await (
        await origin.request(`/blobs/${digest}`)
      ).closed; // the origin's connection is closed
      assert.deepEqual(await readdir(path.join(proxy.cacheDir, 'spool')), []);
      await bucketHoldsNothing();
    });

    it('refuses a manifest past MANIFEST_MAX_SIZE: 502 when announced, cut when not, by tag and by digest; and goes on serving', async () => {
      const announced = await client.fetch(`${REG}/v2/hostile/app/manifests/announced`);
      assert.equal(announced.status, 502);
      assert.match(announced.body.toString(), /larger than MANIFEST_MAX_SIZE/);
      const endlessTag = await readThenLeave(client, `${REG}/v2/hostile/app/manifests/latest`, 10 * MiB);
      assert.ok(endlessTag.error, 'the endless tag manifest is cut');
      assert.ok(endlessTag.bytes <= 64 * KiB + 256 * KiB, `${endlessTag.bytes} bytes relayed`);
      const digest = randomDigest();
      const byDigest = await readThenLeave(client, `${REG}/v2/hostile/app/manifests/${digest}`, 10 * MiB);
      assert.ok(byDigest.error, 'the endless manifest by digest is cut');
      assert.ok(byDigest.bytes <= 64 * KiB, `${byDigest.bytes} bytes relayed`);
      // A request's line is written when regcache sees its response close: for a client that left, that can
      // come after the client is done (seen under load), so each line is waited for.
      const line = (what: string, match: (l: LogLine) => boolean): Promise<LogLine> => proxy.waitForLog((l) => l.msg === 'request' && match(l), what);
      const tagLine = await line('the announced manifest', (l) => l.path === '/v2/hostile/app/manifests/announced');
      assert.equal(tagLine.status, 502);
      assert.match(String(tagLine.reason), /^larger than MANIFEST_MAX_SIZE: upstream announced 5242880 bytes/);
      const cutTag = await line('the endless tag manifest', (l) => l.path === '/v2/hostile/app/manifests/latest');
      assert.match(String(cutTag.error), /larger than MANIFEST_MAX_SIZE/);
      const cutDigest = await line('the endless manifest by digest', (l) => l.digest === digest);
      assert.equal(cutDigest.cache, 'BYPASS');
      assert.match(String(cutDigest.reason), /^larger than MANIFEST_MAX_SIZE: /);
      assert.equal((await request(`${proxy.proxyUrl}/healthz`)).statusCode, 200, 'still serving');
    });

    it('answers an endless token response 502 with a log line (the mirror asks for tokens itself)', async () => {
      const digest = randomDigest();
      const res = await request(`http://127.0.0.1:${proxy.mirrorPort}/v2/hostile/tok/blobs/${digest}?ns=registry.test`);
      const body = await res.body.text();
      assert.equal(res.statusCode, 502, body);
      assert.match(body, /token response of registry.test is larger than 65536 bytes/);
      const line = await proxy.waitForLog((l) => l.msg === 'request' && l.digest === digest, 'the request line');
      assert.match(String(line.error), /token response of registry\.test is larger than 65536 bytes/);
    });

    it('relays an endless tags list without holding it, and closes upstream when the client leaves', async () => {
      const got = await readThenLeave(client, `${REG}/v2/hostile/app/tags/list`, 8 * MiB);
      assert.ok(got.bytes >= 8 * MiB);
      await (
        await origin.request('/tags/list')
      ).closed;
      assert.equal((await request(`${proxy.proxyUrl}/healthz`)).statusCode, 200);
    });
  });
}
