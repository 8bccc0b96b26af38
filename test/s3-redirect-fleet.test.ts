// tier: e2e
// S3_REDIRECT against a real S3 server (Ceph RGW, started by the test): a replica with S3_REDIRECT=true
// answers a warm pull's blob GETs 307 to presigned URLs that skopeo follows to the gateway itself, so the
// replica sends none of the blobs' bytes (its log lines and regcache_bytes_served_total say so) and the
// copy is byte-identical; a presigned URL sent through regcache's proxy port as plain HTTP (a client whose
// HTTP_PROXY is regcache) meets the destination policy like any other; a presigned URL stops working after
// S3_REDIRECT_TTL while HEADs stay answered by the replica.
// In process, over a fake bucket: test/s3-redirect.test.ts.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort } from './harness/ports.js';
import type { Regcache } from './harness/regcache.js';
import { startS3Server, type S3Server } from './harness/s3-server.js';
import { assertSkopeoDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { samples } from './support/metric-samples.js';
import { request } from './support/plain-http.js';
import { certDirFor, pullThrough, pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

const BUCKET = 'regcache-redirect';
const TTL_S = 3;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('S3_REDIRECT on a real bucket (Ceph RGW)', () => {
  const tmp = new TmpDirs();
  let root: string;
  let s3: S3Server;
  let upstream: Upstream;
  let replica: Regcache;
  let certDir: string;

  const metrics = async () => (await fetch(`${replica.proxyUrl}/metrics`)).text();
  const allLogText = async () => (await replica.logs()).map((l) => JSON.stringify(l)).join('\n');

  before(async () => {
    root = await tmp.make('regcache-s3-redirect');
    s3 = await startS3Server();
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['redirect-0', 'redirect-1']);
    await pushTo(upstream, 'lib/app', 'v1');
    replica = await startProxyFor(upstream, {
      dir: path.join(root, 'replica'),
      env: {
        ...s3.env,
        CACHE_STORE: `s3://${BUCKET}/cache/`,
        S3_REDIRECT: 'true',
        S3_REDIRECT_TTL: `${TTL_S}s`,
        ADDITIONAL_REGISTRIES: 'registry.test',
        MIRROR_PORT: String(await freePort()),
      },
      routes: { 'registry.test': upstream.registry.port },
    });
    certDir = await certDirFor(replica, path.join(root, 'certs.d'));
  });

  after(async () => {
    await replica?.stop();
    await s3?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('a warm pull gets its blobs from the bucket: 307s, byte-identical, no blob bytes through the replica', async () => {
    const cold = await pullThrough(replica, 'registry.test/lib/app:v1', path.join(root, 'cold'), certDir, path.join(root, 'skopeo-cold'));
    assert.equal(cold.code, 0, cold.stderr);
    await assertSkopeoDir(path.join(root, 'cold'), upstream.image);
    for (const digest of upstream.blobs) await replica.waitForLog((l) => l.msg === 'fill committed' && l.digest === digest, `the fill of ${digest} to commit`);

    const before = samples(await metrics(), 'regcache_bytes_served_total').get('source="cache",registry="registry.test"') ?? 0;
    const mark = (await replica.logs()).length;
    // HTTPS_PROXY only: the gateway's http:// URL is reached directly (as with NO_PROXY for it).
    const warm = await pullThrough(replica, 'registry.test/lib/app:v1', path.join(root, 'warm'), certDir, path.join(root, 'skopeo-warm'));
    assert.equal(warm.code, 0, warm.stderr);
    await assertSkopeoDir(path.join(root, 'warm'), upstream.image);

    const lines = (await replica.requests(mark)).filter((l) => l.kind === 'blob' && l.method === 'GET');
    assert.equal(lines.length, upstream.blobs.length, JSON.stringify(lines));
    assert.ok(
      lines.every((l) => l.cache === 'HIT' && l.status === 307 && l.redirect === true && l.bytes === 0),
      JSON.stringify(lines),
    );
    const after = await metrics();
    assert.equal(samples(after, 'regcache_redirects_total').get(''), upstream.blobs.length);
    assert.equal(samples(after, 'regcache_store_reachable').get(''), 1, 'the bucket answers (what RegcacheStoreUnreachable watches)');
    const grew = (samples(after, 'regcache_bytes_served_total').get('source="cache",registry="registry.test"') ?? 0) - before;
    const layerBytes = upstream.image.layers.reduce((n, l) => n + l.size, 0);
    assert.ok(grew < layerBytes, `${grew} bytes from the cache through the replica (the manifest only), layers ${layerBytes}`);
    assert.doesNotMatch(await allLogText(), /X-Amz-Signature|X-Amz-Credential/i, 'no presigned URL in the log');
  });

  it("a presigned URL sent through regcache's proxy port (HTTP_PROXY) meets the destination policy: the loopback gateway is refused", async () => {
    // Go clients (skopeo, containerd, dockerd) never proxy loopback URLs, so a raw proxy-form request stands
    // in for a client whose HTTP_PROXY is regcache and whose gateway is elsewhere.
    const digest = upstream.image.layers[0]!.digest;
    const answer = await request(replica.mirrorPort!, `/v2/lib/app/blobs/${digest}?ns=registry.test`);
    assert.equal(answer.status, 307);
    const location = String(answer.headers.location);
    const mark = (await replica.logs()).length;
    const forwarded = await request(replica.port, location);
    assert.equal(forwarded.status, 403);
    assert.match(forwarded.body, /loopback/);
    const gateway = new URL(s3.endpoint).host;
    // The request line is written when regcache sees the response close, which can come after the client
    // has the 403 (a CI run read the log first and found none): wait for it.
    await replica.waitForLog(
      (l) => l.msg === 'request' && l.status === 403 && JSON.stringify(l).includes(gateway),
      `the refusal's request line naming ${gateway}`,
      {
        since: mark,
      },
    );
    assert.doesNotMatch(await allLogText(), /X-Amz-Signature|X-Amz-Credential/i, 'no presigned URL in the log');
  });

  it('a presigned URL works until S3_REDIRECT_TTL, then the gateway refuses it', async () => {
    const digest = upstream.image.layers[0]!.digest;
    const answer = await request(replica.mirrorPort!, `/v2/lib/app/blobs/${digest}?ns=registry.test`);
    assert.equal(answer.status, 307);
    assert.equal(answer.headers['docker-content-digest'], digest);
    const location = String(answer.headers.location);
    assert.ok(location.startsWith(`${s3.endpoint}/${BUCKET}/cache/`), location);
    const fresh = await fetch(location);
    assert.equal(fresh.status, 200);
    assert.equal(Buffer.from(await fresh.arrayBuffer()).length, upstream.image.layers[0]!.size);
    await sleep((TTL_S + 2) * 1000);
    const stale = await fetch(location);
    await stale.arrayBuffer();
    assert.equal(stale.status, 403);
    // HEAD stays local, whatever the age of any URL.
    const head = await request(replica.mirrorPort!, `/v2/lib/app/blobs/${digest}?ns=registry.test`, { method: 'HEAD' });
    assert.equal(head.status, 200);
  });
});
