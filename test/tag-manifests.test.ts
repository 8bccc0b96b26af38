// tier: e2e
// Manifests by tag against a real docker-registry: revalidated with a HEAD each time, keyed by the
// client's Accept set, moved tags followed, and served STALE when upstream is gone.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeImage, makeIndex, MediaTypes, pushImage, pushIndex, type Image, type ImageIndex } from './harness/images.js';
import type { Regcache } from './harness/regcache.js';
import { assertSkopeoDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { ProxyClient } from './support/proxy-client.js';
import { proxyExchange } from './support/raw-socket.js';
import { certDirFor, pullThrough, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

const DOCKER_ONLY = MediaTypes.dockerManifest;
const WITH_LISTS = [MediaTypes.dockerManifest, MediaTypes.dockerManifestList, MediaTypes.ociManifest, MediaTypes.ociIndex].join(', ');

describe('manifests by tag', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let client: ProxyClient;
  let second: Image;
  let multi: ImageIndex;

  before(async () => {
    root = await tmp.make('regcache-tags');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['tags-a']);
    await pushImage(upstream.registry.url, 'lib/app', 'latest', upstream.image, { caFile: upstream.ca.certFile });
    second = await makeImage(path.join(root, 'second'), { layers: [{ size: 200_000, seed: 'tags-b' }] });
    const arm = await makeImage(path.join(root, 'arm'), { layers: [{ size: 100_000, seed: 'tags-arm' }], arch: 'arm64' });
    multi = await makeIndex(path.join(root, 'multi'), [upstream.image, arm], { format: 'docker' });
    await pushIndex(upstream.registry.url, 'lib/multi', 'v1', multi, { caFile: upstream.ca.certFile });
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test' },
      routes: { 'registry.test': upstream.registry.port },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  let lastMark = 0; // the log's length before the last getTag
  const getTag = async (repo: string, tag: string, accept: string) => {
    lastMark = await proxy.logMark();
    return client.fetch(`https://registry.test/v2/${repo}/manifests/${tag}`, { headers: { accept } });
  };
  // The last getTag's line, waited for: it is written when regcache sees the response close, which on a
  // loaded machine can come after the client has the body and the log looked settled.
  const lastLine = async (repo: string) =>
    proxy.waitForLog((l) => l.msg === 'request' && l.kind === 'manifest-by-tag' && l.path?.includes(`/${repo}/`) === true, `the line of ${repo}`, {
      since: lastMark,
    });
  const manifestGets = async (repo: string, tag: string) =>
    (await upstream.registry.requests()).filter((e) => e.method === 'GET' && e.path === `/v2/${repo}/manifests/${tag}`).length;

  it('revalidates with a HEAD and serves the stored manifest while the tag has not moved', async () => {
    const first = await getTag('lib/app', 'latest', WITH_LISTS);
    assert.ok(first.body.equals(upstream.image.manifest));
    assert.equal((await lastLine('lib/app'))?.cache, 'MISS');
    const again = await getTag('lib/app', 'latest', WITH_LISTS);
    assert.ok(again.body.equals(upstream.image.manifest));
    assert.equal(again.headers['docker-content-digest'], upstream.image.manifestDigest);
    assert.equal((await lastLine('lib/app'))?.cache, 'REVALIDATED');
    assert.equal(await manifestGets('lib/app', 'latest'), 1, 'the second request cost upstream a HEAD only');
    assert.ok((await upstream.registry.requests()).some((e) => e.method === 'HEAD' && e.path === '/v2/lib/app/manifests/latest'));
  });

  it('follows a tag that moved upstream', async () => {
    await pushImage(upstream.registry.url, 'lib/app', 'latest', second, { caFile: upstream.ca.certFile });
    const moved = await getTag('lib/app', 'latest', WITH_LISTS);
    assert.ok(moved.body.equals(second.manifest));
    assert.equal((await lastLine('lib/app'))?.cache, 'MISS');
  });

  it("keeps a client's HEAD a HEAD", async () => {
    const before = await manifestGets('lib/app', 'latest');
    const head = await client.fetch('https://registry.test/v2/lib/app/manifests/latest', { method: 'HEAD', headers: { accept: WITH_LISTS } });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['docker-content-digest'], second.manifestDigest);
    assert.equal(await manifestGets('lib/app', 'latest'), before, 'no GET went upstream');
  });

  it('keys by the Accept set: a schema2-only client never gets a manifest list', async () => {
    const list = await getTag('lib/multi', 'v1', WITH_LISTS);
    assert.equal(list.headers['content-type'], MediaTypes.dockerManifestList);
    assert.ok(list.body.equals(multi.manifest));
    const single = await getTag('lib/multi', 'v1', DOCKER_ONLY);
    assert.equal(single.headers['content-type'], DOCKER_ONLY, 'the registry rewrites a list for a client that cannot take one');
    assert.ok(single.body.equals(upstream.image.manifest));
    const listAgain = await getTag('lib/multi', 'v1', WITH_LISTS);
    assert.equal(listAgain.headers['content-type'], MediaTypes.dockerManifestList);
    const singleAgain = await getTag('lib/multi', 'v1', DOCKER_ONLY);
    assert.equal(singleAgain.headers['content-type'], DOCKER_ONLY);
    assert.equal((await lastLine('lib/multi'))?.cache, 'REVALIDATED');
  });

  it('serves the last known manifest when upstream is gone (STALE), and fails cleanly for what it never saw', async () => {
    const certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
    const warm = await pullThrough(proxy, 'registry.test/lib/app:latest', path.join(root, 'warm'), certDir, path.join(root, 'skopeo'));
    assert.equal(warm.code, 0, warm.stderr);
    for (const digest of [second.config.digest, ...second.layers.map((l) => l.digest)]) {
      await proxy.waitForLog((l) => l.msg === 'content access learned' && l.digest === digest && l.access === 'public', `${digest} known to be public`);
    }
    // The tag moves upstream and a client only HEADs it: the new manifest is never fetched before upstream goes.
    const third = await makeImage(path.join(root, 'third'), { layers: [{ size: 50_000, seed: 'tags-c' }] });
    await pushImage(upstream.registry.url, 'lib/app', 'latest', third, { caFile: upstream.ca.certFile });
    const head = await client.fetch('https://registry.test/v2/lib/app/manifests/latest', { method: 'HEAD', headers: { accept: WITH_LISTS } });
    assert.equal(head.headers['docker-content-digest'], third.manifestDigest);
    await upstream.registry.stop();

    const stale = await getTag('lib/app', 'latest', WITH_LISTS);
    assert.equal(stale.status, 200);
    assert.ok(stale.body.equals(second.manifest));
    assert.match(String(stale.headers.warning), /110/);
    assert.equal((await lastLine('lib/app'))?.cache, 'STALE');
    const pulled = await pullThrough(proxy, 'registry.test/lib/app:latest', path.join(root, 'offline'), certDir, path.join(root, 'skopeo'));
    assert.equal(pulled.code, 0, `an image pulled before still pulls: ${pulled.stderr}`);
    await assertSkopeoDir(path.join(root, 'offline'), second);

    const unknown = await getTag('lib/never', 'v1', WITH_LISTS);
    assert.equal(unknown.status, 502);
    assert.match(unknown.body.toString(), /UNAVAILABLE/);
  });

  it('answers 502 instead with SERVE_STALE=false', async () => {
    await client.close();
    await proxy.stop();
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy-no-stale'),
      cacheDir: proxy.cacheDir,
      env: { ADDITIONAL_REGISTRIES: 'registry.test', SERVE_STALE: 'false' },
      routes: { 'registry.test': upstream.registry.port },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    const res = await getTag('lib/app', 'latest', WITH_LISTS);
    assert.equal(res.status, 502);
  });
});

describe('ENABLE_MANIFEST_CACHE (rpardini tiers)', () => {
  const tmp = new TmpDirs();
  let upstream: Upstream;
  let proxy: Regcache;
  let client: ProxyClient;

  before(async () => {
    const root = await tmp.make('regcache-tiers');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['tiers-a']);
    for (const tag of ['stable', 'feature']) await pushImage(upstream.registry.url, 'lib/app', tag, upstream.image, { caFile: upstream.ca.certFile });
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test', ENABLE_MANIFEST_CACHE: 'true', MANIFEST_CACHE_DEFAULT_TIME: '2s' },
      routes: { 'registry.test': upstream.registry.port },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  const heads = async (tag: string) =>
    (await upstream.registry.requests()).filter((e) => e.method === 'HEAD' && e.path === `/v2/lib/app/manifests/${tag}`).length;
  const get = async (tag: string) => {
    const mark = await proxy.logMark();
    const res = await client.fetch(`https://registry.test/v2/lib/app/manifests/${tag}`, { headers: { accept: WITH_LISTS } });
    assert.ok(res.body.equals(upstream.image.manifest));
    return (await proxy.waitForLog((l) => l.msg === 'request' && l.kind === 'manifest-by-tag', `the line of ${tag}`, { since: mark })).cache;
  };

  it('serves a primary-tier tag without asking upstream, and revalidates a default-tier tag once its time is up', async () => {
    assert.equal(await get('stable'), 'MISS');
    const before = await heads('stable');
    assert.equal(await get('stable'), 'HIT');
    assert.equal(await heads('stable'), before, 'within 10d nothing went upstream');

    assert.equal(await get('feature'), 'REVALIDATED', 'same manifest as stable: already held by digest');
    assert.equal(await get('feature'), 'HIT');
    await new Promise((resolve) => setTimeout(resolve, 2200)); // MANIFEST_CACHE_DEFAULT_TIME=2s
    assert.equal(await get('feature'), 'REVALIDATED');
  });
});

describe('no cache state across schemes', () => {
  const tmp = new TmpDirs();
  let upstream: Upstream;
  let proxy: Regcache;
  let client: ProxyClient;
  let forger: http.Server;
  const forgerSaw: string[] = [];
  // What anyone on a plain-HTTP path can answer: a well-formed manifest whose digest header is right.
  const forged = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: DOCKER_ONLY,
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', size: 2, digest: 'sha256:' + '0'.repeat(64) },
      layers: [],
    }),
  );
  const forgedDigest = 'sha256:' + crypto.createHash('sha256').update(forged).digest('hex');

  before(async () => {
    const root = await tmp.make('regcache-schemes');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['schemes-a']);
    await pushImage(upstream.registry.url, 'lib/app', 'stable', upstream.image, { caFile: upstream.ca.certFile });
    forger = http.createServer((req, res) => {
      forgerSaw.push(`${req.method} ${req.url}`);
      res
        .writeHead(200, { 'content-type': DOCKER_ONLY, 'docker-content-digest': forgedDigest, 'content-length': forged.length })
        .end(req.method === 'HEAD' ? undefined : forged);
    });
    await new Promise<void>((resolve) => forger.listen(0, '127.0.0.1', resolve));
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: {
        ADDITIONAL_REGISTRIES: 'registry.test registry.test:80', // the same registry over plain HTTP too
        ENABLE_MANIFEST_CACHE: 'true', // tags served from the store without asking: what a poisoned pointer would feed
        CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.registry.port} registry.test:80:127.0.0.1:${(forger.address() as net.AddressInfo).port}`,
      },
      routes: {},
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream?.registry.stop();
    forger?.close();
    await tmp.cleanup();
  });

  const plainGet = (tag: string) =>
    proxyExchange(
      proxy.port,
      `GET http://registry.test/v2/lib/app/manifests/${tag} HTTP/1.1\r\nHost: registry.test\r\nAccept: ${DOCKER_ONLY}\r\nConnection: close\r\n\r\n`,
    );

  it('never lets a plain-HTTP answer become what an HTTPS pull is served', async () => {
    const mark = await proxy.logMark();
    assert.match(await plainGet('stable'), /^HTTP\/1\.1 200/);
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.kind === 'manifest-by-tag', 'the plain-HTTP line', { since: mark });
    assert.equal(line?.cache, 'BYPASS');
    assert.equal(line?.reason, 'plain HTTP is never cached');
    const secure = await client.fetch('https://registry.test/v2/lib/app/manifests/stable', { headers: { accept: DOCKER_ONLY } });
    assert.equal(secure.headers['docker-content-digest'], upstream.image.manifestDigest);
    assert.ok(secure.body.equals(upstream.image.manifest), 'the real manifest, not the forged one');
    assert.ok(
      !(await proxy.logs()).some((l) => l.digest === forgedDigest && (l.msg === 'fill committed' || l.cache === 'HIT')),
      'the forged manifest was never stored',
    );
  });

  it('never answers a plain-HTTP request from what HTTPS stored', async () => {
    const before = forgerSaw.length;
    const reply = await plainGet('stable');
    assert.ok(reply.includes(forgedDigest), 'the plain-HTTP origin answered, not the store');
    assert.equal(forgerSaw.length, before + 1);
    const byDigest = await proxyExchange(
      proxy.port,
      `GET http://registry.test/v2/lib/app/manifests/${upstream.image.manifestDigest} HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\n\r\n`,
    );
    assert.ok(byDigest.includes(forgedDigest) && forgerSaw.length === before + 2, 'by digest too');
  });
});
