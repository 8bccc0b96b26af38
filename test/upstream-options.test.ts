// tier: e2e
// Upstream options: AUTH_REGISTRIES credentials (injected only when the client sent none), configurable
// timeouts, and Docker Hub's rate-limit header in the log.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../src/config/config.js';
import { createTestCA } from './harness/pki.js';
import { startRegcache, type Regcache } from './harness/regcache.js';
import { skopeoCopyToDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import type { TokenServer } from './harness/token-server.js';
import { FakeRegistry, makeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';
import { certDirFor, pushTo, startProxyFor, startTokenAuthUpstream, type Upstream } from './support/upstream-fixture.js';

describe('AUTH_REGISTRIES parsing', () => {
  it('reads host:user:pass entries, with rpardini delimiters, passwords may hold the field delimiter', () => {
    assert.deepEqual(loadConfig({ AUTH_REGISTRIES: 'auth.docker.io:me:t0k:en quay.io:robot:pw' }).authRegistries, [
      { host: 'auth.docker.io', user: 'me', password: 't0k:en' },
      { host: 'quay.io', user: 'robot', password: 'pw' },
    ]);
    const custom = loadConfig({ AUTH_REGISTRIES: 'ghcr.io#me#p w;reg.local:5000#u#x', AUTH_REGISTRIES_DELIMITER: ';', AUTH_REGISTRY_DELIMITER: '#' });
    assert.deepEqual(
      custom.authRegistries.map((c) => [c.host, c.user, c.password]),
      [
        ['ghcr.io', 'me', 'p w'],
        ['reg.local:5000', 'u', 'x'],
      ],
    );
  });
  it('refuses a malformed entry without echoing it', () => {
    assert.throws(
      () => loadConfig({ AUTH_REGISTRIES: 'quay.io:onlyuser-s3cret' }),
      (e: Error) => e instanceof ConfigError && /AUTH_REGISTRIES/.test(e.message) && !/s3cret/.test(e.message),
    );
  });
});

describe('AUTH_REGISTRIES against a token-auth registry', () => {
  const tmp = new TmpDirs();
  let root: string;
  let tokens: TokenServer;
  let upstream: Upstream;
  let proxy: Regcache;
  let certDir: string;

  before(async () => {
    root = await tmp.make('regcache-auth-registries');
    const hub = await startTokenAuthUpstream(root, ['registry.test'], ['authreg-a'], { users: { alice: 's3cret' }, privateRepos: ['alice/private'] });
    ({ upstream, tokens } = hub);
    await pushTo(upstream, 'alice/private', 'v1', hub.seedToken('alice/private'));
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test auth.test', UPSTREAM_CA_FILE: hub.caBundle, AUTH_REGISTRIES: 'auth.test:alice:s3cret' },
      routes: { 'registry.test': upstream.registry.port, 'auth.test': tokens.port },
    });
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await tokens?.stop();
    await tmp.cleanup();
  });

  const pull = (out: string, creds?: string) =>
    skopeoCopyToDir('registry.test/alice/private:v1', path.join(root, out), {
      dir: path.join(root, 'skopeo'),
      certDir,
      env: { HTTPS_PROXY: proxy.proxyUrl, NO_PROXY: '' },
      ...(creds ? { creds } : {}),
    });

  it('lets an anonymous client pull a private image with the configured credentials', async () => {
    const r = await pull('anonymous');
    assert.equal(r.code, 0, r.stderr);
    assert.ok(tokens.requests.some((t) => t.user === 'alice' && t.scopes.includes('repository:alice/private:pull')));
    assert.doesNotMatch(await readFile(proxy.logFile, 'utf8'), /s3cret|YWxpY2U6czNjcmV0/);
  });

  it("never overrides the client's own credentials", async () => {
    const before = tokens.requests.length;
    const r = await pull('wrong', 'mallory:guess');
    assert.notEqual(r.code, 0, 'the wrong credentials were used, not replaced');
    assert.ok(tokens.requests.slice(before).every((t) => t.user !== 'alice'));
  });
});

describe('upstream timeouts and rate-limit logging', () => {
  const tmp = new TmpDirs();
  const upstream = new FakeRegistry();
  let proxy: Regcache;
  let client: ProxyClient;

  before(async () => {
    const dir = await tmp.make('regcache-upstream-options');
    const ca = await createTestCA(dir, 'options CA');
    await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
    proxy = await startRegcache({
      dir,
      env: {
        ADDITIONAL_REGISTRIES: 'registry.test',
        UPSTREAM_CA_FILE: ca.certFile,
        CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}`,
        UPSTREAM_HEADERS_TIMEOUT: '1s',
        UPSTREAM_IDLE_TIMEOUT: '1s',
      },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream.close();
    await tmp.cleanup();
  });

  it('answers 504 when upstream sends no headers within UPSTREAM_HEADERS_TIMEOUT', async () => {
    const blob = upstream.add(makeBlob(1000, 'hang'), { kind: 'hang' });
    const res = await client.fetch(`https://registry.test/v2/lib/app/blobs/${blob.digest}`);
    assert.equal(res.status, 504);
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.digest === blob.digest, 'the request line');
    assert.match(String(line.error), /timeout/i);
  });

  it('cuts a download whose upstream falls silent for UPSTREAM_IDLE_TIMEOUT, and keeps nothing', async () => {
    const blob = upstream.add(makeBlob(400_000, 'stall'), { kind: 'slow', chunk: 100_000, delayMs: 2500 });
    await assert.rejects(client.fetch(`https://registry.test/v2/lib/app/blobs/${blob.digest}`));
    const failed = await proxy.waitForLog((l) => l.msg === 'fill failed; nothing stored' && l.digest === blob.digest, 'the failed fill');
    assert.match(String(failed.error), /timeout/i);
  });

  it("logs Docker Hub's ratelimit-remaining", async () => {
    const manifest = makeBlob(300, 'rl-manifest', 'application/vnd.oci.image.manifest.v1+json');
    upstream.tags.set('lib/app:rl', manifest);
    await client.fetch('https://registry.test/v2/lib/app/manifests/rl');
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.kind === 'manifest-by-tag', 'the tag line');
    assert.equal(line.ratelimitRemaining, '99;w=21600');
  });
});
