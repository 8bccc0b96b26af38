// tier: unit
// A fill's spool into a bucket (cache/s3/bucket-spool.ts) when the bucket is down as the first part
// starts: the multipart upload's creation fails before any part has read its bytes from disk and awaited
// it. That failure is the fill's (sync rejects with it; nothing to abort), never an unhandled rejection:
// the 60-minute soak's second run had a replica end with `crashed` (origin unhandledRejection,
// "CreateMultipartUpload failed ... ECONNREFUSED") while the gateway was stopped.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, describe, it } from 'node:test';
import { createSpool, openSpoolDir } from '../src/cache/content-files.js';
import { BucketSpool } from '../src/cache/s3/bucket-spool.js';
import { FakeBucket } from './support/fake-bucket.js';
import { TmpDirs } from './harness/tmp.js';

describe('BucketSpool with the bucket down', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('fails the fill with the failed upload creation, with no unhandled rejection to end the process', async () => {
    const dir = await tmp.make('regcache-bucket-spool');
    await openSpoolDir(dir);
    const bucket = new FakeBucket();
    bucket.down = true; // createUpload rejects at once, before the part has read its bytes
    const spool = new BucketSpool(await createSpool(dir, 'fill-down'), bucket, 'content/sha256/ab', 1024);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      await spool.write([crypto.randomBytes(3000)], 0); // two whole parts: uploads start
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
      await assert.rejects(spool.sync(), /createUpload failed/);
      await spool.abort(); // no upload was created: nothing to abort, no throw
    } finally {
      process.off('unhandledRejection', onUnhandled);
      await spool.close();
    }
    assert.deepEqual(unhandled, [], 'no rejection left unhandled');
  });
});
