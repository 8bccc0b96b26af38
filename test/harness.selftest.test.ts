// tier: e2e
// Proves the e2e harness against real clients (docker-registry, skopeo, dockerd)
// with no proxy in between, so later proxy test failures point at the proxy.
import assert from 'node:assert/strict';
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startCdn } from './harness/cdn.js';
import { startDockerd } from './harness/dockerd.js';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { createTestCA, type TestCA } from './harness/pki.js';
import { blobStoragePath, startRegistry } from './harness/registry.js';
import { assertSkopeoDir, skopeoCopyToDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { startTokenServer } from './harness/token-server.js';

describe('e2e harness self-test', () => {
  const tmp = new TmpDirs();
  let root: string;
  let ca: TestCA;
  /** Holds only ca.crt: skopeo treats any *.key in a cert dir as a client key. */
  let certDir: string;
  let image: Image;

  before(async () => {
    root = await tmp.make('regcache-selftest');
    await mkdir(path.join(root, 'ca'));
    ca = await createTestCA(path.join(root, 'ca'), 'regcache selftest CA');
    certDir = path.join(root, 'certs.d');
    await mkdir(certDir);
    await copyFile(ca.certFile, path.join(certDir, 'ca.crt'));
    image = await makeImage(path.join(root, 'image'), {
      layers: [
        { size: 300_000, seed: 'selftest-a' },
        { size: 70_000, seed: 'selftest-b' },
      ],
    });
  });
  after(() => tmp.cleanup());

  test('TLS registry: push, skopeo pull, access log', async (t) => {
    const dir = path.join(root, 'plain');
    await mkdir(dir);
    const tls = await ca.issue(['localhost', '127.0.0.1'], dir, 'registry');
    const registry = await startRegistry({ dir, tls, caFile: ca.certFile });
    t.after(() => registry.stop());

    await pushImage(registry.url, 'library/selftest', 'v1', image, { caFile: ca.certFile });
    const out = path.join(dir, 'pulled');
    const res = await skopeoCopyToDir(`127.0.0.1:${registry.port}/library/selftest:v1`, out, { dir: path.join(dir, 'skopeo'), certDir });
    assert.equal(res.code, 0, res.stderr);
    await assertSkopeoDir(out, image);

    for (const layer of image.layers) assert.equal(await registry.countBlobGets(layer.digest), 1, layer.digest);
    const manifestGets = (await registry.requests()).filter((e) => e.method === 'GET' && e.path === '/v2/library/selftest/manifests/v1');
    assert.equal(manifestGets.length, 1);
    assert.equal(manifestGets[0]?.status, 200);
  });

  test('token auth + redirect to CDN', async (t) => {
    const dir = path.join(root, 'auth');
    await mkdir(dir);
    const tokens = await startTokenServer({
      dir: path.join(dir, 'token'),
      ca,
      hostnames: ['127.0.0.1'],
      users: { alice: 's3cret' },
      privateRepos: ['alice/private'],
    });
    t.after(() => tokens.stop());
    const registryDir = path.join(dir, 'registry');
    await mkdir(registryDir);
    const tls = await ca.issue(['127.0.0.1'], dir, 'registry');
    // The CDN serves the registry's storage root, which exists once the registry is up.
    const cdnTls = await ca.issue(['127.0.0.1'], dir, 'cdn');
    const storageDir = path.join(registryDir, 'storage');
    await mkdir(storageDir);
    const cdn = await startCdn({ rootDir: storageDir, tls: cdnTls });
    t.after(() => cdn.stop());
    const registry = await startRegistry({
      dir: registryDir,
      tls,
      caFile: ca.certFile,
      auth: { realm: tokens.realm, service: tokens.service, issuer: tokens.issuer, rootCertBundle: tokens.rootCertBundleFile },
      redirectBaseUrl: cdn.url,
    });
    t.after(() => registry.stop());
    assert.equal(registry.storageDir, storageDir);

    for (const repo of ['library/public', 'alice/private']) {
      const token = tokens.mintToken([{ type: 'repository', name: repo, actions: ['pull', 'push'] }], 'seeder');
      await pushImage(registry.url, repo, 'v1', image, { caFile: ca.certFile, token });
    }

    // Anonymous pull of a public repo: token without credentials, blobs from the CDN.
    const out = path.join(dir, 'pulled-public');
    const res = await skopeoCopyToDir(`127.0.0.1:${registry.port}/library/public:v1`, out, { dir: path.join(dir, 'skopeo'), certDir });
    assert.equal(res.code, 0, res.stderr);
    await assertSkopeoDir(out, image);
    const tokenReqs = tokens.requests.filter((r) => r.scopes.includes('repository:library/public:pull'));
    assert.ok(tokenReqs.length >= 1, JSON.stringify(tokens.requests));
    assert.ok(tokenReqs.every((r) => !r.authorization && r.status === 200));
    for (const blob of [image.config, ...image.layers]) {
      const storagePath = blobStoragePath(blob.digest);
      const hits = cdn.requests.filter((r) => r.path === storagePath && r.method === 'GET');
      assert.equal(hits.length, 1, `CDN GETs of ${blob.digest}: ${JSON.stringify(cdn.requests)}`);
      assert.equal(hits[0]?.authorization, false, 'registry credentials must not follow the redirect');
      assert.equal(await registry.countBlobGets(blob.digest), 1);
    }
    assert.ok((await registry.requests()).some((e) => e.status === 307));

    // Private repo: anonymous pull is refused, Basic credentials at the token server work.
    const skopeoDir = path.join(dir, 'skopeo-private');
    const denied = await skopeoCopyToDir(`127.0.0.1:${registry.port}/alice/private:v1`, path.join(dir, 'denied'), { dir: skopeoDir, certDir });
    assert.notEqual(denied.code, 0);
    const allowed = await skopeoCopyToDir(`127.0.0.1:${registry.port}/alice/private:v1`, path.join(dir, 'pulled-private'), {
      dir: skopeoDir,
      certDir,
      creds: 'alice:s3cret',
    });
    assert.equal(allowed.code, 0, allowed.stderr);
    assert.ok(tokens.requests.some((r) => r.user === 'alice' && r.scopes.includes('repository:alice/private:pull')));
  });

  test('dockerd starts and answers', async (t) => {
    const dir = path.join(root, 'dockerd');
    await mkdir(dir);
    const dockerd = await startDockerd({ dir, env: {} });
    t.after(() => dockerd.stop());
    const res = await dockerd.docker(['version', '--format', '{{.Server.Version}}']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout.trim(), /^\d+\.\d+/);
  });
});
