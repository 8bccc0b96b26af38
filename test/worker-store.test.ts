// tier: unit
// The store shared by worker processes (WORKERS > 1), in one process: the primary's LocalStore, DiskEvictor
// and StoreHost, and two "workers" (a worker backend and a FillCoordinator each) talking
// to it over fake channels that carry JSON copies of the messages a moment later, as Node's IPC does.
// One fetch for a content claimed by both workers, the follower streaming before the commit; a HIT in one
// worker right after the other committed; a leader gone mid-fill cutting its follower before the last
// byte and leaving nothing stored; eviction done once, seen by both replicas; index writes shared.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { FillCoordinator, type FillKey } from '../src/cache/fill-coordinator.js';
import { FillReader } from '../src/cache/fill-reader.js';
import type { Fill } from '../src/cache/fill.js';
import { DiskEvictor } from '../src/cache/local/disk-eviction.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import { Room } from '../src/cache/room.js';
import { spoolPrefixOf, StoreHost } from '../src/cache/workers/store-host.js';
import { connectWorkerBackend } from '../src/cache/workers/worker-backend.js';
import type { WorkerStore } from '../src/cache/workers/worker-store.js';
import { createLogger } from '../src/telemetry/log.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeFetches } from './support/fake-fetches.js';
import { channelPair } from './support/channel-pair.js';
import { Sink } from './support/sink.js';

const log = createLogger('silent', false);
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const FROM = { ref: 'registry.test/lib/app', tag: null };
const admitAll = () => Promise.resolve(true);
const MAX_BYTES = 1024 * 1024;

interface FakeWorker {
  id: number;
  store: WorkerStore;
  coordinator: FillCoordinator;
  gone: () => Promise<void>; // the process dies: its channel closes, the primary sees it exit
}

/** Reads a fill, noting how many bytes had arrived when the fill was still unverified. */
async function drain(fill: Fill): Promise<{ data: Buffer; beforeVerified: number }> {
  const sink = new Sink();
  let beforeVerified = 0;
  await new FillReader(fill, 0, null).sendTo(sink, (n) => {
    if (!fill.verified) beforeVerified += n;
  });
  return { data: sink.data, beforeVerified };
}

/** A fill of `data` led by `coordinator`, read to the end and settled. */
async function fillAndSettle(coordinator: FillCoordinator, key: FillKey, data: Buffer, upstream: FakeFetches): Promise<Fill> {
  const outcome = await coordinator.fill(key, FROM, upstream.ok(data.length), admitAll);
  assert.equal(outcome.kind, 'started');
  const fill = (outcome as { fill: Fill }).fill;
  upstream.bodies.at(-1)!.end(data);
  await drain(fill);
  if (!fill.settled) await once(fill, 'settled');
  return fill;
}

const waitUntil = async (probe: () => boolean, what: string): Promise<void> => {
  for (let i = 0; i < 400 && !probe(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
  assert.ok(probe(), what);
};

describe('one store for several worker processes (in-process, fake channels)', () => {
  const tmp = new TmpDirs();
  let dir: string;
  let store: LocalStore;
  let evictor: DiskEvictor;
  let host: StoreHost;
  let a: FakeWorker;
  let b: FakeWorker;

  async function worker(id: number): Promise<FakeWorker> {
    const [primaryEnd, workerEnd, cut] = channelPair();
    host.attach(id, primaryEnd);
    const backend = await connectWorkerBackend(workerEnd, { cacheDir: dir, cacheMaxSize: MAX_BYTES }, id);
    const coordinator = new FillCoordinator(backend, log);
    return {
      id,
      store: backend.store,
      coordinator,
      gone: () => {
        cut();
        return host.detach(id);
      },
    };
  }

  before(async () => {
    dir = await tmp.make('regcache-worker-store');
    store = await LocalStore.open(dir);
    evictor = new DiskEvictor(store, { maxBytes: MAX_BYTES, inactiveMs: 86_400_000 }, log);
    host = new StoreHost({ store, room: new Room(store, MAX_BYTES, evictor) }, log);
    a = await worker(1);
    b = await worker(2);
  });
  after(async () => {
    await evictor.stop();
    await store.close();
    await tmp.cleanup();
  });

  it('makes one fetch for a content both workers ask for; the follower streams it before the commit', async () => {
    const data = crypto.randomBytes(300_000);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const upstream = new FakeFetches();
    const first = await a.coordinator.fill(key, FROM, upstream.ok(data.length), admitAll);
    assert.equal(first.kind, 'started');
    upstream.bodies[0]!.write(data.subarray(0, 100_000));
    const second = await b.coordinator.fill(key, FROM, upstream.ok(data.length), admitAll);
    assert.equal(second.kind, 'joined', "worker 2 joined worker 1's fill");
    assert.equal(upstream.calls, 1, 'one fetch');
    const reading = [drain((first as { fill: Fill }).fill), drain((second as { fill: Fill }).fill)];
    setTimeout(() => upstream.bodies[0]!.end(data.subarray(100_000)), 50);
    const [leader, follower] = await Promise.all(reading);
    assert.ok(leader!.data.equals(data));
    assert.ok(follower!.data.equals(data), 'the follower got every byte');
    assert.ok(follower!.beforeVerified > 0, 'the follower streamed bytes before the fill was verified');
    await waitUntil(() => b.store.index.get('blob', key.digest) !== undefined, 'the commit reached worker 2');
    assert.equal(store.index.get('blob', key.digest)?.size, data.length, "stored once, in the primary's index");
  });

  it("goes on with a fill of unknown length while another worker's client reads it, and gives it up once none does", async () => {
    const body = new PassThrough();
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: 'sha256:' + crypto.randomBytes(32).toString('hex') };
    const fetch = () => Promise.resolve({ answer: null, body: { stream: body, mediaType: 'application/octet-stream', size: null } });
    const led = await a.coordinator.fill(key, FROM, fetch, admitAll);
    assert.equal(led.kind, 'started');
    const leader = (led as { fill: Fill }).fill;
    body.write(crypto.randomBytes(10_000));
    const joined = await b.coordinator.fill(key, FROM, fetch, admitAll);
    assert.equal(joined.kind, 'joined', "worker 2 follows worker 1's fill");
    leader.release(); // worker 1's client leaves; worker 2's still reads
    assert.equal(body.destroyed, false, 'the fill goes on for the other worker');
    body.write(crypto.randomBytes(10_000));
    const settled = once(leader, 'settled');
    (joined as { fill: Fill }).fill.release(); // and now worker 2's client leaves too
    await settled;
    assert.equal(leader.error?.reason, 'unread');
    assert.ok(body.destroyed, 'the upstream body was closed');
  });

  it('answers a HIT in one worker right after the other committed', async () => {
    const data = crypto.randomBytes(10_000);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const fill = await fillAndSettle(a.coordinator, key, data, new FakeFetches());
    assert.equal(fill.state, 'committed');
    const body = await b.coordinator.read(key, FROM, { redirect: false }, () => Promise.resolve(true));
    assert.ok(body, 'worker 2 finds it stored');
    assert.equal(body.size, data.length);
    await body.close();
  });

  it('cuts the follower before the last byte when the leading worker dies; nothing is stored, its spool is removed', async () => {
    const c = await worker(3);
    const data = crypto.randomBytes(200_000);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const upstream = new FakeFetches();
    const led = await c.coordinator.fill(key, FROM, upstream.ok(data.length), admitAll);
    assert.equal(led.kind, 'started');
    upstream.bodies[0]!.write(data.subarray(0, 150_000));
    const joined = await b.coordinator.fill(key, FROM, upstream.ok(data.length), admitAll);
    assert.equal(joined.kind, 'joined');
    let received = 0;
    const failed = new FillReader((joined as { fill: Fill }).fill, 0, null)
      .sendTo(new Sink(), (n) => (received += n))
      .then(
        () => [new Error('completed')],
        (err: Error) => [err],
      );
    await waitUntil(() => received > 0, 'the follower read some bytes');
    await c.gone();
    upstream.bodies[0]!.destroy(); // what was left of the dead process
    (led as { fill: Fill }).fill.release();
    const [error] = (await failed) as [Error & { reason?: string }];
    assert.equal(error.reason, 'abandoned');
    assert.ok(received < data.length, `cut before the end (${received} of ${data.length})`);
    assert.equal(store.index.get('blob', key.digest), undefined, 'nothing stored');
    const spools = await readdir(path.join(dir, 'spool'));
    assert.deepEqual(
      spools.filter((n) => n.startsWith(`fill-${spoolPrefixOf(3)}`)),
      [],
      "the dead worker's spool is gone",
    );
    // The next request leads a new fill.
    const retry = await b.coordinator.fill(key, FROM, upstream.ok(data.length), admitAll);
    assert.equal(retry.kind, 'started');
    upstream.bodies[1]!.end(data);
    assert.ok((await drain((retry as { fill: Fill }).fill)).data.equals(data));
  });

  it('evicts once, in the primary, within CACHE_MAX_SIZE, and both replicas see it', async () => {
    const upstream = new FakeFetches();
    const digests: string[] = [];
    for (let i = 0; i < 8; i++) {
      const data = crypto.randomBytes(200_000);
      const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
      digests.push(key.digest);
      await fillAndSettle((i % 2 === 0 ? a : b).coordinator, key, data, upstream);
    }
    await evictor.enforce();
    assert.ok(store.index.totalBytes <= MAX_BYTES, `${store.index.totalBytes} <= ${MAX_BYTES}`);
    await waitUntil(() => a.store.index.totalBytes === store.index.totalBytes && b.store.index.totalBytes === store.index.totalBytes, 'the replicas follow');
    assert.equal(a.store.index.get('blob', digests[0]!), undefined, 'the oldest went, for every worker');
  });

  it('shares index writes: a tag pointer set in one worker is read in the other', async () => {
    const digest = digestOf(Buffer.from('a manifest'));
    await a.store.putVerified({ kind: 'manifest', digest, size: 10, mediaType: 'application/vnd.oci.image.manifest.v1+json' }, Buffer.from('a manifest'), {
      ref: 'registry.test/lib/app',
      tag: 'registry.test/lib/app:v1',
    });
    await a.store.index.setPointer('registry.test/lib/app:v1|', digest);
    await waitUntil(() => b.store.index.pointer('registry.test/lib/app:v1|')?.digest === digest, 'the pointer reached worker 2');
    assert.equal(b.store.index.taggedManifest('registry.test/lib/app:v1')?.digest, digest);
    assert.ok(await b.store.lookup('manifest', digest));
  });
});
