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
import { request } from 'undici';
import type { Backend } from '../src/cache/backend.js';
import { FillCoordinator, type Fetched, type FillKey } from '../src/cache/fill-coordinator.js';
import { FillReader } from '../src/cache/fill-reader.js';
import { FillError, type Fill } from '../src/cache/fill.js';
import { LocalFillTable } from '../src/cache/fill-table.js';
import { openLocalBackend } from '../src/cache/local/local-backend.js';
import type { LocalStore } from '../src/cache/local/local-store.js';
import { Room } from '../src/cache/room.js';
import { createLogger } from '../src/telemetry/log.js';
import { BodyTooLargeError, readBounded } from '../src/upstream/bounded-body.js';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { createTestCA } from './harness/pki.js';
import { startRegcache, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { ProxyClient } from './support/proxy-client.js';
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
    assert.equal(outcome.fill.state, 'committed');
    assert.ok(await backend.store.lookup('blob', digestOf(data)));
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
