// tier: e2e
// A fleet on one bucket, end to end: two regcache replicas (separate processes, CACHE_STORE on one bucket of
// a real Ceph RADOS Gateway started by the test), a real docker-registry behind them (skopeo pulls) and a
// scripted registry that sends its blobs slowly (raw GETs on each replica's mirror port). What one replica
// fetched the other serves as a HIT (Range too); a follower on the other replica waits for the leader's
// commit; concurrent cold pulls through both fetch each blob once; skopeo through haproxy in front of both
// HITs on its second pull; the gateway stopped answers 503 and /readyz false with no credential logged, and
// recovers; kill -9 of the leading replica mid-fill is taken over after the lease, with nothing partial ever
// visible in the bucket.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GetObjectCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { startBalancer, type Balancer } from './harness/haproxy.js';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { requestLines, type Regcache } from './harness/regcache.js';
import { listKeys as listBucketKeys, s3ClientConfig, startS3Server, type S3Server } from './harness/s3-server.js';
import { assertSkopeoDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob, type FakeBlob } from './support/fake-registry.js';
import { get } from './support/plain-http.js';
import { assertConcurrentPullsFetchOnce, certDirFor, pullThrough, pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

const BUCKET = 'regcache-fleet';
const PREFIX = 'cache/';
const LEASE_MS = 3000;
const MIB = 1024 * 1024;
const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const hexOf = (digest: string): string => digest.slice('sha256:'.length);
const blobPath = (repo: string, blob: FakeBlob) => `/v2/${repo}/blobs/${blob.digest}?ns=slow.test`;

interface Readyz {
  ok: boolean;
  checks: Record<string, boolean>;
}

describe('a fleet of two replicas on one S3 bucket (Ceph RGW)', () => {
  const tmp = new TmpDirs();
  const slow = new FakeRegistry(); // slow.test: blobs scripted per test
  let root: string;
  let s3: S3Server;
  let client: S3Client;
  let upstream: Upstream;
  let image: Image; // big layers: the concurrent pulls overlap, and one layer takes two parts
  let a: Regcache;
  let b: Regcache;
  let balancer: Balancer | null = null;

  const startReplica = async (name: string): Promise<Regcache> =>
    startProxyFor(upstream, {
      dir: path.join(root, name),
      caDir: path.join(root, 'ca'), // one CA: a client behind the balancer trusts every replica
      env: {
        ...s3.env,
        CACHE_STORE: `s3://${BUCKET}/${PREFIX}`,
        S3_FILL_LEASE: `${LEASE_MS / 1000}s`,
        ADDITIONAL_REGISTRIES: 'registry.test slow.test',
        MIRROR_PORT: String(await freePort()),
      },
      routes: { 'registry.test': upstream.registry.port, 'slow.test': slow.port },
    });

  /** Every key under the prefix, with its size. */
  const listKeys = (under = ''): Promise<Map<string, number>> => listBucketKeys(client, BUCKET, PREFIX, under);
  const uploadsOf = async (key: string): Promise<string[]> => {
    const out = await client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: PREFIX + key }));
    return (out.Uploads ?? []).map((u) => u.UploadId!);
  };
  const objectBytes = async (key: string): Promise<Buffer> => {
    const out = await client.send(new GetObjectCommand({ Bucket: BUCKET, Key: PREFIX + key }));
    return Buffer.from(await out.Body!.transformToByteArray());
  };
  const readyz = async (proxy: Regcache) => {
    const got = await get(proxy.port, '/readyz');
    return { status: got.status, body: JSON.parse(got.body.toString()) as Readyz };
  };
  const requestsFor = async (proxy: Regcache, digest: string, since = 0) => (await proxy.requests(since)).filter((l) => l.digest === digest);

  before(async () => {
    root = await tmp.make('regcache-s3-fleet');
    s3 = await startS3Server();
    client = new S3Client(s3ClientConfig(s3));
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['fleet-lb-0', 'fleet-lb-1']);
    await pushTo(upstream, 'lib/lb', 'v1');
    image = await makeImage(path.join(root, 'image'), { layers: [10, 3, 2].map((mb, i) => ({ size: mb * MIB, seed: `fleet-${i}` })), gzipLevel: 0 });
    await pushImage(upstream.registry.url, 'lib/app', 'v1', image, { caFile: upstream.ca.certFile });
    await slow.start(await upstream.ca.issue(['slow.test'], root, 'slow'));
    a = await startReplica('a');
    b = await startReplica('b');
  });

  after(async () => {
    await balancer?.stop();
    await a?.stop();
    await b?.stop();
    client?.destroy();
    await s3?.stop();
    await slow.close();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('both replicas open the bucket (one creates it) and are ready', async () => {
    const opened = await Promise.all([a, b].map((r) => r.waitForLog((l) => l.msg === 'cache opened', 'the store to open')));
    assert.ok(
      opened.every((l) => l.store === `s3://${BUCKET}/${PREFIX}`),
      JSON.stringify(opened),
    );
    assert.equal(opened.filter((l) => l.bucketCreated === true).length, 1, 'the first replica created the bucket');
    for (const r of [a, b]) {
      const ready = await readyz(r);
      assert.equal(ready.status, 200);
      assert.equal(ready.body.checks.store, true);
    }
  });

  it('what one replica fetched the other serves as a HIT, with no upstream request; a Range too', async () => {
    const blob = slow.add(makeBlob(12 * MIB, 'fleet-hit')); // two parts of a multipart upload
    const target = blobPath('lib/hit', blob);
    const cold = await get(a.mirrorPort!, target);
    assert.ok(cold.status === 200 && cold.complete && sha256(cold.body) === blob.digest);
    await a.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the fill to commit');
    const keys = await listKeys();
    assert.equal(keys.get(`content/sha256/${hexOf(blob.digest)}`), blob.data.length, 'the content object, whole');
    assert.ok(keys.has(`entries/blob/sha256/${hexOf(blob.digest)}`), 'its entry');
    assert.equal(sha256(await objectBytes(`content/sha256/${hexOf(blob.digest)}`)), blob.digest, 'the completed upload holds the verified bytes');

    const warm = await get(b.mirrorPort!, target);
    assert.ok(warm.status === 200 && warm.complete && warm.body.equals(blob.data));
    const [start, end] = [8 * MIB - 100, 8 * MIB + 99]; // across the parts' boundary
    const ranged = await get(b.mirrorPort!, target, undefined, { range: `bytes=${start}-${end}` });
    assert.equal(ranged.status, 206);
    assert.equal(ranged.headers['content-range'], `bytes ${start}-${end}/${blob.data.length}`);
    assert.ok(ranged.body.equals(blob.data.subarray(start, end + 1)));
    assert.equal(slow.count('GET', `/blobs/${blob.digest}`), 1, 'one upstream GET');
    const lines = await requestsFor(b, blob.digest);
    assert.equal(lines.length, 2);
    assert.ok(
      lines.every((l) => l.cache === 'HIT'),
      JSON.stringify(lines),
    );
  });

  it('a tag one replica resolved costs the other a HEAD upstream, never a GET: REVALIDATED before any index refresh', async () => {
    const mediaType = 'application/vnd.oci.image.manifest.v1+json';
    const manifest = makeBlob(3000, 'fleet-tag-manifest', mediaType);
    slow.tags.set('lib/tagged:v1', manifest);
    const target = '/v2/lib/tagged/manifests/v1?ns=slow.test';
    const first = await get(a.mirrorPort!, target, undefined, { accept: mediaType });
    assert.ok(first.status === 200 && first.body.equals(manifest.data));
    const stored = `entries/manifest/sha256/${hexOf(manifest.digest)}`;
    await waitFor(async () => (await listKeys('entries/manifest/')).has(stored), { timeoutMs: 10_000, what: 'the manifest in the bucket' });
    await waitFor(async () => (await listKeys('pointers/')).size > 0, { timeoutMs: 10_000, what: 'the tag pointer in the bucket' });
    const gets = slow.count('GET', '/lib/tagged/manifests/v1');
    const mark = (await b.logs()).length;
    const second = await get(b.mirrorPort!, target, undefined, { accept: mediaType });
    assert.ok(second.status === 200 && second.body.equals(manifest.data), 'the same manifest from the other replica');
    assert.equal(slow.count('GET', '/lib/tagged/manifests/v1'), gets, 'no upstream GET of the tag: the bucket had it');
    const lines = await requestLines(b, (l) => l.path?.endsWith('/manifests/v1') === true, 1, { since: mark });
    assert.deepEqual(
      lines.map((l) => l.cache),
      ['REVALIDATED'],
      JSON.stringify(lines),
    );
  });

  it("a request on the other replica during a fill waits for the leader's commit, then is served from the bucket", async (t) => {
    const blob = slow.add(makeBlob(10 * MIB, 'fleet-follow'), { kind: 'slow', chunk: 256 * 1024, delayMs: 40 });
    const target = blobPath('lib/follow', blob);
    let leaderBytes = 0;
    const leader = get(a.mirrorPort!, target, (n) => (leaderBytes = n));
    await waitFor(async () => leaderBytes > 0, { timeoutMs: 10_000, what: 'the leader to get bytes' });
    const asked = Date.now();
    const follower = await get(b.mirrorPort!, target);
    const led = await leader;
    for (const got of [led, follower]) assert.ok(got.status === 200 && got.complete && got.body.equals(blob.data));
    assert.equal(slow.count('GET', `/blobs/${blob.digest}`), 1, 'one upstream GET for the fleet');
    const lines = await requestsFor(b, blob.digest);
    assert.equal(lines.length, 1);
    assert.ok(
      lines[0]!.cache === 'HIT' && lines[0]!.coalesced !== true,
      `served from the bucket after the commit, not from the leader's bytes: ${JSON.stringify(lines)}`,
    );
    t.diagnostic(
      `10 MiB at ~6 MB/s: leader done ${led.doneAt - asked} ms after the follower asked; follower's first byte after ${follower.firstByteAt! - asked} ms, done after ${follower.doneAt - asked} ms`,
    );
  });

  it('concurrent cold pulls through both replicas fetch each blob upstream once, every client the same bytes', async () => {
    const certDir = await certDirFor(a, path.join(root, 'certs.d'));
    const marks = [(await a.logs()).length, (await b.logs()).length];
    const clients = [a, b, a, b];
    const blobs = await assertConcurrentPullsFetchOnce(upstream.registry, image, clients, 'registry.test/lib/app:v1', root, certDir);
    const lines = [...(await a.requests(marks[0])), ...(await b.requests(marks[1]))].filter((l) => l.kind === 'blob' && l.method === 'GET');
    assert.equal(lines.length, clients.length * blobs.length);
    assert.ok(
      lines.every((l) => l.status === 200),
      JSON.stringify(lines.filter((l) => l.status !== 200)),
    );
    const keys = await listKeys('content/');
    for (const layer of image.layers) assert.equal(keys.get(`content/sha256/${hexOf(layer.digest)}`), layer.size, layer.digest);
  });

  it('skopeo through haproxy in front of both replicas: the second pull is served from the bucket (HIT)', async () => {
    balancer = await startBalancer(root, [a.port, b.port]);
    const certDir = await certDirFor(a, path.join(root, 'certs-lb.d'));
    const marks = [(await a.logs()).length, (await b.logs()).length];
    const lines = async () => [...(await a.requests(marks[0])), ...(await b.requests(marks[1]))];
    for (const i of [0, 1]) {
      const out = path.join(root, `lb-pull-${i}`);
      const r = await pullThrough(balancer, 'registry.test/lib/lb:v1', out, certDir, path.join(root, `lb-skopeo-${i}`));
      assert.equal(r.code, 0, r.stderr);
      await assertSkopeoDir(out, upstream.image);
      if (i === 0) marks.splice(0, 2, ...[(await a.logs()).length, (await b.logs()).length]);
    }
    const second = (await lines()).filter((l) => l.kind === 'blob' && l.method === 'GET');
    assert.equal(second.length, upstream.blobs.length);
    assert.ok(
      second.every((l) => l.cache === 'HIT' && l.status === 200),
      JSON.stringify(second),
    );
    for (const digest of upstream.blobs) assert.equal(await upstream.registry.countBlobGets(digest), 1, `one upstream GET of ${digest}`);
    const servedBy = async (r: Regcache) => (await r.requests()).filter((l) => String(l.path).startsWith('/v2/lib/lb/')).length;
    assert.ok((await servedBy(a)) > 0 && (await servedBy(b)) > 0, 'the balancer used both replicas');
  });

  it('the gateway stopped: 503 and /readyz false on both, one clear line, no credential logged; back: served again', async () => {
    const stored = slow.add(makeBlob(300_000, 'fleet-down-stored'));
    assert.ok((await get(a.mirrorPort!, blobPath('lib/down', stored))).complete);
    await a.waitForLog((l) => l.msg === 'fill committed' && l.digest === stored.digest, 'the fill to commit');
    const cold = slow.add(makeBlob(300_000, 'fleet-down-cold'));
    const marks = [(await a.logs()).length, (await b.logs()).length];

    await s3.stopGateway();
    try {
      for (const [r, blob] of [
        [b, stored],
        [a, stored],
        [b, cold],
      ] as const) {
        const got = await get(r.mirrorPort!, blobPath('lib/down', blob));
        assert.equal(got.status, 503, `${blob === stored ? 'a HIT' : 'a MISS'}: ${got.body.toString()}`);
        assert.match(got.body.toString(), /UNAVAILABLE/);
      }
      assert.equal(slow.count('GET', `/blobs/${cold.digest}`), 0, 'nothing fetched that the fleet cannot store');
      for (const [i, r] of [a, b].entries()) {
        const down = await r.waitForLog((l) => l.msg.startsWith('cache store unreachable'), 'the unreachable line');
        assert.match(String(down.error), /HeadObject|HeadBucket|ListObjectsV2|GetObject|PutObject/, JSON.stringify(down));
        assert.equal((await r.logs()).slice(marks[i]).filter((l) => l.msg.startsWith('cache store unreachable')).length, 1, 'said once');
        const ready = await readyz(r);
        assert.equal(ready.status, 503);
        assert.equal(ready.body.checks.store, false);
      }
    } finally {
      await s3.startGateway();
    }
    for (const r of [a, b]) {
      await r.waitForLog((l) => l.msg === 'cache store reachable again', 'the probe to see the bucket again', 20_000);
      await waitFor(async () => (await readyz(r)).status === 200, { timeoutMs: 20_000, what: '/readyz 200' });
    }
    const hit = await get(b.mirrorPort!, blobPath('lib/down', stored));
    assert.ok(hit.complete && hit.body.equals(stored.data));
    const fetched = await get(b.mirrorPort!, blobPath('lib/down', cold));
    assert.ok(fetched.complete && fetched.body.equals(cold.data));
    for (const r of [a, b]) {
      const text = await readFile(r.logFile, 'utf8');
      assert.ok(!text.includes(s3.secretAccessKey), `the secret key is in ${r.logFile}`);
      assert.ok(!/Signature=|Credential=|X-Amz-Signature/i.test(text), `a signature is in ${r.logFile}`);
    }
  });

  it('the gateway hung (SIGSTOP): a request needing it is answered 503 rather than held, /readyz false; resumed: served again', async () => {
    const stored = slow.add(makeBlob(200_000, 'fleet-hung-stored'));
    assert.ok((await get(a.mirrorPort!, blobPath('lib/hung', stored))).complete);
    await a.waitForLog((l) => l.msg === 'fill committed' && l.digest === stored.digest, 'the fill to commit');
    const mark = (await b.logs()).length;
    await s3.pauseGateway();
    try {
      const got = await get(b.mirrorPort!, blobPath('lib/hung', stored));
      assert.equal(got.status, 503, got.body.toString());
      const unreachable = async () => (await b.logs()).slice(mark).find((l) => l.msg.startsWith('cache store unreachable'));
      await waitFor(async () => (await unreachable()) !== undefined, { timeoutMs: 5000, what: 'the unreachable line' });
      const line = (await unreachable())!;
      assert.match(String(line.error), /TimeoutError|AbortError|timed out/, JSON.stringify(line));
      await waitFor(async () => (await readyz(a)).status === 503, { timeoutMs: 30_000, what: '/readyz 503 on the replica that only probes' });
    } finally {
      s3.resumeGateway();
    }
    for (const r of [a, b]) await waitFor(async () => (await readyz(r)).status === 200, { timeoutMs: 30_000, what: '/readyz 200' });
    const hit = await get(b.mirrorPort!, blobPath('lib/hung', stored));
    assert.ok(hit.complete && hit.body.equals(stored.data));
  });

  it('kill -9 of the leading replica mid-fill: the other takes over after the lease; nothing partial is ever visible', async () => {
    const blob = slow.add(makeBlob(12 * MIB, 'fleet-kill'), { kind: 'slow', chunk: 128 * 1024, delayMs: 40 });
    const target = blobPath('lib/kill', blob);
    const contentKey = `content/sha256/${hexOf(blob.digest)}`;
    // Watches the bucket all along: the content object, whenever it is there, is whole.
    const seen: number[] = [];
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        const size = (await listKeys('content/')).get(contentKey);
        if (size !== undefined) seen.push(size);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();

    let leaderBytes = 0;
    const leader = get(a.mirrorPort!, target, (n) => (leaderBytes = n));
    // Past the first part: the upload has begun (parts in the bucket, invisible).
    await waitFor(async () => leaderBytes >= 9 * MIB && (await uploadsOf(contentKey)).length === 1, {
      timeoutMs: 30_000,
      what: 'the leader to upload its first part',
    });
    const follower = get(b.mirrorPort!, target);
    assert.equal((await listKeys()).get(contentKey), undefined, 'nothing visible mid-fill');
    a.daemon.child.kill('SIGKILL');
    await a.daemon.exited;
    const cut = await leader;
    assert.equal(cut.complete, false, "the leader's client was cut");
    slow.behaviour.set(blob.digest, { kind: 'ok' });

    const got = await follower;
    assert.ok(got.status === 200 && got.complete && got.body.equals(blob.data), "the follower's client got the whole blob");
    assert.equal(slow.count('GET', `/blobs/${blob.digest}`), 2, 'fetched again by the replica that took over');
    await b.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the takeover to commit');
    const retry = await get(b.mirrorPort!, target);
    assert.ok(retry.complete && retry.body.equals(blob.data), 'a retry gets the whole blob');
    watching = false;
    await watcher;
    assert.ok(seen.length > 0 && seen.every((s) => s === blob.data.length), `the content object was only ever whole: ${JSON.stringify([...new Set(seen)])}`);
    assert.equal(sha256(await objectBytes(contentKey)), blob.digest);
    const fills = [...(await listKeys('fills/')).keys()].filter((k) => k.includes(hexOf(blob.digest)));
    assert.equal(fills.length, 2, `generation 0 (the dead leader's) and 1 (the takeover's): ${fills.join(' ')}`);
    assert.equal((await uploadsOf(contentKey)).length, 1, "the dead leader's upload, never completed, is all that is left of it");
  });
});
