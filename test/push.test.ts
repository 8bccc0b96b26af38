// tier: e2e
// ALLOW_PUSH=true: real pushes through the proxy to an intercepted registry (skopeo: monolithic and
// chunked uploads, a cross-repository mount; dockerd: docker push), nothing of it cached.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startDockerd, type Dockerd } from './harness/dockerd.js';
import type { Regcache } from './harness/regcache.js';
import { assertSkopeoDir, runSkopeo, skopeoCopyToDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { certDirFor, pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';
import { mkdir, copyFile } from 'node:fs/promises';

describe('pushing through regcache with ALLOW_PUSH=true', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let certDir: string;
  let directCertDir: string;
  let dockerd: Dockerd | undefined;

  before(async () => {
    root = await tmp.make('regcache-push');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test', 'registry-1.docker.io'], ['push-a', 'push-b']);
    await pushTo(upstream, 'lib/source', 'v1');
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test', ALLOW_PUSH: 'true' },
      routes: { 'registry.test': upstream.registry.port, 'registry-1.docker.io': upstream.registry.port },
    });
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
    directCertDir = path.join(root, 'direct-certs.d');
    await mkdir(directCertDir);
    await copyFile(upstream.ca.certFile, path.join(directCertDir, 'ca.crt'));
  });

  after(async () => {
    await dockerd?.stop();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  const skopeo = (args: string[]) => runSkopeo(args, { dir: path.join(root, 'skopeo'), env: { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '' } });

  it('pushes a new image from a directory, and copies one across repositories (blob mount)', async () => {
    const local = path.join(root, 'local');
    const fetched = await skopeoCopyToDir(`127.0.0.1:${upstream.registry.port}/lib/source:v1`, local, {
      dir: path.join(root, 'skopeo-direct'),
      certDir: directCertDir,
    });
    assert.equal(fetched.code, 0, fetched.stderr);
    const pushed = await skopeo(['copy', '--dest-cert-dir', certDir, `dir:${local}`, 'docker://registry.test/lib/pushed:v1']);
    assert.equal(pushed.code, 0, pushed.stderr);
    const copied = await skopeo([
      'copy',
      '--src-cert-dir',
      certDir,
      '--dest-cert-dir',
      certDir,
      'docker://registry.test/lib/source:v1',
      'docker://registry.test/lib/copied:v1',
    ]);
    assert.equal(copied.code, 0, copied.stderr);

    for (const repo of ['lib/pushed', 'lib/copied']) {
      const out = path.join(root, `check-${repo.replace('/', '-')}`);
      const check = await skopeoCopyToDir(`127.0.0.1:${upstream.registry.port}/${repo}:v1`, out, {
        dir: path.join(root, 'skopeo-direct'),
        certDir: directCertDir,
      });
      assert.equal(check.code, 0, check.stderr);
      await assertSkopeoDir(out, upstream.image);
    }
    const access = await upstream.registry.requests();
    assert.ok(
      access.some((e) => e.method === 'PUT' && e.path.startsWith('/v2/lib/pushed/blobs/uploads/')),
      'blob uploads reached the registry',
    );
    assert.ok(
      access.some((e) => e.method === 'POST' && e.uri.includes('mount=')),
      'the copy asked for a cross-repository mount',
    );
    assert.ok(access.some((e) => e.method === 'PUT' && e.path === '/v2/lib/copied/manifests/v1'));
    const writes = (await proxy.requests()).filter((l) => l.kind === 'write');
    assert.ok(writes.length > 0 && writes.every((l) => l.cache === 'BYPASS'), 'writes are passed through, never cached');
  });

  it('lets dockerd push', async () => {
    await pushTo(upstream, 'library/source', 'v1'); // Docker Hub's stand-in
    dockerd = await startDockerd({ dir: path.join(root, 'd'), env: { HTTPS_PROXY: proxy.proxyUrl, SSL_CERT_FILE: proxy.caFile } });
    const pulled = await dockerd.docker(['pull', 'docker.io/library/source:v1']);
    assert.equal(pulled.code, 0, pulled.stderr);
    assert.equal((await dockerd.docker(['tag', 'docker.io/library/source:v1', 'registry.test/lib/from-docker:v1'])).code, 0);
    const push = await dockerd.docker(['push', 'registry.test/lib/from-docker:v1']);
    assert.equal(push.code, 0, push.stderr);
    const check = await skopeoCopyToDir(`127.0.0.1:${upstream.registry.port}/lib/from-docker:v1`, path.join(root, 'check-docker'), {
      dir: path.join(root, 'skopeo-direct'),
      certDir: directCertDir,
    });
    assert.equal(check.code, 0, check.stderr);
  });
});
