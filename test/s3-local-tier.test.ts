// tier: unit
// The S3 store's local tier (LOCAL_TIER_MAX_SIZE, decision #89) over an in-memory bucket: a warm replica
// reads hot content from local disk, not the bucket; the tier keeps to its bound; a local copy that no
// longer hashes to its digest is caught by a verified read and only the copy is dropped; a copy whose
// entry the bucket no longer has goes at the replica's next refresh.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import { PassThrough, Writable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { contentPath } from '../src/cache/content-files.js';
import type { ContentFile, StoredContent } from '../src/cache/content-store.js';
import { Fill } from '../src/cache/fill.js';
import { FillCoordinator } from '../src/cache/fill-coordinator.js';
import { LocalFillTable } from '../src/cache/fill-table.js';
import { Room } from '../src/cache/room.js';
import { S3Store } from '../src/cache/s3/s3-store.js';
import { CorruptContentError, VerifiedFileReader } from '../src/cache/verified-file-reader.js';
import { createLogger } from '../src/telemetry/log.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeBucket } from './support/fake-bucket.js';

const log = createLogger('silent', false);
const PREFIX = 'fleet/';
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const blobOf = (data: Buffer): StoredContent => ({ kind: 'blob', digest: digestOf(data), size: data.length, mediaType: 'application/x-test' });

/** A HIT as the content responder makes it: the whole file, verified (VERIFY_ON_READ=true). */
async function hit(file: ContentFile, content: StoredContent, verify = true): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      chunks.push(Buffer.from(chunk));
      done();
    },
  });
  await new VerifiedFileReader(file, { size: content.size, digest: content.digest, start: 0, end: content.size - 1 }).sendTo(sink, {
    verify,
    onBytes: () => undefined,
  });
  return Buffer.concat(chunks);
}

describe('S3 store local tier', () => {
  const tmp = new TmpDirs();
  const stores: S3Store[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    await tmp.cleanup();
  });

  const replica = async (bucket: FakeBucket, localTierBytes = 0): Promise<S3Store> => {
    const { store } = await S3Store.open({
      bucket,
      prefix: PREFIX,
      dir: await tmp.make('regcache-tier'),
      log,
      probeMs: 60_000,
      refreshMs: 60_000,
      localTierBytes,
    });
    stores.push(store);
    return store;
  };

  /** Stores `data` as a blob through replica `store`'s fill. */
  const fill = async (store: S3Store, data: Buffer): Promise<StoredContent> => {
    const body = new PassThrough();
    const f = await Fill.start(store, 'blob', digestOf(data), 'application/x-test', data.length, body, { ref: 'registry.test/lib/app', tag: null });
    body.end(data);
    if (!f.settled) await new Promise((resolve) => f.once('settled', resolve));
    assert.equal(f.state, 'committed', f.error?.message);
    f.release();
    return blobOf(data);
  };

  const serve = async (store: S3Store, content: StoredContent): Promise<Buffer> => {
    const found = await store.lookup(content.kind, content.digest);
    assert.ok(found, 'found');
    return hit((await store.open(found))!, found);
  };

  /** Replica A (no tier) stores `size` random bytes; replica B (a tier) serves them once: its first HIT. */
  const copied = async (size: number) => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket, 64 * 1024 * 1024)];
    const data = crypto.randomBytes(size);
    const content = await fill(a, data);
    assert.ok((await serve(b, content)).equals(data), 'first HIT: the bytes');
    return { bucket, a, b, data, content, file: contentPath(b.tier!.dir, content.digest) };
  };

  it('reads content from the bucket once: the first HIT leaves a verified local copy, the second reads no bucket byte', async () => {
    const { bucket, b, data, content } = await copied(700_000);
    assert.equal(b.tier!.has(content.digest), true, 'a local copy');
    const [reads, heads, gets] = [bucket.count('read'), bucket.count('head'), bucket.count('get')];
    assert.ok((await serve(b, content)).equals(data), 'second HIT: the bytes');
    assert.equal(bucket.count('read') - reads, 0, 'no ranged GET');
    assert.equal(bucket.count('head') - heads, 0, 'no HEAD');
    assert.equal(bucket.count('get') - gets, 0, 'no GET');
  });

  it("keeps a fill's spool as the local copy of the replica that fetched it", async () => {
    const bucket = new FakeBucket();
    const a = await replica(bucket, 64 * 1024 * 1024);
    const data = crypto.randomBytes(300_000);
    const content = await fill(a, data);
    assert.equal(a.tier!.has(content.digest), true);
    const reads = bucket.count('read');
    assert.ok((await serve(a, content)).equals(data));
    assert.equal(bucket.count('read') - reads, 0, 'served from the local copy');
  });

  it('leaves no copy from a read that did not run through the whole content, nor from bytes that do not hash to the digest', async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket, 64 * 1024 * 1024)];
    const data = crypto.randomBytes(300_000);
    const content = await fill(a, data);
    const file = (await b.open(content))!;
    const buffer = Buffer.alloc(1000);
    await file.read(buffer, 1000, 5000); // a range
    await file.close();
    assert.equal(b.tier!.has(content.digest), false, 'a range leaves no copy');
    const rotten = bucket.objects.get(a.layout.content(content.digest))!.body;
    rotten.writeUInt8(rotten.readUInt8(10) ^ 0xff, 10); // rotten in the bucket
    await assert.rejects(hit((await b.open(content))!, content), CorruptContentError);
    assert.equal(b.tier!.has(content.digest), false, 'bytes that do not hash to the digest never become a copy');
    assert.deepEqual(await fs.readdir(`${b.tier!.dir}/incoming`), [], 'nothing left behind');
  });

  it('stays within its bound, least recently used first', async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket, 250_000)];
    const blobs = [crypto.randomBytes(100_000), crypto.randomBytes(100_000), crypto.randomBytes(100_000)];
    const contents = [];
    for (const data of blobs) contents.push(await fill(a, data));
    await serve(b, contents[0]!);
    await serve(b, contents[1]!);
    await serve(b, contents[0]!); // 0 is now the most recently used
    await serve(b, contents[2]!); // no room for three: 1 goes
    assert.deepEqual(
      contents.map((c) => b.tier!.has(c.digest)),
      [true, false, true],
    );
    assert.ok(b.tier!.totalBytes <= 250_000);
    const files = await fs.readdir(b.tier!.dir, { recursive: true, withFileTypes: true });
    assert.equal(files.filter((f) => f.isFile()).length, 2, 'two files on disk');
    const big = await fill(a, crypto.randomBytes(300_000));
    await serve(b, big);
    assert.equal(b.tier!.has(big.digest), false, 'larger than the bound: not kept');
  });

  it('detects a corrupt local copy on a verified read: the client is cut, only the copy is dropped, the next read is the bucket', async () => {
    const { bucket, a, b, data, content, file } = await copied(300_000);
    const bytes = await fs.readFile(file);
    bytes.writeUInt8(bytes.readUInt8(1234) ^ 0x01, 1234);
    await fs.writeFile(file, bytes);
    const coordinator = new FillCoordinator({ store: b, room: new Room(b, 1e12), fills: new LocalFillTable() }, log);
    const body = (await coordinator.read(content, { ref: null, tag: null }, { redirect: false }, () => Promise.resolve(true)))!;
    const error = await body
      .sendTo(new PassThrough().resume(), { start: 0, end: null }, () => undefined)
      .then(
        () => null,
        (err: Error) => err,
      );
    assert.ok(error instanceof CorruptContentError, 'VERIFY_ON_READ catches the flipped byte (and the coordinator drops what it read)');
    for (let i = 0; i < 100 && b.tier!.has(content.digest); i++) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(b.tier!.has(content.digest), false, 'the copy is dropped');
    assert.ok(b.index.get('blob', content.digest), 'the entry stays');
    assert.ok(bucket.objects.has(a.layout.content(content.digest)), "the bucket's bytes stay");
    const reads = bucket.count('read');
    assert.ok((await serve(b, content)).equals(data), 'the next read: the right bytes');
    assert.equal(bucket.count('read') - reads, 1, 'from the bucket');
    assert.equal(b.tier!.has(content.digest), true, 'and a good copy again');
  });

  it('drops the local copy of an entry removed from the bucket once the index learns of it (refresh)', async () => {
    const { a, b, content, file } = await copied(200_000);
    await fs.access(file);
    await a.remove('blob', content.digest); // another replica removes it (as the fleet's sweep does)
    assert.equal(b.tier!.has(content.digest), true, 'not known here yet');
    await b.refresh();
    assert.equal(b.index.get('blob', content.digest), undefined);
    assert.equal(b.tier!.has(content.digest), false, 'the copy goes with the entry');
    await assert.rejects(fs.access(file), /ENOENT/);
    // A removal on the replica itself drops its copy at once.
    const other = await fill(b, crypto.randomBytes(1000));
    assert.equal(b.tier!.has(other.digest), true);
    await b.remove('blob', other.digest);
    assert.equal(b.tier!.has(other.digest), false);
  });

  it('keeps manifests read whole (readAll) as verified copies too', async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket, 64 * 1024 * 1024)];
    const data = Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [] }));
    const content: StoredContent = { kind: 'manifest', digest: digestOf(data), size: data.length, mediaType: 'application/vnd.oci.image.manifest.v1+json' };
    await a.putVerified(content, data, { ref: 'registry.test/lib/app', tag: null });
    assert.ok((await b.readAll((await b.lookup('manifest', content.digest))!))?.equals(data));
    const gets = bucket.count('get');
    assert.ok((await b.readAll(content))?.equals(data));
    assert.equal(bucket.count('get') - gets, 0, 'the second read is local');
  });

  it('wipes the tier at start', async () => {
    const bucket = new FakeBucket();
    const dir = await tmp.make('regcache-tier');
    const open = async () => (await S3Store.open({ bucket, prefix: PREFIX, dir, log, probeMs: 60_000, refreshMs: 60_000, localTierBytes: 1e9 })).store;
    const first = await open();
    const content = await fill(first, crypto.randomBytes(1000));
    await first.close();
    const second = await open();
    stores.push(second);
    assert.equal(second.tier!.has(content.digest), false);
    await assert.rejects(fs.access(contentPath(second.tier!.dir, content.digest)), /ENOENT/);
  });
});
