// tier: e2e
// A private dockerd (Debian's docker.io) pulling docker.io/library/<name> through regcache: Docker Hub is
// played by a real docker-registry that CONNECT_TO routes registry-1.docker.io to.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDockerd, type Dockerd } from './harness/dockerd.js';
import type { Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

describe('dockerd pulls docker.io images through regcache', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let dockerd: Dockerd;

  before(async () => {
    root = await tmp.make('regcache-e2e-dockerd');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry-1.docker.io'], ['dockerd-a', 'dockerd-b']);
    await pushTo(upstream, 'library/hello', 'v1');
    proxy = await startProxyFor(upstream, { dir: path.join(root, 'proxy'), routes: { 'registry-1.docker.io': upstream.registry.port } });
    // Go reads SSL_CERT_FILE instead of the system roots: dockerd trusts regcache's CA and nothing else.
    dockerd = await startDockerd({ dir: path.join(root, 'd'), env: { HTTPS_PROXY: proxy.proxyUrl, SSL_CERT_FILE: proxy.caFile } });
  });

  after(async () => {
    await dockerd?.stop();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('MISSes on the first pull and HITs after docker rmi, with the same image id', async () => {
    const first = await dockerd.docker(['pull', 'docker.io/library/hello:v1']);
    assert.equal(first.code, 0, first.stderr);
    const id1 = (await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'hello:v1'])).stdout.trim();
    assert.equal(id1, upstream.image.config.digest);
    const cold = (await proxy.requests()).filter((l) => l.kind === 'blob' && l.method === 'GET');
    assert.deepEqual(new Set(cold.map((l) => l.digest)), new Set(upstream.blobs));
    assert.ok(
      cold.every((l) => l.cache === 'MISS' && l.host === 'registry-1.docker.io'),
      JSON.stringify(cold),
    );

    const rmi = await dockerd.docker(['rmi', 'hello:v1']);
    assert.equal(rmi.code, 0, rmi.stderr);
    const mark = (await proxy.logs()).length;
    const second = await dockerd.docker(['pull', 'docker.io/library/hello:v1']);
    assert.equal(second.code, 0, second.stderr);
    const warm = (await proxy.requests(mark)).filter((l) => l.kind === 'blob' && l.method === 'GET');
    assert.deepEqual(new Set(warm.map((l) => l.digest)), new Set(upstream.blobs));
    assert.ok(
      warm.every((l) => l.cache === 'HIT'),
      JSON.stringify(warm),
    );
    assert.equal((await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', 'hello:v1'])).stdout.trim(), id1);
    for (const digest of upstream.blobs) assert.equal(await upstream.registry.countBlobGets(digest), 1, digest);
  });
});
