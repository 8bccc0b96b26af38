// tier: e2e
// Faults around a running proxy: an upstream that answers 429/5xx or does not speak HTTP at all, and a
// CA that cannot be loaded at startup. Every case: no wrong byte served or stored, a log line saying what
// happened, and (at run time) the process still serving afterwards. Truncation, wrong bytes, stalls, bad
// upstream certificates, leaving clients, kill -9 and a full disk are in proxy-cache, upstream-options,
// upstream-tls and cache-store.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { copyFile, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { loadOrCreateCa } from '../src/tls/certificate-authority.js';
import { createTestCA } from './harness/pki.js';
import { run } from './harness/proc.js';
import { startRegcache, type LogLine, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { makeRpardiniCa } from './support/rpardini-ca.js';
import { FakeRegistry, makeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';

const REG = 'https://registry.test';
const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const sha256 = (data: Buffer) => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');

// Upstreams that accept TLS, read the request, then answer something that is not HTTP (chosen by SNI).
const NOT_HTTP: Record<string, (socket: tls.TLSSocket) => void> = {
  'garbage.test': (s) => s.end(crypto.randomBytes(512)),
  'badstatus.test': (s) => s.end('HTTP/1.1 2000 Whatever\r\nContent-Length: 3\r\n\r\nabc'),
  'badheader.test': (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nthis is no header\r\n\r\nabc'),
  'smuggle.test': (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n'),
  'twolengths.test': (s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde'),
  'silent.test': (s) => s.end(), // closes without a byte
};

describe('upstream faults', () => {
  const tmp = new TmpDirs();
  const upstream = new FakeRegistry();
  let notHttp: tls.Server;
  let proxy: Regcache;
  let client: ProxyClient;

  before(async () => {
    const dir = await tmp.make('regcache-faults');
    const ca = await createTestCA(dir, 'faults CA');
    const cert = await ca.issue(['registry.test', ...Object.keys(NOT_HTTP)], dir, 'upstream');
    await upstream.start(cert);
    notHttp = tls.createServer({ cert: await readFile(cert.certFile), key: await readFile(cert.keyFile) }, (socket) => {
      socket.once('data', () => NOT_HTTP[socket.servername || '']?.(socket) ?? socket.destroy());
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => notHttp.listen(0, '127.0.0.1', resolve));
    const notHttpPort = (notHttp.address() as { port: number }).port;
    proxy = await startRegcache({
      dir,
      env: {
        ADDITIONAL_REGISTRIES: ['registry.test', ...Object.keys(NOT_HTTP)].join(' '),
        UPSTREAM_CA_FILE: ca.certFile,
        CONNECT_TO: [`registry.test:443:127.0.0.1:${upstream.port}`, ...Object.keys(NOT_HTTP).map((h) => `${h}:443:127.0.0.1:${notHttpPort}`)].join(' '),
      },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream.close();
    await new Promise((resolve) => notHttp?.close(resolve));
    await tmp.cleanup();
  });

  const stillServing = async () => {
    assert.equal((await fetch(`${proxy.proxyUrl}/healthz`)).status, 200);
    const probe = upstream.add(makeBlob(1000, `probe-${crypto.randomUUID()}`));
    const res = await client.fetch(`${REG}/v2/lib/app/blobs/${probe.digest}`);
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), probe.digest);
  };
  const requestLine = (digest: string, status: number) =>
    proxy.waitForLog((l) => l.msg === 'request' && l.digest === digest && l.status === status, `the ${status} request line for ${digest}`);

  it('relays 429 (with Retry-After), 500 and 503 for blobs and manifests by digest, stores none, then stores the 200', async () => {
    const cases: [number, Record<string, string>][] = [
      [429, { 'retry-after': '7' }],
      [500, {}],
      [503, { 'retry-after': '2' }],
    ];
    for (const [status, headers] of cases) {
      for (const route of ['blobs', 'manifests'] as const) {
        const item = upstream.add(makeBlob(20_000, `status-${status}-${route}`, route === 'manifests' ? MANIFEST : undefined), {
          kind: 'status',
          status,
          headers,
        });
        const url = `${REG}/v2/lib/app/${route}/${item.digest}`;
        const refused = await client.fetch(url);
        assert.equal(refused.status, status, `${route} ${status}`);
        assert.equal(refused.headers['retry-after'], headers['retry-after'], `${route} ${status}: Retry-After passed on`);
        const line = await requestLine(item.digest, status);
        assert.equal(line.reason, `upstream answered ${status}; not cached`);

        upstream.behaviour.set(item.digest, { kind: 'ok' });
        const fetched = await client.fetch(url);
        assert.equal(fetched.status, 200);
        assert.equal(sha256(fetched.body), item.digest);
        await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === item.digest, 'the commit of the 200');
        const again = await client.fetch(url);
        assert.ok(again.body.equals(item.data));
        assert.equal(upstream.count('GET', item.digest), 2, `${route} ${status}: the error was not cached, the 200 was`);
        // The HIT's line is written when regcache sees its response close, which can come after the client
        // has the body (on a loaded machine, after the log looked settled): waited for.
        await proxy.waitForLog((l) => l.msg === 'request' && l.digest === item.digest && l.cache === 'HIT', 'the HIT line');
        const lines = (await proxy.requests()).filter((l) => l.digest === item.digest);
        assert.deepEqual(
          lines.map((l) => [l.cache, l.status]),
          [
            ['MISS', status],
            ['MISS', 200],
            ['HIT', 200],
          ],
        );
      }
    }
    await stillServing();
  });

  it('relays 429 for a tag it never saw, and serves the last known manifest (STALE) on 503', async () => {
    upstream.behaviour.set('lib/app:busy', { kind: 'status', status: 429, headers: { 'retry-after': '30' } });
    const busy = await client.fetch(`${REG}/v2/lib/app/manifests/busy`);
    assert.equal(busy.status, 429);
    assert.equal(busy.headers['retry-after'], '30');
    await proxy.waitForLog((l) => l.msg === 'request' && l.path === '/v2/lib/app/manifests/busy' && l.status === 429, 'the 429 line');

    const manifest = upstream.add(makeBlob(700, 'faults-tag', MANIFEST));
    upstream.tags.set('lib/app:v1', manifest);
    const fresh = await client.fetch(`${REG}/v2/lib/app/manifests/v1`);
    assert.equal(sha256(fresh.body), manifest.digest);
    // The by-digest lookup waits for the tag's manifest to be stored (and so its pointer to be set).
    const byDigest = await client.fetch(`${REG}/v2/lib/app/manifests/${manifest.digest}`);
    assert.ok(byDigest.body.equals(manifest.data));
    assert.equal(upstream.count('GET', `/manifests/${manifest.digest}`), 0, 'stored from the tag request');
    upstream.behaviour.set('lib/app:v1', { kind: 'status', status: 503 });
    const stale = await client.fetch(`${REG}/v2/lib/app/manifests/v1`);
    assert.equal(stale.status, 200);
    assert.ok(stale.body.equals(manifest.data));
    assert.match(String(stale.headers.warning), /^110 /);
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.path === '/v2/lib/app/manifests/v1' && l.cache === 'STALE', 'the STALE line');
    assert.match(String(line.reason), /status 503/);
    upstream.behaviour.delete('lib/app:v1');
    await stillServing();
  });

  it('answers 502 when the upstream does not speak HTTP, stores nothing, and stays up', async () => {
    const blob = makeBlob(5000, 'not-http');
    for (const host of Object.keys(NOT_HTTP)) {
      for (const target of [`/v2/lib/app/blobs/${blob.digest}`, '/v2/lib/app/manifests/latest', '/v2/lib/app/tags/list']) {
        const res = await client.fetch(`https://${host}${target}`);
        assert.equal(res.status, 502, `${host}${target}`);
        assert.equal((JSON.parse(res.body.toString()) as { errors: { code: string }[] }).errors[0]?.code, 'UNAVAILABLE');
        const line = await proxy.waitForLog((l) => l.msg === 'request' && l.host === host && l.path === target, `the line for ${host}${target}`);
        assert.equal(line.status, 502);
        assert.match(String(line.error), /^upstream: /, `${host}${target}: the log says why`);
      }
    }
    const listed = await run(process.execPath, [CLI, 'cache', 'ls', '--cache-dir', proxy.cacheDir, '--json'], { env: { PATH: process.env.PATH ?? '' } });
    assert.ok(!listed.stdout.includes(blob.digest), 'nothing stored from a garbage answer');
    await stillServing();
  });
});

describe('a CA that cannot be loaded stops startup with one clear line', () => {
  const tmp = new TmpDirs();
  let dir: string;
  let good: { cert: string; key: string };

  before(async () => {
    dir = await tmp.make('regcache-bad-ca');
    const { ca } = await loadOrCreateCa(path.join(dir, 'good'));
    good = { cert: ca.certFile, key: path.join(dir, 'good', 'ca.key') };
  });
  after(() => tmp.cleanup());

  const serve = (caDir: string, name: string) =>
    run(process.execPath, [CLI, 'serve'], {
      env: { PATH: process.env.PATH ?? '', PORT: '0', MIRROR_PORT: '0', CA_DIR: caDir, CACHE_DIR: path.join(dir, `cache-${name}`) },
      timeoutMs: 15_000,
    });

  // prepare(caseDir) sets the fault up and returns the CA_DIR to start with.
  const withPair = async (caDir: string, cert: string | null, key: string | null) => {
    await mkdir(caDir, { recursive: true });
    await (cert === null ? copyFile(good.cert, path.join(caDir, 'ca.crt')) : writeFile(path.join(caDir, 'ca.crt'), cert));
    await (key === null ? copyFile(good.key, path.join(caDir, 'ca.key')) : writeFile(path.join(caDir, 'ca.key'), key));
    return caDir;
  };
  // `startup: true`: found by the startup checks, before the CA is touched (a line naming CA_DIR).
  const cases: { name: string; prepare: (caseDir: string) => Promise<string>; file: string; problem: RegExp; startup?: true }[] = [
    {
      name: 'CA_DIR under a regular file',
      prepare: async (caseDir) => {
        await writeFile(path.join(caseDir, 'file'), 'not a directory');
        return path.join(caseDir, 'file', 'certs');
      },
      file: '',
      problem: /^CA_DIR=.*\/file\/certs: .*\/file is not a directory/,
      startup: true,
    },
    {
      name: 'CA_DIR a regular file',
      prepare: async (caseDir) => {
        await writeFile(path.join(caseDir, 'certs'), 'not a directory');
        return path.join(caseDir, 'certs');
      },
      file: '',
      problem: /^CA_DIR=.*\/certs: .*\/certs is not a directory/,
      startup: true,
    },
    {
      name: 'CA_DIR a dangling link (cannot be created)',
      prepare: async (caseDir) => {
        await symlink(path.join(caseDir, 'nowhere', 'at-all'), path.join(caseDir, 'certs'));
        return path.join(caseDir, 'certs');
      },
      file: '',
      problem: /^cannot create a CA in .*: ENOENT/,
    },
    {
      name: 'ca.crt a directory',
      prepare: async (caseDir) => {
        await mkdir(path.join(caseDir, 'certs', 'ca.crt'), { recursive: true });
        await copyFile(good.key, path.join(caseDir, 'certs', 'ca.key'));
        return path.join(caseDir, 'certs');
      },
      file: 'ca.crt',
      problem: /EISDIR/,
    },
    {
      name: 'ca.crt garbage',
      prepare: (caseDir) => withPair(path.join(caseDir, 'certs'), 'this is not a certificate\n', null),
      file: 'ca.crt',
      problem: /is not a PEM certificate/,
    },
    {
      name: 'ca.crt cut in half',
      prepare: async (caseDir) => {
        const pem = await readFile(good.cert, 'utf8');
        return withPair(path.join(caseDir, 'certs'), pem.slice(0, pem.length >> 1) + '\n-----END CERTIFICATE-----\n', null);
      },
      file: 'ca.crt',
      problem: /is not a PEM certificate/,
    },
    {
      name: 'ca.key garbage',
      prepare: (caseDir) => withPair(path.join(caseDir, 'certs'), null, '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n'),
      file: 'ca.key',
      problem: /is not a PEM private key \(.*\): restore the ca\.key that belongs to ca\.crt, or move both files aside/,
    },
    {
      // rpardini's CA with its passphrase changed: the old message blamed the format ("interrupted or cancelled").
      name: 'ca.key encrypted with a passphrase neither CA_KEY_PASSPHRASE nor rpardini default opens',
      prepare: async (caseDir) => {
        await makeRpardiniCa(path.join(caseDir, 'certs'), { passphrase: 'not-the-default' });
        return path.join(caseDir, 'certs');
      },
      file: 'ca.key',
      problem:
        /is encrypted, CA_KEY_PASSPHRASE is unset and rpardini's default passphrase does not open it \((bad decrypt|unsupported)\): set CA_KEY_PASSPHRASE to the passphrase/,
    },
  ];

  for (const c of cases) {
    it(`${c.name}: exits 1 at once, naming the file and the problem`, async () => {
      const slug = c.name.replace(/\W+/g, '-');
      const caseDir = path.join(dir, slug);
      await mkdir(caseDir);
      const caDir = await c.prepare(caseDir);
      const started = Date.now();
      const r = await serve(caDir, slug);
      assert.equal(r.code, 1, `exit code; stdout: ${r.stdout} stderr: ${r.stderr}`);
      assert.ok(Date.now() - started < 10_000, 'no hang');
      const lines = r.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as LogLine);
      const fatal = lines.filter((l) => l.level === 'fatal');
      assert.equal(fatal.length, 1, r.stdout);
      assert.equal(fatal[0]?.msg, c.startup ? 'startup failed' : 'cannot load the CA');
      if (c.startup) assert.equal(fatal[0]?.variable, 'CA_DIR');
      const error = String(fatal[0]?.error);
      assert.ok(error.includes(path.join(caDir, c.file)), `names ${path.join(caDir, c.file)}: ${error}`);
      assert.match(error, c.problem);
      assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at /, 'no stack trace');
      assert.ok(!lines.some((l) => l.msg === 'listening'));
    });
  }
});
