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
import { waitFor } from './harness/proc.js';
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

  /** Holds the bucket's first answer that `match`es until released: a refresh caught between reading and applying. */
  const hold = (bucket: FakeBucket, match: (op: 'list' | 'get', key: string) => boolean) => {
    let release: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (release = resolve));
    let held = 0;
    const [list, get] = [bucket.list.bind(bucket), bucket.get.bind(bucket)];
    bucket.list = async (prefix) => {
      const answer = await list(prefix);
      if (held === 0 && match('list', prefix)) (held++, await released);
      return answer;
    };
    bucket.get = async (key) => {
      const answer = await get(key);
      if (held === 0 && match('get', key)) (held++, await released);
      return answer;
    };
    return { release, held: () => held };
  };

  it('keeps public what it learned while a refresh was reading older access markers', async () => {
    const bucket = new FakeBucket();
    const a = await replica(bucket);
    const digest = await put(a, 'private at one origin, then public at another');
    await a.index.setAccess('blob', digest, 'private');
    const gate = hold(bucket, (op, key) => op === 'list' && key === a.layout.access);
    const refreshing = a.index.refresh();
    await waitFor(() => Promise.resolve(gate.held() === 1), { timeoutMs: 5_000, intervalMs: 5, what: 'the refresh to have listed the markers' });
    await a.index.setAccess('blob', digest, 'public');
    gate.release();
    await refreshing;
    assert.equal(a.index.get('blob', digest)?.access, 'public', 'the listing from before the public marker does not take it back');
    await a.index.refresh();
    assert.equal(a.index.get('blob', digest)?.access, 'public', 'and the next refresh reads both markers: public');
  });

  it("keeps what it learned of an entry while a refresh was reading that entry's object", async () => {
    const bucket = new FakeBucket();
    const [a, b] = [await replica(bucket), await replica(bucket)];
    const digest = await put(b, 'stored by another replica');
    await b.index.setAccess('blob', digest, 'private'); // what a's listing will read
    const gate = hold(bucket, (op, key) => op === 'get' && key === a.layout.entry('blob', digest));
    const refreshing = a.index.refresh();
    await waitFor(() => Promise.resolve(gate.held() === 1), { timeoutMs: 5_000, intervalMs: 5, what: "the refresh to be reading the entry's object" });
    await b.index.setAccess('blob', digest, 'public'); // after a's listing: public at another origin
    assert.ok(await a.lookup('blob', digest)); // reads the entry and its markers (only the refresh's read is held)
    assert.equal(a.index.get('blob', digest)?.access, 'public');
    gate.release();
    await refreshing;
    assert.equal(a.index.get('blob', digest)?.access, 'public', "the refresh's older facts do not replace the entry");
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
