// Private images: content upstream would not serve anonymously is only served to clients whose own
// credentials upstream accepts for the repository they name (DENIED otherwise). Token-auth registry,
// test token server, skopeo and raw requests through the proxy.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { makeImage, pushImage, type Image } from './harness/images.js';
import type { Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import type { TokenServer } from './harness/token-server.js';
import { ProxyClient } from './support/proxy-client.js';
import { certDirFor, pullThrough, pushTo, startProxyFor, startTokenAuthUpstream, type Upstream } from './support/upstream-fixture.js';

describe('private images', () => {
  const tmp = new TmpDirs();
  let root: string;
  let tokens: TokenServer;
  let upstream: Upstream;
  let publicImage: Image;
  let proxy: Regcache;
  let client: ProxyClient;
  let certDir: string;

  before(async () => {
    root = await tmp.make('regcache-private');
    const hub = await startTokenAuthUpstream(root, ['registry.test'], ['private-a'], { users: { alice: 's3cret' }, privateRepos: ['alice/private'] });
    ({ upstream, tokens } = hub);
    const seed = hub.seedToken;
    await pushTo(upstream, 'alice/private', 'v1', seed('alice/private'));
    publicImage = await makeImage(path.join(root, 'public'), { layers: [{ size: 300_000, seed: 'public-a' }] });
    await pushImage(upstream.registry.url, 'library/public', 'v1', publicImage, { caFile: upstream.ca.certFile, token: seed('library/public') });
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test auth.test', UPSTREAM_CA_FILE: hub.caBundle },
      routes: { 'registry.test': upstream.registry.port, 'auth.test': tokens.port },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tokens?.stop();
    await tmp.cleanup();
  });

  const pull = (ref: string, out: string, creds?: string) => pullThrough(proxy, ref, path.join(root, out), certDir, path.join(root, 'skopeo'), creds);
  const learned = (digest: string, access: string) =>
    proxy.waitForLog((l) => l.msg === 'content access learned' && l.digest === digest && l.access === access, `${digest} known as ${access}`);
  const anonymousToken = async (repo: string): Promise<string> => {
    const res = await client.fetch(`https://auth.test/token?service=${encodeURIComponent(tokens.service)}&scope=repository:${repo}:pull`);
    return (JSON.parse(res.body.toString()) as { token: string }).token;
  };

  it('learns that a private image is private and a public one public', async () => {
    const alice = await pull('registry.test/alice/private:v1', 'alice-1', 'alice:s3cret');
    assert.equal(alice.code, 0, alice.stderr);
    const anyone = await pull('registry.test/library/public:v1', 'public-1');
    assert.equal(anyone.code, 0, anyone.stderr);
    for (const d of upstream.blobs) await learned(d, 'private');
    for (const d of [publicImage.config.digest, ...publicImage.layers.map((l) => l.digest)]) await learned(d, 'public');
  });

  it('gives no cached private bytes to a client without access, whatever repository it names', async () => {
    const [layer] = upstream.image.layers;
    const bare = await client.fetch(`https://registry.test/v2/alice/private/blobs/${layer!.digest}`);
    assert.equal(bare.status, 401);
    assert.match(String(bare.headers['www-authenticate']), /^Bearer realm="https:\/\/auth\.test\/token"/, 'the client is told where to get a token');
    const elsewhere = await client.fetch(`https://registry.test/v2/library/public/blobs/${layer!.digest}`, { headers: { authorization: `Bearer ${await anonymousToken('library/public')}` } });
    assert.notEqual(elsewhere.status, 200);
    assert.ok(!elsewhere.body.includes(Buffer.from('ustar')), 'no layer bytes');
    const denied = (await proxy.requests()).filter((l) => l.digest === layer!.digest && l.cache === 'DENIED');
    assert.equal(denied.length, 2);
    const anonymousPull = await pull('registry.test/alice/private:v1', 'anonymous');
    assert.notEqual(anonymousPull.code, 0);
  });

  it('serves the owner from the cache, and public content to anyone', async () => {
    const before = await upstream.registry.requests();
    const again = await pull('registry.test/alice/private:v1', 'alice-2', 'alice:s3cret');
    assert.equal(again.code, 0, again.stderr);
    const gets = (await upstream.registry.requests()).slice(before.length).filter((e) => e.method === 'GET' && e.path.includes('/blobs/'));
    assert.equal(gets.length, 0, 'blobs came from the cache');
    const lines = (await proxy.requests()).filter((l) => l.kind === 'blob' && upstream.blobs.includes(String(l.digest)));
    assert.ok(lines.slice(-upstream.blobs.length).every((l) => l.cache === 'HIT'));

    const publicAgain = await client.fetch(`https://registry.test/v2/library/public/blobs/${publicImage.layers[0]!.digest}`);
    assert.equal(publicAgain.status, 200, 'public content needs no credentials on a HIT');
  });
});
