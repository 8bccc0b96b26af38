// tier: e2e
// "Every image pulled before still pulls" with upstream down, for every client and both doors: dockerd,
// containerd (ctr) and skopeo, each through the proxy (HTTPS_PROXY) and through the mirror (registry-mirrors,
// hosts.toml, a mirror URL). dockerd and containerd resolve a tag with a HEAD and GET the manifest by
// digest, so the tag must be learned from the HEAD; each client sends its own Accept set, so with upstream
// down any stored manifest of the tag that the client accepts must do. Real daemons, real registry.
import assert from 'node:assert/strict';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startContainerd, type Containerd } from './harness/containerd.js';
import { startDockerd, type Dockerd } from './harness/dockerd.js';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { freePort } from './harness/ports.js';
import { run, type RunResult } from './harness/proc.js';
import type { Regcache } from './harness/regcache.js';
import { assertSkopeoDir, runSkopeo } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { certDirFor, pullThrough, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');

describe('every image pulled before still pulls with upstream down', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let viaProxy: Dockerd;
  let viaMirror: Dockerd;
  let containerd: Containerd;
  let hostsDir: string;
  let certDir: string;
  const images = new Map<string, Image>(); // door -> the image only that door pulls (a cold pull each)
  const DOORS = ['dockerd-proxy', 'dockerd-mirror', 'ctr-proxy', 'ctr-mirror', 'skopeo-proxy', 'skopeo-mirror'];

  before(async () => {
    root = await tmp.make('regcache-offline');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry-1.docker.io'], ['offline-0']);
    for (const door of DOORS) {
      const image = await makeImage(path.join(root, 'images', door), { layers: [{ size: 150_000, seed: `offline-${door}` }] });
      await pushImage(upstream.registry.url, `library/${door}`, 'v1', image, { caFile: upstream.ca.certFile });
      images.set(door, image);
    }
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { MIRROR_PORT: String(await freePort()) },
      routes: { 'registry-1.docker.io': upstream.registry.port },
    });
    const mirror = `127.0.0.1:${proxy.mirrorPort}`;
    viaProxy = await startDockerd({ dir: path.join(root, 'dp'), env: { HTTPS_PROXY: proxy.proxyUrl, SSL_CERT_FILE: proxy.caFile } });
    viaMirror = await startDockerd({
      dir: path.join(root, 'dm'),
      env: {},
      daemonConfig: { 'registry-mirrors': [`http://${mirror}`], 'insecure-registries': [mirror] },
    });
    containerd = await startContainerd({ dir: path.join(root, 'c') });
    hostsDir = path.join(root, 'hosts');
    await mkdir(path.join(hostsDir, 'docker.io'), { recursive: true });
    await writeFile(
      path.join(hostsDir, 'docker.io', 'hosts.toml'),
      `server = "https://registry-1.docker.io"\n[host."http://${mirror}"]\n  capabilities = ["pull", "resolve"]\n`,
    );
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
    await mkdir(path.join(root, 'out'));
  });

  after(async () => {
    await viaProxy?.stop();
    await viaMirror?.stop();
    await containerd?.stop();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  /** One pull of the door's own image into a fresh place; round is 1 or 2. */
  const pull = async (door: string, round: number): Promise<RunResult> => {
    const ref = `docker.io/library/${door}:v1`;
    const out = path.join(root, 'out', `${door}-${round}`);
    switch (door) {
      case 'dockerd-proxy':
        return viaProxy.docker(['pull', ref]);
      case 'dockerd-mirror':
        return viaMirror.docker(['pull', ref]);
      case 'ctr-proxy':
        return containerd.ctr(['images', 'pull', ref], { HTTPS_PROXY: proxy.proxyUrl, SSL_CERT_FILE: proxy.caFile });
      case 'ctr-mirror':
        return containerd.ctr(['images', 'pull', '--hosts-dir', hostsDir, ref]);
      case 'skopeo-proxy':
        return pullThrough(proxy, `registry-1.docker.io/library/${door}:v1`, out, certDir, path.join(root, 'skopeo'));
      default:
        return runSkopeo(['copy', '--src-tls-verify=false', `docker://127.0.0.1:${proxy.mirrorPort}/library/${door}:v1`, `dir:${out}`], {
          dir: path.join(root, 'skopeo'),
        });
    }
  };

  /** What each client keeps locally goes, so that the second pull has to ask regcache for everything. */
  const forget = async (door: string): Promise<void> => {
    const ref = `docker.io/library/${door}:v1`;
    if (door === 'dockerd-proxy') assert.equal((await viaProxy.docker(['rmi', ref])).code, 0);
    if (door === 'dockerd-mirror') assert.equal((await viaMirror.docker(['rmi', ref])).code, 0);
    if (door.startsWith('ctr')) {
      assert.equal((await containerd.ctr(['images', 'rm', ref])).code, 0);
      await containerd.ctr(['content', 'prune', 'references']); // the blobs too: nothing left to reuse
    }
  };

  it('pulls each image once while upstream is up, and learns every tag, also from a HEAD', async () => {
    for (const door of DOORS) {
      const first = await pull(door, 1);
      assert.equal(first.code, 0, `${door}: ${first.stderr}`);
    }
    for (const door of DOORS) {
      const manifest = images.get(door)!.manifestDigest;
      await proxy.waitForLog((l) => l.msg === 'content access learned' && l.digest === manifest, `${door}'s manifest stored and classified`);
      const tags = await (await fetch(`http://127.0.0.1:${proxy.mirrorPort}/v2/library/${door}/tags/list`)).json();
      assert.deepEqual(tags, { name: `library/${door}`, tags: ['v1'] }, door);
    }
    const listing = (await (await fetch(`${proxy.proxyUrl}/api/v1/cache`)).json()) as {
      registries: Record<string, { repositories: { name: string; tags: string[] }[] }>;
    };
    const repositories = Object.values(listing.registries).flatMap((r) => r.repositories.map((repo) => repo.name));
    for (const door of DOORS) assert.ok(repositories.includes(`library/${door}`), `${door} in /api/v1/cache: ${repositories.join(', ')}`);
  });

  it('pulls each image again with upstream down: the tag from the cache (STALE), the content HIT', async () => {
    for (const door of DOORS) await forget(door);
    await upstream.registry.stop();
    for (const door of DOORS) {
      const mark = (await proxy.logs()).length;
      const again = await pull(door, 2);
      assert.equal(again.code, 0, `${door}: ${again.stderr}`);
      const lines = await proxy.requests(mark);
      assert.ok(
        lines.some((l) => l.kind === 'manifest-by-tag' && l.cache === 'STALE'),
        `${door}: ${JSON.stringify(lines)}`,
      );
      const blobs = lines.filter((l) => l.kind === 'blob' && l.method === 'GET');
      assert.ok(blobs.length > 0 && blobs.every((l) => l.cache === 'HIT'), `${door}: ${JSON.stringify(blobs)}`);
      if (door.startsWith('skopeo')) await assertSkopeoDir(path.join(root, 'out', `${door}-2`), images.get(door)!);
    }
  });

  it('removes an image whose tag was learned from a HEAD with cache rm', async () => {
    const removed = await run(process.execPath, [CLI, 'cache', 'rm', 'ctr-mirror:v1'], { env: { PATH: process.env.PATH ?? '', CACHE_DIR: proxy.cacheDir } });
    assert.equal(removed.code, 0, removed.stderr);
    const tags = await (await fetch(`http://127.0.0.1:${proxy.mirrorPort}/v2/library/ctr-mirror/tags/list`)).json();
    assert.deepEqual(tags, { name: 'library/ctr-mirror', tags: [] });
  });
});
