// tier: e2e
// End to end with real parts: distribution's docker-registry as the TLS upstream, skopeo as the client
// (HTTPS_PROXY pointing at regcache), regcache as a real process routed to the registry by CONNECT_TO.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readdir, readFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { startCdn, type Cdn } from './harness/cdn.js';
import { assertSkopeoDir } from './harness/skopeo.js';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { blobStoragePath } from './harness/registry.js';
import type { LogLine, Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import type { TokenServer } from './harness/token-server.js';
import { startForwardProxy, type ForwardProxy } from './support/forward-proxy.js';
import { makeRpardiniCa, RPARDINI_PASSPHRASE } from './support/rpardini-ca.js';
import { certDirFor, pullThrough, pushTo, startProxyFor, startUpstream, startTokenAuthUpstream, type Upstream } from './support/upstream-fixture.js';

const blobLines = (lines: LogLine[]): LogLine[] => lines.filter((l) => l.kind === 'blob' && l.method === 'GET');

describe('skopeo through regcache, real docker-registry upstream', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let certDir: string;

  before(async () => {
    root = await tmp.make('regcache-e2e-skopeo');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test', 'origin.test'], ['skopeo-a', 'skopeo-b', 'skopeo-c']);
    await pushTo(upstream, 'lib/app', 'v1', undefined);
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test' },
      routes: { 'registry.test': upstream.registry.port, 'origin.test': upstream.registry.port },
    });
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('first copy MISSes every blob, the second HITs them all with identical bytes; upstream serves each blob once', async () => {
    const first = path.join(root, 'first');
    const second = path.join(root, 'second');
    const mark = (await proxy.logs()).length;
    const r1 = await pullThrough(proxy, 'registry.test/lib/app:v1', first, certDir, path.join(root, 'skopeo'));
    assert.equal(r1.code, 0, r1.stderr);
    const cold = blobLines(await proxy.requests(mark));
    assert.deepEqual(
      cold.map((l) => l.cache),
      upstream.blobs.map(() => 'MISS'),
    );
    assert.deepEqual(new Set(cold.map((l) => l.digest)), new Set(upstream.blobs));

    const mark2 = (await proxy.logs()).length;
    const r2 = await pullThrough(proxy, 'registry.test/lib/app:v1', second, certDir, path.join(root, 'skopeo'));
    assert.equal(r2.code, 0, r2.stderr);
    const warm = blobLines(await proxy.requests(mark2));
    assert.deepEqual(
      warm.map((l) => l.cache),
      upstream.blobs.map(() => 'HIT'),
    );

    await assertSkopeoDir(first, upstream.image);
    await assertSkopeoDir(second, upstream.image);
    for (const name of await readdir(first)) {
      assert.ok((await readFile(path.join(first, name))).equals(await readFile(path.join(second, name))), name);
    }
    for (const digest of upstream.blobs) assert.equal(await upstream.registry.countBlobGets(digest), 1, digest);
  });

  it('tunnels a host off the allowlist: the client sees the origin certificate, not a minted one', async () => {
    const socket = net.connect(proxy.port, '127.0.0.1');
    socket.write('CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n');
    const reply = await new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString())));
    assert.match(reply, /^HTTP\/1\.1 200/);
    const secure = tls.connect({ socket, servername: 'origin.test', ca: upstream.ca.certPem });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    assert.equal(secure.getPeerCertificate().issuer.CN, 'upstream test CA');
    secure.end('GET /v2/ HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n');
    let body = '';
    for await (const chunk of secure) body += chunk;
    assert.match(body, /^HTTP\/1\.1 200/);
    const line = await proxy.waitForLog((l) => l.msg === 'tunnel closed' && l.tunnel === 'origin.test:443', 'the tunnel log line');
    assert.ok(Number(line.bytesUp) > 0 && Number(line.bytesDown) > 0);
  });
});

describe('ten concurrent cold pulls of one image', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;

  before(async () => {
    root = await tmp.make('regcache-e2e-herd');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['herd-a', 'herd-b', 'herd-c', 'herd-d']);
    await pushTo(upstream, 'lib/herd', 'v1');
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test' },
      routes: { 'registry.test': upstream.registry.port },
    });
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('fetches each blob from upstream once and gives every client identical bytes', async () => {
    const certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
    const outs = Array.from({ length: 10 }, (_, i) => path.join(root, `out-${i}`));
    const results = await Promise.all(outs.map((out, i) => pullThrough(proxy, 'registry.test/lib/herd:v1', out, certDir, path.join(root, `skopeo-${i}`))));
    results.forEach((r, i) => assert.equal(r.code, 0, `client ${i}: ${r.stderr}`));
    for (const out of outs) await assertSkopeoDir(out, upstream.image);
    for (const digest of upstream.blobs) assert.equal(await upstream.registry.countBlobGets(digest), 1, digest);
    const lines = blobLines(await proxy.requests());
    assert.equal(lines.length, 10 * upstream.blobs.length);
    assert.ok(
      lines.every((l) => l.status === 200),
      JSON.stringify(lines.filter((l) => l.status !== 200)),
    );
  });
});

describe('a Docker-Hub-shaped upstream: token auth and blobs redirected to a CDN', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let tokens: TokenServer;
  let cdn: Cdn;
  let proxy: Regcache;

  before(async () => {
    root = await tmp.make('regcache-e2e-hub');
    const hub = await startTokenAuthUpstream(
      root,
      ['registry.test'],
      ['hub-a', 'hub-b'],
      { users: { alice: 's3cret' }, privateRepos: ['alice/private'] },
      { redirectBaseUrl: 'https://cdn.test' },
    );
    ({ upstream, tokens } = hub);
    // The CDN serves the registry's storage root, under the token CA's name for cdn.test (in the bundle).
    cdn = await startCdn({ rootDir: upstream.registry.storageDir, tls: await hub.tokenCa.issue(['cdn.test', '127.0.0.1'], root, 'cdn') });
    for (const repo of ['library/public', 'alice/private']) await pushTo(upstream, repo, 'v1', hub.seedToken(repo));
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test auth.test', UPSTREAM_CA_FILE: hub.caBundle },
      routes: { 'registry.test': upstream.registry.port, 'auth.test': tokens.port, 'cdn.test': cdn.port },
    });
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await cdn?.stop();
    await tokens?.stop();
    await tmp.cleanup();
  });

  it('follows the 307 inside the proxy, sends no Authorization to the CDN, caches by digest', async () => {
    const certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
    const first = await pullThrough(proxy, 'registry.test/library/public:v1', path.join(root, 'first'), certDir, path.join(root, 'skopeo'));
    assert.equal(first.code, 0, first.stderr);
    await assertSkopeoDir(path.join(root, 'first'), upstream.image);
    assert.ok(
      tokens.requests.some((r) => r.scopes.includes('repository:library/public:pull') && r.status === 200),
      'the token came through the proxy',
    );

    for (const digest of upstream.blobs) {
      const gets = cdn.requests.filter((r) => r.path === blobStoragePath(digest) && r.method === 'GET');
      assert.equal(gets.length, 1, `CDN GETs of ${digest}`);
      assert.equal(gets[0]?.authorization, false, 'the registry token must not follow the redirect');
    }
    const misses = blobLines(await proxy.requests()).filter((l) => l.cache === 'MISS');
    assert.deepEqual(new Set(misses.map((l) => l.digest)), new Set(upstream.blobs));

    // After each commit regcache asks the origin, in the background, whether the blob is public (a HEAD the
    // registry redirects to the CDN): wait for those answers, or one arriving late is counted below.
    for (const digest of upstream.blobs) {
      await proxy.waitForLog((l) => l.msg === 'content access learned' && l.digest === digest && l.access === 'public', `${digest} known to be public`);
    }
    // The same bytes under another repository (another token): served from the cache, by digest.
    const cdnBefore = cdn.requests.length;
    const mark = (await proxy.logs()).length;
    const second = await pullThrough(proxy, 'registry.test/alice/private:v1', path.join(root, 'second'), certDir, path.join(root, 'skopeo'), 'alice:s3cret');
    assert.equal(second.code, 0, second.stderr);
    await assertSkopeoDir(path.join(root, 'second'), upstream.image);
    assert.deepEqual(
      blobLines(await proxy.requests(mark)).map((l) => l.cache),
      upstream.blobs.map(() => 'HIT'),
    );
    assert.deepEqual(cdn.requests.slice(cdnBefore), [], 'nothing more from the CDN');

    const logText = await readFile(proxy.logFile, 'utf8');
    assert.doesNotMatch(logText, /s3cret|YWxpY2U6czNjcmV0|Bearer /, 'credentials and tokens stay out of the log');
  });
});

describe('UPSTREAM_PROXY carries cache fills and tunnels', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let corporate: ForwardProxy;
  let origin: RunningServer;
  let proxy: Regcache;

  before(async () => {
    root = await tmp.make('regcache-e2e-upstream-proxy');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test', 'origin.test'], ['corp-a']);
    await pushTo(upstream, 'lib/corp', 'v1');
    origin = await listenHttps(await upstream.ca.issue(['origin.test'], root, 'origin'), (_req, res) => void res.end('origin says hi'));
    corporate = await startForwardProxy({ user: 'proxyuser', pass: 'pr0xy-pass' });
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test', UPSTREAM_PROXY: `http://proxyuser:pr0xy-pass@127.0.0.1:${corporate.port}` },
      routes: { 'registry.test': upstream.registry.port, 'origin.test': origin.port },
    });
  });

  after(async () => {
    await proxy?.stop();
    await corporate?.close();
    await origin?.close();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('sends the fill through the forward proxy with its credentials', async () => {
    const certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
    const res = await pullThrough(proxy, 'registry.test/lib/corp:v1', path.join(root, 'out'), certDir, path.join(root, 'skopeo'));
    assert.equal(res.code, 0, res.stderr);
    await assertSkopeoDir(path.join(root, 'out'), upstream.image);
    const toRegistry = corporate.connects.filter((c) => c.target === `127.0.0.1:${upstream.registry.port}`);
    assert.ok(toRegistry.length >= 1 && toRegistry.every((c) => c.authorized), JSON.stringify(corporate.connects));
    for (const digest of upstream.blobs) assert.equal(await upstream.registry.countBlobGets(digest), 1);
  });

  it('chains a tunnel through the forward proxy', async () => {
    const before = corporate.connects.length;
    assert.match(await tunnelGet(proxy.port, 'origin.test', upstream.ca.certPem), /origin says hi$/);
    assert.deepEqual(corporate.connects.slice(before), [{ target: `127.0.0.1:${origin.port}`, authorized: true }]);
    assert.doesNotMatch(await readFile(proxy.logFile, 'utf8'), /pr0xy-pass|cHJveHl1c2VyOnByMHh5LXBhc3M=/);
  });

  it('goes direct for hosts in NO_PROXY', async () => {
    const direct = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy-no-proxy'),
      env: { UPSTREAM_PROXY: `http://127.0.0.1:${corporate.port}`, NO_PROXY: '.test' },
      routes: { 'origin.test': origin.port },
    });
    try {
      const before = corporate.connects.length;
      assert.match(await tunnelGet(direct.port, 'origin.test', upstream.ca.certPem), /origin says hi$/);
      assert.equal(corporate.connects.length, before);
    } finally {
      await direct.stop();
    }
  });
});

/** CONNECT host:443 through the proxy, then GET / over TLS trusting only caPem; returns the raw response. */
async function tunnelGet(proxyPort: number, host: string, caPem: string): Promise<string> {
  const socket = net.connect(proxyPort, '127.0.0.1');
  socket.write(`CONNECT ${host}:443 HTTP/1.1\r\nHost: ${host}:443\r\n\r\n`);
  const reply = await new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString())));
  assert.match(reply, /^HTTP\/1\.1 200/);
  const secure = tls.connect({ socket, servername: host, ca: caPem });
  secure.end(`GET / HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
  let body = '';
  for await (const chunk of secure) body += chunk;
  return body;
}

// Migrating from rpardini/docker-registry-proxy: its /ca volume (ca.key encrypted with its passphrase) is
// given to regcache as it is, and a client that trusted rpardini's CA pulls through regcache unchanged.
describe("a client that trusted rpardini's CA, through regcache on rpardini's /ca", () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;

  before(async () => {
    root = await tmp.make('regcache-e2e-rpardini-ca');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['rpardini-a', 'rpardini-b']);
    await pushTo(upstream, 'lib/app', 'v1');
    await makeRpardiniCa(path.join(root, 'ca'));
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('pulls with the trust it had (MISS, then HIT); ca.key stays encrypted; the log says which passphrase opened it', async () => {
    const caDir = path.join(root, 'ca');
    const keyBefore = await readFile(path.join(caDir, 'ca.key'), 'utf8');
    // The client's trust, set up against rpardini's proxy before regcache ever started.
    const certDir = path.join(root, 'client-certs.d');
    await mkdir(certDir);
    await copyFile(path.join(caDir, 'ca.crt'), path.join(certDir, 'ca.crt'));

    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      caDir,
      env: { ADDITIONAL_REGISTRIES: 'registry.test' },
      routes: { 'registry.test': upstream.registry.port },
    });
    const lines = await proxy.logs();
    assert.ok(
      lines.some((l) => l.msg === 'loaded CA' && l.created === false && l.keyEncrypted === true),
      'the CA was loaded, not created',
    );
    assert.ok(
      lines.some(
        (l) => l.level === 'warn' && /CA_KEY_PASSPHRASE is unset: opened it with rpardini\/docker-registry-proxy's published default passphrase/.test(l.msg),
      ),
      'the log says the default passphrase opened ca.key',
    );
    assert.ok(!JSON.stringify(lines).includes(RPARDINI_PASSPHRASE), 'the passphrase itself is not logged');

    for (const [out, expected] of [
      ['first', 'MISS'],
      ['second', 'HIT'],
    ] as const) {
      const mark = (await proxy.logs()).length;
      const r = await pullThrough(proxy, 'registry.test/lib/app:v1', path.join(root, out), certDir, path.join(root, 'skopeo'));
      assert.equal(r.code, 0, r.stderr);
      await assertSkopeoDir(path.join(root, out), upstream.image);
      assert.deepEqual(
        blobLines(await proxy.requests(mark)).map((l) => l.cache),
        upstream.blobs.map(() => expected),
      );
    }
    assert.equal(await readFile(path.join(caDir, 'ca.key'), 'utf8'), keyBefore, 'ca.key is unchanged: still encrypted');
  });
});
