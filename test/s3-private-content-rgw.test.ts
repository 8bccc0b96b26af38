// tier: e2e
// Private content on the S3 store against a real Ceph RADOS Gateway started by the test: the scenario of
// test/support/s3-private-content.ts over regcache's own S3 client (S3Bucket), so that the access markers
// are written, listed and read back as RGW keeps them. In process over the in-memory bucket:
// test/s3-private-content.test.ts.
import { after, before, describe, it } from 'node:test';
import { S3Bucket } from '../src/cache/s3/s3-bucket.js';
import type { S3Store } from '../src/cache/s3/s3-store.js';
import { startS3Server, type S3Server } from './harness/s3-server.js';
import { TmpDirs } from './harness/tmp.js';
import { privateContentOnS3 } from './support/s3-private-content.js';

const BUCKET = 'regcache-private';

describe('private content on the S3 store (Ceph RGW)', () => {
  const tmp = new TmpDirs();
  const stores: S3Store[] = [];
  let s3: S3Server;

  before(async () => {
    s3 = await startS3Server({ objectStore: 'memstore' });
    // S3Bucket takes its credentials from the AWS SDK's default chain, as in the server.
    for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION']) process.env[name] = s3.env[name];
  });
  after(async () => {
    for (const s of stores) await s.close();
    await s3?.stop();
    await tmp.cleanup();
  });

  it('holds private what its origin refused anonymously, on every replica, and serves it to no anonymous client; public anywhere wins', async () => {
    const bucket = await S3Bucket.create({ bucket: BUCKET, endpoint: s3.endpoint, forcePathStyle: true, display: `s3://${BUCKET}/cache/` });
    await privateContentOnS3(bucket, 'cache/', () => tmp.make('regcache-s3-private'), stores);
  });
});
