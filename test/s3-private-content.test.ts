// Private content on the S3 store, in process over the in-memory bucket (test/support/fake-bucket.ts): the
// scenario of test/support/s3-private-content.ts. Against a real Ceph RGW: test/s3-private-content-rgw.test.ts.
import { after, describe, it } from 'node:test';
import type { S3Store } from '../src/cache/s3/s3-store.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeBucket } from './support/fake-bucket.js';
import { privateContentOnS3 } from './support/s3-private-content.js';

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
