// tier: e2e
// regcache as a real process in front of an in-process registry-shaped upstream: the cache's rules
// (HIT/MISS, HEAD, Range, verification, coalescing, redirects) and its refusals.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import tls from 'node:tls';
import net from 'node:net';
import http from 'node:http';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import path from 'node:path';
import { run } from './harness/proc.js';
import { createTestCA, type IssuedCert, type TestCA } from './harness/pki.js';
import { requestLines, startRegcache, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { FakeRegistry, makeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';

const REG = 'https://registry.test';
const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');

describe('cache rules against a registry-shaped upstream', () => {
  const tmp = new TmpDirs();
  const upstream = new FakeRegistry();
  const cdn = new FakeRegistry();
  let ca: TestCA;
  let cert: IssuedCert;
  let origin: RunningServer;
  let plain: http.Server;
  let proxy: Regcache;
  let client: ProxyClient;

  before(async () => {
    const dir = await tmp.make('regcache-rules');
    ca = await createTestCA(dir, 'rules test CA');
    cert = await ca.issue(['registry.test', 'cdn.test', 'origin.test', '127.0.0.1'], dir, 'upstream');
    await upstream.start(cert);
    await cdn.start(cert);
    origin = await listenHttps(cert, (_req, res) => void res.end('origin says hi'));
    plain = http.createServer((req, res) => void res.end(`plain ${req.method} ${req.url} host=${req.headers.host}`));
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    proxy = await startRegcache({
      dir,
      env: {
        ADDITIONAL_REGISTRIES: 'registry.test',
        UPSTREAM_CA_FILE: ca.certFile,
        CONNECT_TO: [
          `registry.test:443:127.0.0.1:${upstream.port}`,
          `cdn.test:443:127.0.0.1:${cdn.port}`,
          `origin.test:443:127.0.0.1:${origin.port}`,
          `plain.test:80:127.0.0.1:${(plain.address() as net.AddressInfo).port}`,
        ].join(' '),
      },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    plain?.close();
    await Promise.all([upstream.close(), cdn.close(), origin?.close()]);
    await tmp.cleanup();
  });

  it('MISSes once, then HITs with the same bytes and the registry headers', async () => {
    const blob = upstream.add(makeBlob(300_000, 'hit-miss'));
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    const first = await client.fetch(url, { headers: { authorization: 'Bearer t0ken' } });
    const second = await client.fetch(url);
    assert.equal(first.status, 200);
    assert.equal(second.status, 200);
    assert.ok(first.body.equals(blob.data));
    assert.ok(second.body.equals(blob.data));
    assert.equal(upstream.count('GET', blob.digest), 1);
    assert.equal(upstream.seen.find((r) => r.path.endsWith(blob.digest))?.authorization, 'Bearer t0ken', "the client's Authorization reaches upstream");
    assert.equal(second.headers['content-length'], String(blob.data.length));
    assert.equal(second.headers['docker-content-digest'], blob.digest);
    assert.equal(second.headers['etag'], `"${blob.digest}"`);
    const lines = await requestLines(proxy, (l) => l.digest === blob.digest, 2);
    assert.deepEqual(
      lines.map((l) => l.cache),
      ['MISS', 'HIT'],
    );
    assert.ok(lines.every((l) => l.bytes === blob.data.length));
    const text = await readFile(proxy.logFile, 'utf8');
    assert.ok(!text.includes('t0ken'), 'the token never reaches the log');
  });

  it('keeps a HEAD a HEAD upstream on a MISS and answers it locally on a HIT', async () => {
    const blob = upstream.add(makeBlob(5000, 'head'));
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    const head = await client.fetch(url, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(upstream.count('HEAD', blob.digest), 1);
    assert.equal(upstream.count('GET', blob.digest), 0);
    await client.fetch(url);
    const again = await client.fetch(url, { method: 'HEAD' });
    assert.equal(again.headers['content-length'], '5000');
    assert.equal(upstream.count('GET', blob.digest), 1);
    const lines = await requestLines(proxy, (l) => l.digest === blob.digest, 3);
    assert.deepEqual(
      lines.map((l) => [l.method, l.cache]),
      [
        ['HEAD', 'MISS'],
        ['GET', 'MISS'],
        ['HEAD', 'HIT'],
      ],
    );
  });

  it('answers Range on a HIT with 206 and the exact slice, and 416 past the end', async () => {
    const blob = upstream.add(makeBlob(10_000, 'range'));
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    await client.fetch(url);
    const part = await client.fetch(url, { headers: { range: 'bytes=100-199' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], 'bytes 100-199/10000');
    assert.ok(part.body.equals(blob.data.subarray(100, 200)));
    const beyond = await client.fetch(url, { headers: { range: 'bytes=20000-' } });
    assert.equal(beyond.status, 416);
  });

  it('serves a Range on a MISS from the fill and caches the whole blob', async () => {
    const blob = upstream.add(makeBlob(50_000, 'range-miss'));
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    const part = await client.fetch(url, { headers: { range: 'bytes=49000-' } });
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(blob.data.subarray(49000)));
    assert.equal(upstream.seen.filter((r) => r.path.endsWith(blob.digest))[0]?.range, undefined, 'the fill asks for the whole blob');
    const whole = await client.fetch(url);
    assert.ok(whole.body.equals(blob.data));
    assert.equal(upstream.count('GET', blob.digest), 1);
  });

  it('cuts the client off when upstream bytes do not match the digest, stores nothing, refetches next time', async () => {
    const blob = upstream.add(makeBlob(200_000, 'wrong'), { kind: 'wrong-bytes' });
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    await assert.rejects(client.fetch(url), 'the client must see an error, not a complete body');
    await proxy.waitForLog((l) => l.msg === 'fill failed; nothing stored' && l.digest === blob.digest, 'the fill failure line');
    upstream.behaviour.set(blob.digest, { kind: 'ok' });
    const retry = await client.fetch(url);
    assert.ok(retry.body.equals(blob.data));
    assert.equal(upstream.count('GET', blob.digest), 2, 'nothing was cached from the bad fill');
    await proxy.waitForLog((l) => l.msg === 'request' && l.digest === blob.digest && l.aborted === true, 'the cut request line');
    const lines = (await proxy.requests()).filter((l) => l.digest === blob.digest);
    assert.deepEqual(
      lines.map((l) => l.cache),
      ['MISS', 'MISS'],
    );
  });

  it('cuts the client off when upstream truncates, and stores nothing', async () => {
    const blob = upstream.add(makeBlob(400_000, 'truncated'), { kind: 'truncate', after: 100_000 });
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    await assert.rejects(client.fetch(url));
    const failed = await proxy.waitForLog((l) => l.msg === 'fill failed; nothing stored' && l.digest === blob.digest, 'the fill failure line');
    assert.match(String(failed.reason), /truncated|upstream/);
    upstream.behaviour.set(blob.digest, { kind: 'ok' });
    assert.ok((await client.fetch(url)).body.equals(blob.data));
  });

  it('shares one upstream fetch between concurrent requests for a digest', async () => {
    const blob = upstream.add(makeBlob(2_000_000, 'concurrent'), { kind: 'slow', chunk: 100_000, delayMs: 20 });
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    const results = await Promise.all(Array.from({ length: 10 }, () => client.fetch(url)));
    for (const r of results) assert.ok(r.body.equals(blob.data));
    assert.equal(upstream.count('GET', blob.digest), 1);
    const lines = await requestLines(proxy, (l) => l.digest === blob.digest, 10);
    assert.equal(lines.length, 10);
    assert.ok(lines.filter((l) => l.coalesced).length >= 1, 'some requests joined the running fill');
  });

  it('keeps filling for the others, and for the cache, when a client leaves mid-download', async () => {
    const blob = upstream.add(makeBlob(1_500_000, 'leaver'), { kind: 'slow', chunk: 100_000, delayMs: 20 });
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    const leaver = new AbortController();
    const leaving = request(url, { dispatcher: client.agent, signal: leaver.signal }).then(async (res) => {
      for await (const _chunk of res.body) leaver.abort(); // gone after the first bytes
    });
    const stayer = client.fetch(url);
    await assert.rejects(leaving);
    assert.ok((await stayer).body.equals(blob.data));
    await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit line');
    const alone = upstream.add(makeBlob(800_000, 'alone'), { kind: 'slow', chunk: 100_000, delayMs: 20 });
    const solo = new AbortController();
    await assert.rejects(
      request(`${REG}/v2/lib/app/blobs/${alone.digest}`, { dispatcher: client.agent, signal: solo.signal }).then(async (res) => {
        for await (const _chunk of res.body) solo.abort();
      }),
    );
    await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === alone.digest, 'the lone fill committing');
    const after = await client.fetch(`${REG}/v2/lib/app/blobs/${alone.digest}`);
    assert.ok(after.body.equals(alone.data));
    assert.equal(upstream.count('GET', blob.digest), 1);
    assert.equal(upstream.count('GET', alone.digest), 1);
    const lines = await requestLines(proxy, (l) => l.digest === alone.digest, 2);
    assert.deepEqual(
      lines.map((l) => l.cache),
      ['MISS', 'HIT'],
    );
  });

  it('follows a redirect to another host without sending it the Authorization header', async () => {
    const blob = makeBlob(70_000, 'redirected');
    upstream.add(blob, { kind: 'redirect', location: `https://cdn.test/cdn/${blob.digest}?sig=abc` });
    cdn.add(blob);
    const relative = makeBlob(1000, 'relative-redirect');
    upstream.add(relative, { kind: 'redirect', location: `/cdn/${relative.digest}` });
    const got = await client.fetch(`${REG}/v2/lib/app/blobs/${blob.digest}`, { headers: { authorization: 'Bearer secret' } });
    assert.equal(got.status, 200);
    assert.ok(got.body.equals(blob.data));
    const atCdn = cdn.seen.filter((r) => r.path === `/cdn/${blob.digest}` && r.method === 'GET');
    assert.equal(atCdn.length, 1);
    assert.equal(atCdn[0]?.authorization, undefined, 'no Authorization to the CDN');
    const rel = await client.fetch(`${REG}/v2/lib/app/blobs/${relative.digest}`, { headers: { authorization: 'Bearer secret' } });
    assert.ok(rel.body.equals(relative.data));
    assert.equal(upstream.seen.find((r) => r.path === `/cdn/${relative.digest}`)?.authorization, 'Bearer secret', 'same origin keeps it');
    assert.equal((await client.fetch(`${REG}/v2/lib/app/blobs/${blob.digest}`)).status, 200);
    assert.equal(cdn.seen.filter((r) => r.path === `/cdn/${blob.digest}` && r.method === 'GET').length, 1, 'second request is a HIT');
  });

  it('passes upstream errors through unchanged and caches none of them', async () => {
    const blob = upstream.add(makeBlob(1000, 'unauthorized'), {
      kind: 'status',
      status: 401,
      headers: { 'www-authenticate': 'Bearer realm="https://auth.test/token",service="registry.test"' },
    });
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    const first = await client.fetch(url);
    assert.equal(first.status, 401);
    assert.match(String(first.headers['www-authenticate']), /realm="https:\/\/auth.test\/token"/);
    upstream.behaviour.set(blob.digest, { kind: 'ok' });
    assert.equal((await client.fetch(url)).status, 200);
    assert.equal(upstream.count('GET', blob.digest), 2);
    const missing = await client.fetch(`${REG}/v2/lib/app/blobs/sha256:${'0'.repeat(64)}`);
    assert.equal(missing.status, 404);
  });

  it('stores a manifest fetched by tag so that the by-digest request HITs', async () => {
    const manifest = makeBlob(600, 'manifest', 'application/vnd.oci.image.manifest.v1+json');
    upstream.tags.set('lib/app:v1', manifest);
    upstream.add(manifest);
    const byTag = await client.fetch(`${REG}/v2/lib/app/manifests/v1`);
    assert.ok(byTag.body.equals(manifest.data));
    await proxy.waitForLog((l) => l.kind === 'manifest-by-tag' && l.digest === manifest.digest, 'the tag request line');
    const byDigest = await client.fetch(`${REG}/v2/lib/app/manifests/${manifest.digest}`);
    assert.ok(byDigest.body.equals(manifest.data));
    assert.equal(byDigest.headers['content-type'], 'application/vnd.oci.image.manifest.v1+json');
    assert.equal(upstream.count('GET', `/manifests/${manifest.digest}`), 0);
  });

  it('refuses pushes with 405 naming ALLOW_PUSH, and bad names and digests with 400', async () => {
    const push = await client.fetch(`${REG}/v2/lib/app/blobs/uploads/`, { method: 'POST' });
    assert.equal(push.status, 405);
    assert.match(push.body.toString(), /ALLOW_PUSH/);
    // Sent raw: HTTP clients resolve dot segments before they leave.
    for (const trick of ['/v2/lib/%2e%2e/x', '/v2/lib/../x', '/v2/lib%2fx', '/v2/lib\\x']) {
      const reply = await connectThrough(
        proxy.port,
        'registry.test:443',
        await readFile(proxy.caFile, 'utf8'),
        'registry.test',
        `${trick}/blobs/sha256:${'a'.repeat(64)}`,
      );
      assert.match(reply.body, /^HTTP\/1\.1 400/, trick);
    }
    const badDigest = await client.fetch(`${REG}/v2/lib/app/blobs/sha256:xyz`);
    assert.equal(badDigest.status, 400);
    assert.equal(upstream.seen.filter((r) => r.method === 'POST' || r.path.includes('xyz')).length, 0);
  });

  it('tunnels hosts off the allowlist: the client sees the origin certificate', async () => {
    const peer = await connectThrough(proxy.port, 'origin.test:443', ca.certPem, 'origin.test');
    assert.equal(peer.issuer, 'rules test CA');
    assert.equal(peer.body.split('\r\n\r\n')[1], 'origin says hi');
    const line = await proxy.waitForLog((l) => l.msg === 'tunnel closed' && l.tunnel === 'origin.test:443', 'the tunnel line');
    assert.ok(Number(line.bytesDown) > 0 && Number(line.bytesUp) > 0);
  });

  it('answers a malformed CONNECT with 400 and stays up', async () => {
    for (const target of ['nohost', 'host:0', 'host:65536', ':443', '[zz::1]:443', 'a b:443']) {
      const reply = await rawRequest(proxy.port, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
      assert.match(reply, /^HTTP\/1\.1 400/, target);
    }
    assert.equal((await fetchAdmin(proxy.port, '/')).status, 200);
  });

  it('forwards plain-HTTP absolute-URI requests for hosts off the allowlist', async () => {
    const res = await rawRequest(proxy.port, 'GET http://plain.test/hello?x=1 HTTP/1.1\r\nHost: plain.test\r\nConnection: close\r\n\r\n');
    assert.match(res, /^HTTP\/1\.1 200/);
    assert.match(res, /plain GET \/hello\?x=1 host=plain\.test$/);
  });

  it('listens on IPv6 as well as IPv4', async (t) => {
    const v6 = await new Promise<boolean>((resolve) => {
      const probe = net.createServer().once('error', () => resolve(false));
      probe.listen(0, '::1', () => probe.close(() => resolve(true)));
    });
    if (!v6) return t.skip('this machine has no IPv6 loopback');
    const res = await fetch(`http://[::1]:${proxy.port}/`);
    assert.equal(res.status, 200);
  });

  it('serves its CA at /ca.crt', async () => {
    const res = await fetchAdmin(proxy.port, '/ca.crt');
    assert.equal(res.body, await readFile(proxy.caFile, 'utf8'));
  });
});

async function connectThrough(proxyPort: number, authority: string, caPem: string, servername: string, path = '/'): Promise<{ issuer: string; body: string }> {
  const socket = net.connect(proxyPort, '127.0.0.1');
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  await new Promise<void>((resolve, reject) => {
    socket.once('data', (d: Buffer) => (d.toString().startsWith('HTTP/1.1 200') ? resolve() : reject(new Error(d.toString()))));
    socket.once('error', reject);
  });
  const secure = tls.connect({ socket, servername, ca: caPem });
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve);
    secure.once('error', reject);
  });
  const issuer = secure.getPeerCertificate().issuer.CN ?? '';
  secure.write(`GET ${path} HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`);
  let body = '';
  for await (const chunk of secure) body += chunk;
  return { issuer: String(issuer), body };
}

function rawRequest(port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(text));
    let reply = '';
    socket.on('data', (d: Buffer) => (reply += d.toString()));
    socket.once('close', () => resolve(reply));
    socket.once('error', reject);
    setTimeout(() => socket.destroy(), 3000);
  });
}

async function fetchAdmin(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

describe('shutdown', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('exits at once on a second signal, without waiting for transfers', async () => {
    const dir = await tmp.make('regcache-second-signal');
    const ca = await createTestCA(dir, 'second signal CA');
    const upstream = new FakeRegistry();
    await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
    const blob = upstream.add(makeBlob(2_000_000, 'second-signal'), { kind: 'slow', chunk: 50_000, delayMs: 200 }); // ~8 s
    const proxy = await startRegcache({
      dir,
      env: { ADDITIONAL_REGISTRIES: 'registry.test', UPSTREAM_CA_FILE: ca.certFile, CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}` },
    });
    const client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    try {
      const download = client.fetch(`${REG}/v2/lib/app/blobs/${blob.digest}`).catch((err: Error) => err);
      await new Promise((resolve) => setTimeout(resolve, 300));
      proxy.daemon.child.kill('SIGTERM');
      await proxy.waitForLog((l) => l.msg === 'shutting down', 'the first signal');
      proxy.daemon.child.kill('SIGTERM');
      assert.equal(await proxy.daemon.exited, 'SIGTERM', 'the second signal ends the process itself');
      assert.ok((await download) instanceof Error, 'the transfer was cut, not waited for');
    } finally {
      await client.close();
      await proxy.stop();
      await upstream.close();
    }
  });

  it('lets a download in progress finish on SIGTERM, closes idle connections and exits 0', async () => {
    const dir = await tmp.make('regcache-shutdown');
    const ca = await createTestCA(dir, 'shutdown CA');
    const upstream = new FakeRegistry();
    await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
    const blob = upstream.add(makeBlob(1_000_000, 'shutdown'), { kind: 'slow', chunk: 100_000, delayMs: 50 });
    const proxy = await startRegcache({
      dir,
      env: { ADDITIONAL_REGISTRIES: 'registry.test', UPSTREAM_CA_FILE: ca.certFile, CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}` },
    });
    const idle = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    const busy = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    try {
      assert.equal((await idle.fetch(`${REG}/v2/`)).status, 200); // leaves a keep-alive connection open
      const download = busy.fetch(`${REG}/v2/lib/app/blobs/${blob.digest}`);
      await proxy.waitForLog((l) => l.msg === 'request' && l.kind === 'ping', 'the ping line');
      await new Promise((resolve) => setTimeout(resolve, 150)); // the download is under way
      const started = Date.now();
      proxy.daemon.child.kill('SIGTERM');
      const res = await download;
      assert.equal(res.status, 200);
      assert.ok(res.body.equals(blob.data), 'the download in progress completed');
      assert.equal(await proxy.daemon.exited, 0);
      // Idle keep-alive connections do not hold the process for the whole grace period (8 s).
      assert.ok(Date.now() - started < 6000, `exit took ${Date.now() - started} ms`);
      // The store it left is consistent: the finished blob is there, intact, nothing half-written.
      const cli = (args: string[]) =>
        run(process.execPath, [CLI, 'cache', ...args, '--cache-dir', proxy.cacheDir, '--json'], { env: { PATH: process.env.PATH ?? '' } });
      const listed = JSON.parse((await cli(['ls'])).stdout) as { digest: string }[];
      assert.deepEqual(
        listed.map((e) => e.digest),
        [blob.digest],
      );
      const report = JSON.parse((await cli(['verify'])).stdout) as { corrupt: string[]; missing: string[]; orphans: number };
      assert.deepEqual([report.corrupt, report.missing, report.orphans], [[], [], 0]);
    } finally {
      await idle.close();
      await busy.close();
      await proxy.stop();
      await upstream.close();
    }
  });
});
