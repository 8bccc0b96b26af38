// tier: e2e
// The fleet's bound end to end: two regcache replicas (separate processes) on one bucket of a real Ceph
// RADOS Gateway started by the test, with a small CACHE_MAX_SIZE and short sweep, flush and grace periods
// (S3_SWEEP_INTERVAL, S3_ACCESS_FLUSH, S3_EVICT_GRACE: settings for tests). Each replica fills blobs of
// its own; what was read last through the other replica survives; the bucket's content ends within the
// bound; only the replica holding the eviction lease sweeps; a download in progress on B of content A's
// sweep evicts completes byte-identical. Also measured: whether RGW keeps streaming a GET whose object is
// deleted meanwhile (docs/scale-out.md). In process over an in-memory bucket: test/s3-eviction.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DeleteObjectCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { Readable } from 'node:stream';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { startRegcache, type Regcache } from './harness/regcache.js';
import { listKeys as listBucketKeys, s3ClientConfig, startS3Server, type S3Server } from './harness/s3-server.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob, type FakeBlob } from './support/fake-registry.js';
import { get } from './support/plain-http.js';

const BUCKET = 'regcache-bound';
const PREFIX = 'cache/';
const MIB = 1024 * 1024;
const MAX = 30 * MIB; // CACHE_MAX_SIZE=30m
const GRACE_MS = 3000;
const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const hexOf = (digest: string): string => digest.slice('sha256:'.length);
const blobPath = (repo: string, blob: FakeBlob) => `/v2/${repo}/blobs/${blob.digest}?ns=bound.test`;

/** A GET whose client reads slowly (a chunk, then a pause) until `fast()`: a download that stays in progress. */
function slowGet(
  port: number,
  target: string,
): { received: () => number; fast: () => void; done: Promise<{ status: number; body: Buffer; complete: boolean }> } {
  let received = 0;
  let slow = true;
  const chunks: Buffer[] = [];
  const done = new Promise<{ status: number; body: Buffer; complete: boolean }>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: target, agent: false }, (res) => {
      const length = Number(res.headers['content-length']);
      res.on('data', (chunk: Buffer) => {
        chunks.push(chunk);
        received += chunk.length;
        if (slow) {
          res.pause();
          setTimeout(() => res.resume(), 100);
        }
      });
      res.once('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), complete: res.complete && received === length }));
      res.once('error', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), complete: false }));
    });
    req.once('error', () => resolve({ status: 0, body: Buffer.alloc(0), complete: false }));
  });
  return { received: () => received, fast: () => (slow = false), done };
}

describe('the bound of a fleet of two replicas on one S3 bucket (Ceph RGW)', () => {
  const tmp = new TmpDirs();
  const registry = new FakeRegistry(); // bound.test
  let root: string;
  let s3: S3Server;
  let client: S3Client;
  let caFile: string;
  let a: Regcache;
  let b: Regcache;

  const startReplica = async (name: string): Promise<Regcache> =>
    startRegcache({
      dir: path.join(root, name),
      caDir: path.join(root, 'ca'),
      env: {
        ...s3.env,
        CACHE_STORE: `s3://${BUCKET}/${PREFIX}`,
        CACHE_MAX_SIZE: `${MAX / MIB}m`,
        S3_FILL_LEASE: '3s', // also the eviction lease's
        S3_SWEEP_INTERVAL: '500ms',
        S3_ACCESS_FLUSH: '300ms',
        S3_EVICT_GRACE: `${GRACE_MS}ms`,
        ADDITIONAL_REGISTRIES: 'bound.test',
        MIRROR_PORT: String(await freePort()),
        UPSTREAM_CA_FILE: caFile,
        CONNECT_TO: `bound.test:443:127.0.0.1:${registry.port}`,
      },
    });

  const listKeys = (under: string): Promise<Map<string, number>> => listBucketKeys(client, BUCKET, PREFIX, under);
  const objectJson = async <T>(key: string): Promise<T | null> => {
    try {
      const out = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: PREFIX + key }));
      return JSON.parse(Buffer.from(await out.Body!.transformToByteArray()).toString()) as T;
    } catch {
      return null; // gone (folded) meanwhile
    }
  };
  /** Every access time the bucket holds: the batches not folded yet and the sweeper's merged object. */
  const accessTimes = async (): Promise<Map<string, number>> => {
    const times = new Map<string, number>();
    const merged = await objectJson<{ t: Record<string, number> }>('sweep/usage.json');
    const batches = await Promise.all([...(await listKeys('usage/')).keys()].map((k) => objectJson<{ t: Record<string, number> }>(k)));
    for (const o of [merged, ...batches]) for (const [k, t] of Object.entries(o?.t ?? {})) times.set(k, Math.max(t, times.get(k) ?? 0));
    return times;
  };
  const fill = async (r: Regcache, repo: string, blob: FakeBlob) => {
    const got = await get(r.mirrorPort!, blobPath(repo, blob));
    assert.ok(got.status === 200 && got.complete && got.body.equals(blob.data), `${repo}: ${got.status}`);
    await r.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the fill to commit');
  };
  const content = (blob: FakeBlob) => `content/sha256/${hexOf(blob.digest)}`;
  const entry = (blob: FakeBlob) => `entries/blob/sha256/${hexOf(blob.digest)}`;

  before(async () => {
    root = await tmp.make('regcache-s3-bound');
    s3 = await startS3Server();
    client = new S3Client(s3ClientConfig(s3));
    const ca = await createTestCA(path.join(root, 'upstream-ca'), 'bound test CA');
    caFile = ca.certFile;
    await registry.start(await ca.issue(['bound.test'], root, 'bound'));
    a = await startReplica('a');
    await a.waitForLog((l) => l.msg.startsWith('eviction lease taken'), 'A to take the eviction lease');
    b = await startReplica('b'); // started after: A sweeps
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    client?.destroy();
    await s3?.stop();
    await registry.close();
    await tmp.cleanup();
  });

  it('RGW: a GET streaming when its object is deleted (measured, reported)', async (t) => {
    const data = crypto.randomBytes(64 * MIB);
    const key = `${PREFIX}measure/deleted-mid-read`;
    await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: key, Body: data }));
    const out = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: key }));
    const body = out.Body as Readable;
    const chunks: Buffer[] = [];
    let got = 0;
    let deleted = false;
    let error: string | null = null;
    try {
      for await (const chunk of body) {
        chunks.push(chunk as Buffer);
        got += (chunk as Buffer).length;
        if (!deleted && got >= MIB) {
          await client.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: key }));
          deleted = true;
        }
      }
    } catch (err) {
      error = (err as Error).message;
    }
    const all = Buffer.concat(chunks);
    t.diagnostic(
      `64 MiB GET, object deleted after its first MiB: ${all.length} bytes received, ${all.equals(data) ? 'identical' : 'NOT identical'}${error ? `, cut: ${error}` : ''}`,
    );
    assert.ok(deleted);
  });

  it("bounds the bucket across replicas: LRU from both replicas' accesses, one sweeper, a download in progress completes", async () => {
    const x1 = registry.add(makeBlob(2 * MIB, 'bound-x1'));
    const x2 = registry.add(makeBlob(24 * MIB, 'bound-x2')); // read slowly through B while A's sweep evicts it
    const y1 = registry.add(makeBlob(3 * MIB, 'bound-y1'));
    const x3 = registry.add(makeBlob(2 * MIB, 'bound-x3'));
    const y2 = registry.add(makeBlob(2 * MIB, 'bound-y2'));
    await fill(a, 'lib/x', x1);
    await fill(a, 'lib/x', x2);
    await fill(b, 'lib/y', y1); // 29 MiB: within the bound
    assert.equal((await listKeys('content/')).size, 3);

    // B begins a slow download of x2 (a HIT), then serves x1, filled by A: x1 is now the most recently used.
    const download = slowGet(b.mirrorPort!, blobPath('lib/x', x2));
    await waitFor(async () => download.received() > 0, { timeoutMs: 20_000, what: 'the download to begin' });
    const warm = await get(b.mirrorPort!, blobPath('lib/x', x1));
    assert.ok(warm.complete && warm.body.equals(x1.data));
    const key = (blob: FakeBlob) => `blob/${blob.digest}`;
    await waitFor(
      async () => {
        const times = await accessTimes();
        return (times.get(key(x1)) ?? 0) > (times.get(key(x2)) ?? Infinity);
      },
      { timeoutMs: 20_000, what: "B's batch with x1 read after x2 to reach the bucket" },
    );

    // A fills x3: 31 MiB, past the bound. Down to 90% (27 MiB), least recently used first: y1, then x2.
    await fill(a, 'lib/x', x3);
    await waitFor(async () => !(await listKeys('entries/')).has(entry(x2)), { timeoutMs: 30_000, what: 'x2 to be evicted' });
    const entries = await listKeys('entries/');
    assert.ok(!entries.has(entry(y1)), 'y1 (least recently used) evicted');
    assert.ok(entries.has(entry(x1)), 'x1, read last through B, survives');
    assert.ok(entries.has(entry(x3)));
    // y1's bytes go once its grace passed; x2's stay while B reads them.
    await waitFor(async () => !(await listKeys('content/')).has(content(y1)), { timeoutMs: 30_000, what: "y1's content to be deleted after the grace" });
    assert.ok((await listKeys('content/')).has(content(x2)), `x2's content is kept while B reads it (${download.received()} bytes received so far)`);
    assert.ok(download.received() < x2.data.length, 'the download was still in progress');

    download.fast();
    const done = await download.done;
    assert.ok(done.status === 200 && done.complete, `the download completed: ${done.status} ${done.body.length}`);
    assert.equal(sha256(done.body), x2.digest, 'byte-identical');

    await fill(b, 'lib/y', y2);
    // Every evicted content deleted after its grace; the bucket's content within the bound.
    await waitFor(async () => !(await listKeys('content/')).has(content(x2)), {
      timeoutMs: 30_000,
      what: "x2's content to be deleted once read and the grace passed",
    });
    const left = await listKeys('content/');
    const total = [...left.values()].reduce((n, s) => n + s, 0);
    assert.ok(total <= MAX, `content in the bucket: ${total} bytes, bound ${MAX}`);
    assert.deepEqual(new Set(left.keys()), new Set([x1, x3, y2].map(content)));

    // One sweeper: A took the lease and did every sweep; B never did.
    const sweeps = async (r: Regcache) => (await r.logs()).filter((l) => l.msg === 'fleet sweep' || l.msg.startsWith('eviction lease taken'));
    assert.ok(
      (await sweeps(a)).some((l) => l.msg === 'fleet sweep'),
      'A swept',
    );
    assert.deepEqual(await sweeps(b), [], 'B never swept');
  });
});
