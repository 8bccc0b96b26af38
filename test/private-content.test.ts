// tier: e2e
// Private images: content upstream would not serve anonymously is only served to clients whose own
// credentials upstream accepts for the repository they name (DENIED otherwise), only for the origin it
// came from, and a refusal is exactly upstream's answer. Token-auth registry, test token server, a hostile
// TLS server as another origin, skopeo, the mirror and raw requests through the proxy.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import bcrypt from 'bcryptjs';
import { after, before, describe, it } from 'node:test';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { requestLines, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import type { TokenServer } from './harness/token-server.js';
import { ProxyClient } from './support/proxy-client.js';
import { certDirFor, pullThrough, pushTo, startProxyFor, startTokenAuthUpstream, startUpstream, type Upstream } from './support/upstream-fixture.js';

describe('private images', () => {
  const tmp = new TmpDirs();
  let root: string;
  let tokens: TokenServer;
  let upstream: Upstream;
  let publicImage: Image;
  let proxy: Regcache;
  let client: ProxyClient;
  let certDir: string;
  let hostile: RunningServer;
  const hostileSaw: string[] = [];

  before(async () => {
    root = await tmp.make('regcache-private');
    const hub = await startTokenAuthUpstream(root, ['registry.test'], ['private-a'], { users: { alice: 's3cret' }, privateRepos: ['alice/private'] });
    ({ upstream, tokens } = hub);
    const seed = hub.seedToken;
    await pushTo(upstream, 'alice/private', 'v1', seed('alice/private'));
    publicImage = await makeImage(path.join(root, 'public'), { layers: [{ size: 300_000, seed: 'public-a' }] });
    await pushImage(upstream.registry.url, 'library/public', 'v1', publicImage, { caFile: upstream.ca.certFile, token: seed('library/public') });
    hostile = await startHostileOrigin(upstream, root, hostileSaw);
    proxy = await startProxyWithOtherOrigins(
      upstream,
      hostile,
      root,
      { 'auth.test': tokens.port },
      { ADDITIONAL_REGISTRIES: 'auth.test', UPSTREAM_CA_FILE: hub.caBundle },
    );
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tokens?.stop();
    await hostile?.close();
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
    const elsewhere = await client.fetch(`https://registry.test/v2/library/public/blobs/${layer!.digest}`, {
      headers: { authorization: `Bearer ${await anonymousToken('library/public')}` },
    });
    assert.notEqual(elsewhere.status, 200);
    assert.ok(!elsewhere.body.includes(Buffer.from('ustar')), 'no layer bytes');
    // Each line is written when regcache sees its response close, which may come after the client has it.
    const denied = async () => (await proxy.requests()).filter((l) => l.digest === layer!.digest && l.cache === 'DENIED');
    await waitFor(async () => (await denied()).length >= 2, { timeoutMs: 10_000, what: 'both refusals logged DENIED' });
    assert.equal((await denied()).length, 2);
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

  originBindingTests(() => ({ proxy, client, upstream, hostileSaw, repo: 'alice/private' }));
});

describe('private images on a registry with htpasswd (Basic) auth', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let client: ProxyClient;
  let hostile: RunningServer;
  const hostileSaw: string[] = [];

  before(async () => {
    root = await tmp.make('regcache-private-basic');
    const htpasswd = path.join(root, 'htpasswd');
    await writeFile(htpasswd, `bob:${bcrypt.hashSync('b0b-pass', 4)}\n`);
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['basic-a'], { htpasswd });
    await pushImage(upstream.registry.url, 'bob/private', 'v1', upstream.image, { caFile: upstream.ca.certFile, basic: 'bob:b0b-pass' });
    hostile = await startHostileOrigin(upstream, root, hostileSaw);
    proxy = await startProxyWithOtherOrigins(upstream, hostile, root, {}, {});
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    const pulled = await pullThrough(
      proxy,
      'registry.test/bob/private:v1',
      path.join(root, 'bob'),
      await certDirFor(proxy, path.join(root, 'certs.d')),
      path.join(root, 'skopeo'),
      'bob:b0b-pass',
    );
    assert.equal(pulled.code, 0, pulled.stderr);
    for (const d of upstream.blobs) {
      await proxy.waitForLog((l) => l.msg === 'content access learned' && l.digest === d && l.access === 'private', `${d} known as private`);
    }
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream?.registry.stop();
    await hostile?.close();
    await tmp.cleanup();
  });

  it('serves the owner from the cache', async () => {
    const digest = upstream.image.layers[0]!.digest;
    const mark = await proxy.logMark();
    const res = await client.fetch(`https://registry.test/v2/bob/private/blobs/${digest}`, {
      headers: { authorization: `Basic ${Buffer.from('bob:b0b-pass').toString('base64')}` },
    });
    assert.equal(res.status, 200);
    assert.equal((await requestLines(proxy, (l) => l.digest === digest, 1, { since: mark }))[0]?.cache, 'HIT');
  });

  originBindingTests(() => ({ proxy, client, upstream, hostileSaw, repo: 'bob/private' }));
});

/** Another origin that says yes to everything: another allowlisted host, and the same host on another port. */
function startHostileOrigin(upstream: Upstream, root: string, saw: string[]): Promise<RunningServer> {
  return upstream.ca.issue(['evil.test', 'registry.test'], root, 'hostile').then((tls) =>
    listenHttps(tls, (req, res) => {
      saw.push(`${req.method} ${req.url}`);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': 8 }).end(req.method === 'HEAD' ? undefined : 'hostile\n');
    }),
  );
}

/** regcache in front of the private registry (registry.test), with evil.test and registry.test:4443 allowlisted too. */
async function startProxyWithOtherOrigins(
  upstream: Upstream,
  hostile: RunningServer,
  root: string,
  routes: Record<string, number>,
  env: Record<string, string>,
): Promise<Regcache> {
  const connectTo = Object.entries({ 'registry.test': upstream.registry.port, ...routes }).map(([host, port]) => `${host}:443:127.0.0.1:${port}`);
  return startProxyFor(upstream, {
    dir: path.join(root, 'proxy'),
    env: {
      ...env,
      ADDITIONAL_REGISTRIES: `registry.test evil.test registry.test:4443 ${env.ADDITIONAL_REGISTRIES ?? ''}`,
      MIRROR_PORT: String(await freePort()),
      CONNECT_TO: [...connectTo, `evil.test:443:127.0.0.1:${hostile.port}`, `registry.test:4443:127.0.0.1:${hostile.port}`].join(' '),
    },
    routes: {},
  });
}

interface OriginContext {
  proxy: Regcache;
  client: ProxyClient;
  upstream: Upstream;
  hostileSaw: string[];
  repo: string; // the private repository, already pulled by its owner through proxy
}

/** Cached private content and other origins: the same tests whatever auth the private registry uses. */
function originBindingTests(ctx: () => OriginContext): void {
  const isLayer = (body: Buffer, digest: string) => 'sha256:' + crypto.createHash('sha256').update(body).digest('hex') === digest;

  it('never serves cached private bytes for another origin: another host, the same host on another port, or the mirror ns=', async () => {
    const { proxy, client, upstream, hostileSaw, repo } = ctx();
    const [layer] = upstream.image.layers;
    const asked = [`https://evil.test/v2/${repo}/blobs/${layer!.digest}`, `https://registry.test:4443/v2/${repo}/blobs/${layer!.digest}`];
    for (const url of asked) {
      const res = await client.fetch(url).catch((err: Error) => err);
      assert.ok(res instanceof Error || !isLayer(res.body, layer!.digest), `${url} gave the private layer`);
    }
    const mirrored = await fetch(`http://127.0.0.1:${proxy.mirrorPort}/v2/${repo}/blobs/${layer!.digest}?ns=evil.test`)
      .then(async (r) => Buffer.from(await r.arrayBuffer()))
      .catch((err: Error) => err); // a cut connection: the fill found the hostile bytes wrong
    assert.ok(mirrored instanceof Error || !isLayer(mirrored, layer!.digest), 'the mirror gave the private layer');
    // Each went to the origin it named, as for content never seen: none was a HIT.
    assert.equal(hostileSaw.filter((r) => r === `GET /v2/${repo}/blobs/${layer!.digest}`).length, 3);
    const lines = (await proxy.requests()).filter((l) => l.digest === layer!.digest && (l.host === 'evil.test' || l.host === 'registry.test:4443'));
    assert.equal(lines.length, 3);
    assert.ok(
      lines.every((l) => l.cache === 'MISS'),
      JSON.stringify(lines),
    );
  });

  it('answers a refused request for cached private content exactly as upstream answers for content it does not have', async () => {
    const { client, upstream, repo } = ctx();
    const stored = upstream.image.layers[0]!.digest;
    const unknown = 'sha256:' + crypto.randomBytes(32).toString('hex');
    const ask = async (digest: string, method: 'GET' | 'HEAD') => {
      const res = await client.fetch(`https://registry.test/v2/${repo}/blobs/${digest}`, { method });
      return {
        status: res.status,
        body: res.body.toString(),
        challenge: res.headers['www-authenticate'],
        type: res.headers['content-type'],
        length: res.headers['content-length'],
      };
    };
    for (const method of ['GET', 'HEAD'] as const) {
      const [a, b] = [await ask(stored, method), await ask(unknown, method)];
      assert.equal(a.status, 401);
      assert.deepEqual(a, b, `${method}: a cached digest must not be told from an unknown one`);
    }
  });
}
