// tier: e2e
// The S3 test server (test/harness/s3-server.ts: a single-node Ceph and its RADOS Gateway) does what the S3
// store relies on, driven with the AWS SDK as the store drives it: streamed and multipart uploads, ranges,
// metadata, conditional create, listing pages, presigned URLs, and a gateway that goes away and comes back.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListBucketsCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { run } from './harness/proc.js';
import { s3ClientConfig, startS3Server, type S3Server } from './harness/s3-server.js';

const BUCKET = 'regcache-harness';
const MIB = 1024 * 1024;

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

async function bodyBytes(body: unknown): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of body as Readable) chunks.push(Buffer.from(chunk as Uint8Array));
  return Buffer.concat(chunks);
}

/** A stream of `data` in 1 MiB chunks that fails with `failAfter` bytes sent, if given. */
function chunked(data: Buffer, failAfter?: number): Readable {
  return Readable.from(
    (function* () {
      for (let off = 0; off < data.length; off += MIB) {
        if (failAfter !== undefined && off >= failAfter) throw new Error('source failed mid-upload');
        yield data.subarray(off, off + MIB);
      }
    })(),
  );
}

/** What a call rejected with; null if it succeeded. */
const rejection = (promise: Promise<unknown>): Promise<unknown> =>
  promise.then(
    () => null,
    (e: unknown) => e,
  );

/** The S3 error a rejected call carries (fails the test if the call succeeded). */
async function s3Error(promise: Promise<unknown>): Promise<S3ServiceException> {
  const err = await rejection(promise);
  assert.ok(err instanceof S3ServiceException, `an S3 error, got ${String(err)}`);
  return err;
}

/** A client that gives up at once: one attempt, 1 s to connect, `socketTimeoutMs` of silence. */
const impatientClient = (server: S3Server, socketTimeoutMs = 0): S3Client =>
  new S3Client({ ...s3ClientConfig(server), maxAttempts: 1, requestHandler: { connectionTimeout: 1000, socketTimeout: socketTimeoutMs } });

/** Processes whose command line names `dir` (the instance's ceph.conf is in every daemon's argv). */
async function processesUsing(dir: string): Promise<string[]> {
  const found: string[] = [];
  for (const pid of (await readdir('/proc')).filter((p) => /^\d+$/.test(p))) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(dir)) found.push(`${pid}: ${cmdline.replaceAll('\0', ' ')}`);
  }
  return found;
}

describe('S3 test server (Ceph RGW)', () => {
  let server: S3Server;
  let s3: S3Client;

  before(async () => {
    server = await startS3Server();
    s3 = new S3Client(s3ClientConfig(server));
  });
  after(async () => {
    s3?.destroy();
    await server?.stop();
  });

  it('starts a Ceph of its own and creates a bucket with the fixed keys', async (t) => {
    const mem = await server.memory();
    const mb = (n: number | null): string => (n === null ? '-' : `${Math.round(n / MIB)} MB`);
    t.diagnostic(
      `ready in ${server.timings.total} ms (mon ${server.timings.mon}, osd ${server.timings.osd}, gateway ${server.timings.gateway}); RSS mon ${mb(mem.mon)}, osd ${mb(mem.osd)}, radosgw ${mb(mem.gateway)}`,
    );
    assert.match(server.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.ok((await stat(`${server.dir}/ceph.conf`)).isFile());
    assert.ok(mem.mon !== null && mem.osd !== null && mem.gateway !== null, 'all three daemons run');

    await s3.send(new CreateBucketCommand({ Bucket: BUCKET }));
    const { Buckets } = await s3.send(new ListBucketsCommand({}));
    assert.deepEqual(
      Buckets?.map((b) => b.Name),
      [BUCKET],
    );
    const wrongKey = new S3Client({ ...s3ClientConfig(server), credentials: { accessKeyId: server.accessKeyId, secretAccessKey: 'not-the-secret' } });
    const denied = await s3Error(wrongKey.send(new HeadBucketCommand({ Bucket: BUCKET })));
    wrongKey.destroy();
    assert.equal(denied.$metadata.httpStatusCode, 403);
  });

  it('stores a stream body and answers a Range with 206 and the bytes asked for', async () => {
    const data = randomBytes(3 * MIB + 123);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'blobs/streamed', Body: chunked(data), ContentLength: data.length }));

    const whole = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'blobs/streamed' }));
    assert.equal(whole.$metadata.httpStatusCode, 200);
    assert.equal(sha256(await bodyBytes(whole.Body)), sha256(data));

    const start = MIB - 7;
    const end = 2 * MIB + 11;
    const part = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'blobs/streamed', Range: `bytes=${start}-${end}` }));
    assert.equal(part.$metadata.httpStatusCode, 206);
    assert.equal(part.ContentRange, `bytes ${start}-${end}/${data.length}`);
    assert.equal(part.ContentLength, end - start + 1);
    assert.ok((await bodyBytes(part.Body)).equals(data.subarray(start, end + 1)));
  });

  it('keeps user metadata and content type, shown by HEAD', async () => {
    const data = Buffer.from('{"schemaVersion":2}');
    const put = await s3.send(
      new PutObjectCommand({
        Bucket: BUCKET,
        Key: 'meta/one',
        Body: data,
        ContentType: 'application/vnd.oci.image.manifest.v1+json',
        Metadata: { digest: 'sha256:abc', private: 'true' },
      }),
    );
    const head = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'meta/one' }));
    assert.equal(head.ContentLength, data.length);
    assert.equal(head.ContentType, 'application/vnd.oci.image.manifest.v1+json');
    assert.deepEqual(head.Metadata, { digest: 'sha256:abc', private: 'true' });
    assert.equal(head.ETag, put.ETag);
    assert.equal(head.ETag, `"${createHash('md5').update(data).digest('hex')}"`);

    const missing = await s3Error(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'meta/none' })));
    assert.equal(missing.$metadata.httpStatusCode, 404);
  });

  it('assembles a multipart upload of 20 MB from a stream (lib-storage)', async () => {
    const data = randomBytes(20 * MIB + 4321);
    const upload = new Upload({ client: s3, params: { Bucket: BUCKET, Key: 'blobs/multipart', Body: chunked(data) }, partSize: 5 * MIB, queueSize: 2 });
    const parts = new Set<number>();
    upload.on('httpUploadProgress', (p) => {
      if (p.part !== undefined) parts.add(p.part);
    });
    await upload.done();
    assert.equal(parts.size, 5, 'four 5 MiB parts and the rest');

    const head = await s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'blobs/multipart' }));
    assert.equal(head.ContentLength, data.length);
    assert.match(head.ETag ?? '', /-5"$/, 'a multipart ETag names its part count');
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'blobs/multipart' }));
    assert.equal(sha256(await bodyBytes(got.Body)), sha256(data));
  });

  it('leaves no object and no upload behind when a multipart upload is aborted by a failing source', async () => {
    const data = randomBytes(16 * MIB);
    const upload = new Upload({ client: s3, params: { Bucket: BUCKET, Key: 'blobs/aborted', Body: chunked(data, 11 * MIB) }, partSize: 5 * MIB, queueSize: 1 });
    const sent = new Set<number>();
    upload.on('httpUploadProgress', (p) => {
      if (p.part !== undefined) sent.add(p.part);
    });
    await assert.rejects(upload.done(), /source failed mid-upload/);
    assert.ok(sent.size >= 1, 'parts were uploaded before the failure (a real multipart upload was aborted)');

    const missing = await s3Error(s3.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'blobs/aborted' })));
    assert.equal(missing.$metadata.httpStatusCode, 404);
    const pending = await s3.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: 'blobs/aborted' }));
    assert.deepEqual(pending.Uploads ?? [], []);
  });

  it('creates only once with If-None-Match: * (the second writer gets 412, the first content stays)', async () => {
    const first = await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'locks/blob', Body: 'leader-1', IfNoneMatch: '*' }));
    assert.equal(first.$metadata.httpStatusCode, 200);
    const second = await s3Error(s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'locks/blob', Body: 'leader-2', IfNoneMatch: '*' })));
    assert.equal(second.$metadata.httpStatusCode, 412);
    assert.equal(second.name, 'PreconditionFailed');
    const got = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'locks/blob' }));
    assert.equal((await bodyBytes(got.Body)).toString(), 'leader-1');

    // Once deleted (a lease released), the next create wins.
    await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'locks/blob' }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'locks/blob', Body: 'leader-3', IfNoneMatch: '*' }));
    const again = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'locks/blob' }));
    assert.equal((await bodyBytes(again.Body)).toString(), 'leader-3');
  });

  it('lists a prefix in pages joined by continuation tokens', async () => {
    const keys = Array.from({ length: 7 }, (_, i) => `list/k${String(i).padStart(2, '0')}`);
    for (const Key of keys) await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key, Body: Key }));
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'listing-outside-the-prefix', Body: 'x' }));

    const pages: string[][] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'list/', MaxKeys: 3, ContinuationToken: token }));
      pages.push((page.Contents ?? []).map((o) => o.Key ?? ''));
      assert.equal(page.IsTruncated, page.NextContinuationToken !== undefined);
      token = page.NextContinuationToken;
      assert.ok(pages.length <= 5, 'listing ends');
    } while (token !== undefined);
    assert.deepEqual(
      pages.map((p) => p.length),
      [3, 3, 1],
    );
    assert.deepEqual(pages.flat(), keys);
  });

  it('deletes an object (and a second delete of it is no error)', async () => {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'doomed', Body: 'bye' }));
    const del = await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'doomed' }));
    assert.equal(del.$metadata.httpStatusCode, 204);
    const gone = await s3Error(s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'doomed' })));
    assert.equal(gone.$metadata.httpStatusCode, 404);
    assert.equal(gone.name, 'NoSuchKey');
    assert.equal((await s3.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'doomed' }))).$metadata.httpStatusCode, 204);
  });

  it('serves a presigned GET with no credentials, and refuses a tampered one with 403', async () => {
    const data = randomBytes(64 * 1024);
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'presigned/blob', Body: data }));
    const url = await getSignedUrl(s3, new GetObjectCommand({ Bucket: BUCKET, Key: 'presigned/blob' }), { expiresIn: 60 });
    assert.match(url, /X-Amz-Signature=[0-9a-f]{64}/);

    const ok = await fetch(url);
    assert.equal(ok.status, 200);
    assert.ok(Buffer.from(await ok.arrayBuffer()).equals(data));
    const ranged = await fetch(url, { headers: { range: 'bytes=10-19' } });
    assert.equal(ranged.status, 206);
    assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(data.subarray(10, 20)));

    const signature = /X-Amz-Signature=([0-9a-f]{64})/.exec(url)?.[1] ?? '';
    const flipped = signature.slice(0, -1) + (signature.endsWith('0') ? '1' : '0');
    const tampered = await fetch(url.replace(signature, flipped));
    assert.equal(tampered.status, 403);
    await tampered.arrayBuffer();
    const otherKey = await fetch(url.replace('presigned/blob', 'presigned/other'));
    assert.equal(otherKey.status, 403, 'the signature covers the key');
    await otherKey.arrayBuffer();
  });

  it('fails fast while the gateway is stopped, and works again once it is started on the same port', async (t) => {
    await s3.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'survives', Body: 'still here' }));
    const impatient = impatientClient(server);
    t.after(() => impatient.destroy());

    let t0 = performance.now();
    await server.stopGateway();
    const stopMs = Math.round(performance.now() - t0);
    t0 = performance.now();
    const down = (await rejection(impatient.send(new HeadBucketCommand({ Bucket: BUCKET })))) as NodeJS.ErrnoException | null;
    const failMs = Math.round(performance.now() - t0);
    assert.ok(down !== null, 'a request to a stopped gateway fails');
    assert.equal(down.code, 'ECONNREFUSED', String(down));
    assert.ok(failMs < 1500, `failed in ${failMs} ms`);
    assert.equal((await server.memory()).gateway, null);

    t0 = performance.now();
    await server.startGateway();
    const startMs = Math.round(performance.now() - t0);
    t.diagnostic(`gateway stopped in ${stopMs} ms; a request failed in ${failMs} ms; restarted in ${startMs} ms`);
    const back = await impatient.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'survives' }));
    assert.equal((await bodyBytes(back.Body)).toString(), 'still here');
  });

  it('hangs, rather than refuses, while the gateway is paused (an idle-socket timeout ends the wait)', async (t) => {
    // socketTimeout is the SDK's idle timeout; its requestTimeout only logs a warning unless
    // throwOnRequestTimeout is set, and then bounds the whole request, a long download included.
    const impatient = impatientClient(server, 1500);
    t.after(() => impatient.destroy());
    await server.pauseGateway();
    const guard = setTimeout(() => server.resumeGateway(), 8000); // a client that never gives up fails below, not hangs
    t.after(() => clearTimeout(guard));
    const t0 = performance.now();
    const hung = (await rejection(impatient.send(new HeadBucketCommand({ Bucket: BUCKET })))) as Error | null;
    const ms = Math.round(performance.now() - t0);
    // Who answered, if something did (it happened once beside other files: a thread not yet stopped, or a
    // second listener on the port after the restart above?): the processes listening on the port.
    const listeners = hung === null ? (await run('ss', ['-Hltnp', `sport = :${server.port}`])).stdout.trim() : '';
    server.resumeGateway();
    assert.ok(hung !== null, `a request to a paused gateway fails (it succeeded after ${ms} ms; listening on the port: ${listeners})`);
    assert.equal(hung.name, 'TimeoutError', String(hung));
    assert.ok(ms >= 1400 && ms < 5000, `it waited for the idle timeout (${ms} ms)`);
    const ok = await impatient.send(new HeadBucketCommand({ Bucket: BUCKET }));
    assert.equal(ok.$metadata.httpStatusCode, 200);
  });

  it('stop() ends radosgw, the OSD and the mon, and removes the instance dir', async () => {
    const dir = server.dir;
    assert.equal((await processesUsing(dir)).length, 3, (await processesUsing(dir)).join('\n'));
    await server.stop();
    assert.deepEqual(await processesUsing(dir), []);
    if (process.env.REGCACHE_KEEP_TMP !== '1') await assert.rejects(stat(dir), { code: 'ENOENT' });
    await server.stop(); // idempotent: after() calls it again
  });
});
