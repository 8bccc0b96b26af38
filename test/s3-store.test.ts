// tier: unit
// The S3 store and the fill locks in process, over an in-memory bucket (test/support/fake-bucket.ts):
// exactly one winner among replicas racing for a fill's lock, a lapsed lease taken over by exactly one,
// content invisible until verified (an upload aborted on failure leaves nothing), what one replica
// stored found by another at once and read back by range, one upstream fetch across replicas, and a
// bucket that goes down and comes back. End to end against a real S3 server: test/s3-fleet.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { BucketFillTable } from '../src/cache/s3/bucket-fill-table.js';
import { BucketLayout } from '../src/cache/s3/bucket-layout.js';
import { PART_SIZE } from '../src/cache/s3/bucket-spool.js';
import { StoreUnavailableError } from '../src/cache/content-store.js';
import { Fill } from '../src/cache/fill.js';
import { FillCoordinator } from '../src/cache/fill-coordinator.js';
import { FillLocks } from '../src/cache/s3/fill-lock.js';
import { Room } from '../src/cache/room.js';
import { S3Store } from '../src/cache/s3/s3-store.js';
import { createLogger } from '../src/telemetry/log.js';
import { waitFor } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeBucket } from './support/fake-bucket.js';

const log = createLogger('silent', false);
const NO_PROVENANCE = { ref: null, tag: null };
const PREFIX = 'fleet/';
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const settled = (fill: Fill): Promise<unknown> => (fill.settled ? Promise.resolve() : once(fill, 'settled'));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const KEY = { origin: 'registry.test', kind: 'blob' as const, digest: 'sha256:' + 'a'.repeat(64) };

describe('S3 store over an in-memory bucket', () => {
  const tmp = new TmpDirs();
  const stores: S3Store[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    await tmp.cleanup();
  });

  const replica = async (bucket: FakeBucket): Promise<S3Store> => {
    const { store } = await S3Store.open({ bucket, prefix: PREFIX, dir: await tmp.make('regcache-s3'), log, probeMs: 50, refreshMs: 60_000 });
    stores.push(store);
    return store;
  };
  const locks = (bucket: FakeBucket, owner: string, leaseMs = 10_000) => new FillLocks(bucket, new BucketLayout(PREFIX), { owner, leaseMs });

  it('gives a fill lock to exactly one of the replicas racing for it', async () => {
    const bucket = new FakeBucket();
    bucket.latencyMs = 5;
    const claims = await Promise.all(Array.from({ length: 8 }, (_, i) => locks(bucket, `r${i}`).acquire(KEY)));
    const leases = claims.filter((c) => 'lease' in c);
    assert.equal(leases.length, 1, 'one lease');
    for (const c of claims)
      if ('heldBy' in c)
        assert.equal(c.heldBy.owner, JSON.parse(bucket.objects.get((leases[0] as { lease: { key: string } }).lease.key)!.body.toString()).owner);
    for (const c of leases) c.lease.abandon();
  });

  it('lets exactly one replica take over a lease that lapsed, as the next generation', async () => {
    const bucket = new FakeBucket();
    const dead = await locks(bucket, 'dead', 200).acquire(KEY);
    assert.ok('lease' in dead);
    dead.lease.abandon(); // the replica died: nobody renews
    const early = await locks(bucket, 'early').acquire(KEY);
    assert.ok('heldBy' in early && early.heldBy.owner === 'dead', 'live until the lease lapses');
    await sleep(250);
    bucket.latencyMs = 5;
    const claims = await Promise.all(Array.from({ length: 6 }, (_, i) => locks(bucket, `r${i}`).acquire(KEY)));
    const leases = claims.flatMap((c) => ('lease' in c ? [c.lease] : []));
    assert.equal(leases.length, 1, 'one winner');
    assert.equal(leases[0]!.generation, 1);
    leases[0]!.abandon();
  });

  it("leaves one leader when the content's locks are deleted while a replica takes over (the soak's two overlapping fetches)", async () => {
    const bucket = new FakeBucket();
    const past = locks(bucket, 'past');
    for (let i = 0; i < 3; i++) {
      const claim = await past.acquire(KEY);
      assert.ok('lease' in claim);
      await claim.lease.release(); // generations 0..2, lapsed
    }
    // Replica Y reads generation 2, lapsed; before it creates 3, replica X removes the content (its locks
    // go with it) and claims the fill afresh: generation 0.
    let x: Awaited<ReturnType<FillLocks['acquire']>> | null = null;
    const get = bucket.get.bind(bucket);
    bucket.get = async (key) => {
      const body = await get(key);
      if (x === null) {
        x = { heldBy: { owner: 'racing', expires: 0, nonce: '' } };
        for (const o of await bucket.list(key.slice(0, key.lastIndexOf('/') + 1))) await bucket.delete(o.key);
        x = await locks(bucket, 'x').acquire(KEY);
      }
      return body;
    };
    const y = await locks(bucket, 'y').acquire(KEY);
    const claims = [x!, y] as Awaited<ReturnType<FillLocks['acquire']>>[];
    const leases = claims.flatMap((c) => ('lease' in c ? [c.lease] : []));
    assert.equal(leases.length, 1, 'one leader');
    assert.ok('heldBy' in y && y.heldBy.owner === 'x', 'the replica that yields names the leader');
    assert.equal((await locks(bucket, 'z').holder(KEY))?.owner, 'x', 'a follower finds the leader below the lapsed top');
    for (const l of leases) l.abandon();
  });

  it('renews a lease while it is held, and a released lock is claimed again as the next generation', async () => {
    const bucket = new FakeBucket();
    const held = await locks(bucket, 'holder', 150).acquire(KEY);
    assert.ok('lease' in held);
    await sleep(400); // longer than the lease: renewals keep it live
    assert.ok('heldBy' in (await locks(bucket, 'other').acquire(KEY)));
    await held.lease.release();
    const next = await locks(bucket, 'other').acquire(KEY);
    assert.ok('lease' in next && next.lease.generation === 1);
    next.lease.abandon();
  });

  it('uploads a fill in parts while it runs, invisible until verified; another replica then finds it and reads ranges', async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket)];
    const data = crypto.randomBytes(2 * PART_SIZE + 12345);
    const digest = digestOf(data);
    const body = new PassThrough();
    const fill = await Fill.start(a, 'blob', digest, 'application/x-test', data.length, body, { ref: 'registry.test/lib/app', tag: null });
    body.write(data.subarray(0, 2 * PART_SIZE + 100));
    for (let i = 0; i < 100 && bucket.count('uploadPart') < 2; i++) await sleep(10);
    assert.equal(bucket.count('uploadPart'), 2, 'whole parts uploaded while the fill runs');
    assert.equal(bucket.objects.has(a.layout.content(digest)), false, 'nothing readable before the digest is verified');
    assert.equal(await b.lookup('blob', digest), null);
    body.end(data.subarray(2 * PART_SIZE + 100));
    await settled(fill);
    assert.equal(fill.state, 'committed', fill.error?.message);
    assert.equal(bucket.uploads.size, 0);
    const found = await b.lookup('blob', digest);
    assert.deepEqual(found && { kind: found.kind, digest: found.digest, size: found.size, mediaType: found.mediaType }, {
      kind: 'blob',
      digest,
      size: data.length,
      mediaType: 'application/x-test',
    });
    assert.deepEqual(b.index.get('blob', digest)?.refs, ['registry.test/lib/app']);
    const file = (await b.open(found!))!;
    assert.equal(file.size, data.length);
    const buffer = Buffer.alloc(300_000);
    for (const at of [0, 300_000, PART_SIZE - 10, 5]) {
      const n = await file.read(buffer, buffer.length, at);
      assert.ok(buffer.subarray(0, n).equals(data.subarray(at, at + n)), `bytes at ${at}`);
    }
    // Sequential reads, as a HIT makes them, across a part boundary: one ranged GET serves them all.
    const gets = bucket.count('read');
    const chunk = Buffer.alloc(256 * 1024);
    for (let at = 1000; at <= 2 * PART_SIZE;) {
      const n = await file.read(chunk, Math.min(chunk.length, 2 * PART_SIZE + 1 - at), at);
      assert.ok(n > 0 && chunk.subarray(0, n).equals(data.subarray(at, at + n)), `bytes at ${at}`);
      at += n;
    }
    assert.equal(bucket.count('read') - gets, 1, 'one GET for the sequential reads');
    await file.close();
  });

  it("writes the origin's marker before the entry: a replica that finds the entry also finds where it came from", async () => {
    const bucket = new FakeBucket();
    const store = await replica(bucket);
    const written: string[] = [];
    const put = bucket.put.bind(bucket);
    bucket.put = (key, body, options) => (written.push(key), put(key, body, options));
    const data = Buffer.from('{"schemaVersion":2}');
    const digest = digestOf(data);
    await store.putVerified({ kind: 'manifest', digest, size: data.length, mediaType: 'application/x-test' }, data, {
      ref: 'registry.test/lib/app',
      tag: 'registry.test/lib/app:v1',
    });
    const order = [
      store.layout.ref('manifest', digest, 'registry.test/lib/app'),
      store.layout.entry('manifest', digest),
      store.layout.tag('registry.test/lib/app:v1'),
    ].map((k) => written.indexOf(k));
    assert.ok(
      order.every((at, i) => at >= 0 && (i === 0 || at > order[i - 1]!)),
      `marker, entry, tag in that order: ${written.join(' ')}`,
    );
  });

  it('aborts the upload of a fill that fails: no object, no entry, no upload left', async () => {
    const bucket = new FakeBucket();
    const store = await replica(bucket);
    const data = crypto.randomBytes(PART_SIZE + 1000);
    const wrong = await Fill.start(store, 'blob', 'sha256:' + 'b'.repeat(64), 'application/x-test', data.length, Readable.from([data]), NO_PROVENANCE);
    await settled(wrong);
    assert.equal(wrong.error?.reason, 'digest-mismatch');
    const body = new PassThrough();
    const cut = await Fill.start(store, 'blob', digestOf(data), 'application/x-test', data.length, body, NO_PROVENANCE);
    body.write(data.subarray(0, PART_SIZE + 10));
    await sleep(50);
    body.destroy(new Error('upstream reset'));
    await settled(cut);
    assert.equal(cut.error?.reason, 'upstream');
    assert.equal(bucket.count('abortUpload'), 2);
    assert.equal(bucket.uploads.size, 0, 'every upload aborted');
    assert.deepEqual(
      [...bucket.objects.keys()].filter((k) => !k.startsWith(`${PREFIX}fills/`)),
      [],
      'nothing stored',
    );
  });

  it('fetches once across two replicas: the other waits for the commit and serves it stored', async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket)];
    const data = crypto.randomBytes(300_000);
    const key = { origin: 'registry.test', kind: 'blob' as const, digest: digestOf(data) };
    const coordinatorOf = (store: S3Store, owner: string) =>
      new FillCoordinator(
        {
          store,
          room: new Room(store, 1e12),
          fills: new BucketFillTable(locks(bucket, owner), { stored: async (k) => (await store.lookup(k.kind, k.digest)) !== null, pollMs: 20 }),
        },
        log,
      );
    let fetches = 0;
    const slowBody = () => {
      fetches++;
      const body = new PassThrough();
      void (async () => {
        for (let at = 0; at < data.length; at += 50_000) {
          body.write(data.subarray(at, at + 50_000));
          await sleep(20);
        }
        body.end();
      })();
      return Promise.resolve({ answer: 'ok', body: { stream: body, mediaType: 'application/x-test', size: data.length } });
    };
    const admit = () => Promise.resolve(true);
    const [first, second] = await Promise.all([
      coordinatorOf(a, 'a').fill(key, NO_PROVENANCE, slowBody, admit),
      sleep(5).then(() => coordinatorOf(b, 'b').fill(key, NO_PROVENANCE, slowBody, admit)),
    ]);
    assert.equal(fetches, 1, 'one upstream fetch');
    assert.equal(first.kind, 'started');
    assert.equal(second.kind, 'ended', 'the other replica was told to look in the store');
    assert.ok(await b.lookup('blob', key.digest), 'and it is there');
    if (first.kind === 'started') first.fill.release();
  });

  it('does not fetch again what an earlier leader stored after the caller looked (a claim of a later generation)', async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket)];
    const data = crypto.randomBytes(1000);
    const key = { origin: 'registry.test', kind: 'blob' as const, digest: digestOf(data) };
    const lockA = locks(bucket, 'a');
    const coordinator = new FillCoordinator(
      {
        store: a,
        room: new Room(a, 1e12),
        fills: new BucketFillTable(lockA, { stored: async (k) => (await a.lookup(k.kind, k.digest)) !== null, pollMs: 20 }),
      },
      log,
    );
    const fetched = () => Promise.resolve({ answer: 'ok', body: { stream: Readable.from([data]), mediaType: 'application/x-test', size: data.length } });
    const led = await coordinator.fill(key, NO_PROVENANCE, fetched, null);
    assert.equal(led.kind, 'started');
    if (led.kind === 'started') {
      await settled(led.fill);
      led.fill.release();
    }
    for (let i = 0; i < 100 && (await lockA.holder(key)) !== null; i++) await sleep(10); // released after the commit
    const claim = await new BucketFillTable(locks(bucket, 'b'), { stored: async (k) => (await b.lookup(k.kind, k.digest)) !== null, pollMs: 20 }).claim(
      key,
      true,
    );
    assert.deepEqual(claim, { stored: true });
  });

  it('lets go of a lease it took when the bucket fails while it asks whether the content was stored meanwhile', async () => {
    const bucket = new FakeBucket();
    const lapsed = await locks(bucket, 'dead', 200).acquire(KEY);
    assert.ok('lease' in lapsed);
    await lapsed.lease.release(); // generation 0 lapsed: the next claim takes generation 1 and asks the store
    const lockB = locks(bucket, 'b', 300);
    let asked = 0;
    const table = new BucketFillTable(lockB, {
      stored: () => {
        asked++;
        return Promise.reject(new Error('the gateway is down'));
      },
      pollMs: 20,
    });
    await assert.rejects(table.claim(KEY, true), /the gateway is down/);
    assert.equal(asked, 1);
    // Renewed for ever, the lock would stay live with no fill behind it: let go, it is lapsed at once.
    await waitFor(async () => (await lockB.holder(KEY)) === null, { timeoutMs: 2_000, what: 'the lock to be lapsed' });
    await sleep(400); // more than a lease, so more than three renewal periods: none may revive it
    assert.equal(await lockB.holder(KEY), null, 'no renewal revived it');
  });

  it("takes over a fill whose leader's lease lapsed", async () => {
    const bucket = new FakeBucket();
    const b = await replica(bucket);
    const dead = await locks(bucket, 'dead', 200).acquire(KEY);
    assert.ok('lease' in dead);
    dead.lease.abandon();
    const table = new BucketFillTable(locks(bucket, 'b'), { stored: async (k) => (await b.lookup(k.kind, k.digest)) !== null, pollMs: 20 });
    const started = Date.now();
    const claim = await table.claim(KEY, true);
    assert.ok('lead' in claim, 'led after the lease lapsed');
    assert.ok(Date.now() - started >= 150, 'not before');
    claim.lead.ended();
  });

  it('keeps a live fill lock through a removal: a stale replica waits rather than leading the same fill at generation 0', async () => {
    // Issue 25: `regcache cache rm` on replica 1 while it led a fill deleted every lock generation, the
    // live one included; replica 2, whose index was stale, created generation 0 and fetched too, and
    // replica 1's renewal wrote its own generation back: two leaders, two upstream fetches.
    const bucket = new FakeBucket();
    const [one, two] = [await replica(bucket), await replica(bucket)];
    const data = crypto.randomBytes(1000);
    const digest = digestOf(data);
    const key = { origin: 'registry.test', kind: 'blob' as const, digest };
    await one.putVerified({ kind: 'blob', digest, size: data.length, mediaType: 'application/x-test' }, data, NO_PROVENANCE); // stored once
    const lockOne = locks(bucket, 'one', 150);
    const led = await lockOne.acquire(key); // replica 1 fills it again (a request after an earlier rm)
    assert.ok('lease' in led);
    await one.remove('blob', digest);
    assert.equal((await lockOne.holder(key))?.owner, 'one', 'the live lock survives the removal');
    const table = new BucketFillTable(locks(bucket, 'two'), { stored: async (k) => (await two.lookup(k.kind, k.digest)) !== null, pollMs: 20 });
    const claimed = await Promise.race([table.claim(key, true), sleep(400).then(() => 'waiting' as const)]);
    assert.equal(claimed, 'waiting', 'replica 2 waits for the leader (the lease was renewed meanwhile)');
    const generations = (await bucket.list(new BucketLayout(PREFIX).fillLocks(key.origin, key.kind, key.digest))).length;
    assert.equal(generations, 1, 'one generation: nobody created another');
    await led.lease.release();
  });

  it('loses a lease whose lock was deleted under it rather than writing it back', async () => {
    const bucket = new FakeBucket();
    const held = await locks(bucket, 'holder', 90).acquire(KEY);
    assert.ok('lease' in held);
    await bucket.delete(held.lease.key); // a removal from an older build, or by hand
    await sleep(200); // several renewal ticks
    assert.equal(bucket.objects.has(held.lease.key), false, 'not revived by a renewal');
    await held.lease.release();
    assert.equal(bucket.objects.has(held.lease.key), false, 'nor by the release');
  });

  it('never leaves an entry without its bytes when a removal races another replica committing the same content', async () => {
    const layout = new BucketLayout(PREFIX);
    const orphanEntries = (bucket: FakeBucket) =>
      [...bucket.objects.keys()]
        .filter((k) => k.startsWith(`${PREFIX}entries/`))
        .filter((k) => !bucket.objects.has(layout.content(`sha256:${k.split('/').at(-1)}`)));
    for (const when of ['a fill holds the lock', 'the commit lands between the lock check and the delete'] as const) {
      const bucket = new FakeBucket();
      const [one, two] = [await replica(bucket), await replica(bucket)];
      const data = crypto.randomBytes(700);
      const content = { kind: 'blob' as const, digest: digestOf(data), size: data.length, mediaType: 'application/x-test' };
      await one.putVerified(content, data, NO_PROVENANCE);
      let lease: { release(): Promise<void> } | null = null;
      const commitOnTwo = async () => {
        if (when === 'a fill holds the lock') {
          const claimed = await locks(bucket, 'two').acquire({ origin: 'registry.test', kind: 'blob', digest: content.digest });
          assert.ok('lease' in claimed);
          lease = claimed.lease;
        }
        await two.putVerified(content, data, NO_PROVENANCE);
      };
      // Replica 2 commits at the chosen moment of replica 1's removal.
      const trigger = when === 'a fill holds the lock' ? layout.entry('blob', content.digest) : layout.entry('manifest', content.digest);
      const [del, head] = [bucket.delete.bind(bucket), bucket.head.bind(bucket)];
      let fired = false;
      const fire = async (k: string) => {
        if (k === trigger && !fired) {
          fired = true;
          await commitOnTwo();
        }
      };
      bucket.delete = async (k) => (await del(k), await fire(k));
      bucket.head = async (k) => {
        const found = await head(k);
        await fire(k);
        return found;
      };
      await one.remove('blob', content.digest);
      assert.ok(fired, when);
      assert.deepEqual(orphanEntries(bucket), [], `${when}: every entry left names bytes that exist`);
      await (lease as { release(): Promise<void> } | null)?.release();
    }
  });

  it("aborts a failed fill's upload once the bucket is back when it was down at the failure", async () => {
    // Issue 25: a fill failed because the bucket was down; its abort failed the same way and nobody tried again.
    const bucket = new FakeBucket();
    const store = await replica(bucket);
    const data = crypto.randomBytes(PART_SIZE + 5000);
    const body = new PassThrough();
    const fill = await Fill.start(store, 'blob', digestOf(data), 'application/x-test', data.length, body, NO_PROVENANCE);
    body.write(data.subarray(0, PART_SIZE + 10));
    for (let i = 0; i < 100 && bucket.count('uploadPart') < 1; i++) await sleep(10);
    assert.equal(bucket.uploads.size, 1, 'an upload under way');
    bucket.down = true;
    body.end(data.subarray(PART_SIZE + 10));
    await settled(fill);
    assert.notEqual(fill.state, 'committed');
    assert.equal(bucket.uploads.size, 1, 'its abort failed too');
    bucket.down = false;
    for (let i = 0; i < 100 && bucket.uploads.size > 0; i++) await sleep(20);
    assert.equal(bucket.uploads.size, 0, 'aborted after a probe found the bucket again');
    assert.equal(bucket.objects.has(store.layout.content(digestOf(data))), false);
  });

  it('throws StoreUnavailableError while the bucket is down, /readyz-style reachability follows, and recovers', async () => {
    const bucket = new FakeBucket();
    const store = await replica(bucket);
    bucket.down = true;
    await assert.rejects(store.lookup('blob', 'sha256:' + 'c'.repeat(64)), StoreUnavailableError);
    assert.equal(store.reachable, false);
    bucket.down = false;
    for (let i = 0; i < 50 && !store.reachable; i++) await sleep(20);
    assert.equal(store.reachable, true, 'a probe found it again');
    assert.equal(await store.lookup('blob', 'sha256:' + 'c'.repeat(64)), null);
  });
});
