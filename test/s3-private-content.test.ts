// tier: unit
// Private content on the S3 store, in process over the in-memory bucket (test/support/fake-bucket.ts): the
// scenario of test/support/s3-private-content.ts (against a real Ceph RGW: test/s3-private-content-rgw.test.ts),
// and the edges of the access facts: content not classified yet, objects under access/ regcache did not
// write, the access of content another replica holds, and markers removed with their entry.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, describe, it } from 'node:test';
import { S3Store } from '../src/cache/s3/s3-store.js';
import { createLogger } from '../src/telemetry/log.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeBucket } from './support/fake-bucket.js';
import { privateContentOnS3 } from './support/s3-private-content.js';

const log = createLogger('silent', false);

describe('private content on the S3 store (in-memory bucket)', () => {
  const tmp = new TmpDirs();
  const stores: S3Store[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    await tmp.cleanup();
  });

  it('holds private what its origin refused anonymously, on every replica, and serves it to no anonymous client; public anywhere wins', async () => {
    await privateContentOnS3(new FakeBucket(), 'fleet/', () => tmp.make('regcache-s3-private'), stores);
  });
});

describe('access facts in the bucket, at the edges (in-memory bucket)', () => {
  const tmp = new TmpDirs();
  const stores: S3Store[] = [];
  after(async () => {
    for (const s of stores) await s.close();
    await tmp.cleanup();
  });
  const replica = async (bucket: FakeBucket): Promise<S3Store> => {
    const { store } = await S3Store.open({ bucket, prefix: 'fleet/', dir: await tmp.make('regcache-s3-access'), log, probeMs: 60_000, refreshMs: 600_000 });
    stores.push(store);
    return store;
  };
  const put = async (store: S3Store, seed: string) => {
    const data = Buffer.from(seed);
    const digest = 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
    await store.putVerified({ kind: 'blob', digest, size: data.length, mediaType: 'application/octet-stream' }, data, {
      ref: 'private.test/alice/secret',
      tag: null,
    });
    return digest;
  };

  it('leaves content not yet classified unknown on every replica, and reads past objects under access/ it did not write', async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket)];
    const digest = await put(a, 'not classified yet');
    await bucket.put(`${a.layout.accessOf('blob', digest)}not-a-fact`, Buffer.alloc(0)); // something else wrote there
    assert.ok(await b.lookup('blob', digest));
    assert.equal(b.index.get('blob', digest)?.access, undefined, 'found by another replica: still unknown');
    assert.equal((await replica(bucket)).index.get('blob', digest)?.access, undefined, 'read by a new replica: still unknown');
  });

  it("records the access of content this replica does not hold in memory (another replica's), in the bucket", async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket)];
    const digest = await put(a, 'stored by a');
    assert.equal(b.index.get('blob', digest), undefined);
    await b.index.setAccess('blob', digest, 'private');
    assert.ok(bucket.objects.has(a.layout.accessMarker('blob', digest, 'private')));
    await a.index.refresh();
    assert.equal(a.index.get('blob', digest)?.access, 'private');
  });

  it("removes an entry's access and repository markers with it: content stored again is asked about again", async () => {
    const bucket = new FakeBucket();
    const a = await replica(bucket);
    const digest = await put(a, 'removed then stored again');
    await a.index.setAccess('blob', digest, 'public');
    await a.remove('blob', digest);
    assert.deepEqual(
      [...bucket.objects.keys()].filter((k) => k.includes(digest.slice('sha256:'.length))),
      [],
      'nothing of it left in the bucket',
    );
    await put(a, 'removed then stored again');
    assert.equal(a.index.get('blob', digest)?.access, undefined, 'not public from before');
    assert.equal((await replica(bucket)).index.get('blob', digest)?.access, undefined);
  });
});
