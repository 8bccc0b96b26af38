// tier: e2e
// Hostile and broken input: each case gets a 4xx or a closed socket and a log line, and the proxy stays up.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { classify } from '../src/registry/request-classifier.js';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { run, waitFor } from './harness/proc.js';
import { startRegcache, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';
import { connectTunnel, exchange } from './support/raw-socket.js';

/**
 * Sends `text` one byte every `everyMs` (a slowloris client) until the server closes the socket; resolves
 * with what came back and how long the socket stayed open.
 */
function dribble(socket: net.Socket | tls.TLSSocket, text: string, everyMs = 100): Promise<{ reply: string; openMs: number }> {
  const started = Date.now();
  return new Promise((resolve) => {
    let reply = '';
    let i = 0;
    const timer = setInterval(() => {
      if (i < text.length && socket.writable) socket.write(text[i++]!);
    }, everyMs);
    const done = () => {
      clearInterval(timer);
      clearTimeout(limit);
      resolve({ reply, openMs: Date.now() - started });
    };
    const limit = setTimeout(() => {
      socket.destroy();
    }, 10_000);
    socket.on('data', (d: Buffer) => (reply += d.toString('latin1')));
    socket.once('close', done);
    socket.on('error', () => undefined);
  });
}

/** The status and registry error code of a raw HTTP/1.1 reply. */
function parseReply(reply: string): { status: number; code: string | undefined } {
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1] ?? 0);
  const body = reply.split('\r\n\r\n').slice(1).join('\r\n\r\n');
  let code: string | undefined;
  try {
    code = (JSON.parse(body) as { errors: { code: string }[] }).errors[0]?.code;
  } catch {
    code = undefined;
  }
  return { status, code };
}

describe('bad input', () => {
  const tmp = new TmpDirs();
  const upstream = new FakeRegistry();
  let proxy: Regcache;
  let client: ProxyClient;
  let caPem: string;

  before(async () => {
    const dir = await tmp.make('regcache-bad-input');
    const ca = await createTestCA(dir, 'bad input CA');
    await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
    proxy = await startRegcache({
      dir,
      env: {
        ADDITIONAL_REGISTRIES: 'registry.test registry.test:80', // :80: plain-HTTP requests get the registry rules too
        UPSTREAM_CA_FILE: ca.certFile,
        CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}`,
        CLIENT_HEADERS_TIMEOUT: '1s', // slowloris cases: short, so that they are quick
        MIRROR_PORT: String(await freePort()),
      },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    caPem = await (await fetch(`${proxy.proxyUrl}/ca.crt`)).text();
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream.close();
    await tmp.cleanup();
  });

  const stillUp = async () => assert.equal((await fetch(`${proxy.proxyUrl}/healthz`)).status, 200);

  it('closes an intercepted tunnel that does not speak TLS', async () => {
    const mark = await proxy.logMark();
    const socket = await connectTunnel(proxy.port, 'registry.test:443');
    const reply = await exchange(socket, 'GET / HTTP/1.1\r\nHost: registry.test\r\n\r\n');
    assert.doesNotMatch(reply, /HTTP\/1\.1 200/);
    await proxy.waitForLog((l) => l.msg === 'TLS interception failed' && l.host === 'registry.test:443', 'a log line about the failed handshake', {
      since: mark,
    });
    await stillUp();
  });

  it("logs a client that rejects regcache's certificate with its address and the hint to install /ca.crt", async () => {
    // curl (OpenSSL) answers an unknown CA with a TLS alert, as dockerd and containerd do.
    const mark = await proxy.logMark();
    const r = await run('curl', ['-sS', '--max-time', '5', '-x', proxy.proxyUrl, 'https://registry.test/v2/'], {
      env: { PATH: process.env.PATH ?? '', HOME: '/nonexistent' },
    });
    assert.notEqual(r.code, 0, 'curl must not trust regcache without its CA');
    const line = await proxy.waitForLog((l) => l.msg === 'TLS interception failed' && /unknown ca/.test(String(l.error)), 'the refusal logged', {
      since: mark,
    });
    assert.match(String(line.client), /127\.0\.0\.1$/);
    assert.match(String(line.hint), /install GET \/ca\.crt/);
    await stillUp();
  });

  it('serves a TLS client that sends no SNI, with the certificate for the CONNECT target', async () => {
    const socket = await connectTunnel(proxy.port, 'registry.test:443');
    const secure = tls.connect({ socket, ca: caPem, checkServerIdentity: () => undefined }); // no servername: no SNI
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    assert.match(secure.getPeerCertificate().subjectaltname ?? '', /DNS:registry\.test/);
    const reply = await exchange(secure, 'GET /v2/ HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\n\r\n');
    assert.match(reply, /^HTTP\/1\.1 200/);
  });

  it('answers oversized and too many headers with 431, on the listener and inside a tunnel', async () => {
    // Each refusal is logged: waited for from a mark taken before it, so one line cannot count for all three.
    const refused = async (where: string, exchanged: () => Promise<string>, what: string): Promise<void> => {
      const mark = await proxy.logMark();
      assert.match(await exchanged(), /^HTTP\/1\.1 431/, what);
      await proxy.waitForLog((l) => l.msg === 'bad request refused' && l.where === where && l.code === 'HPE_HEADER_OVERFLOW', `the refusal line of ${what}`, {
        since: mark,
      });
    };
    const huge = `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`;
    await refused('listener', () => exchange(net.connect(proxy.port, '127.0.0.1'), huge), 'an oversized header');
    const many = `GET / HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 600 }, (_, i) => `X-H${i}: ${'v'.repeat(30)}\r\n`).join('')}\r\n`;
    await refused('listener', () => exchange(net.connect(proxy.port, '127.0.0.1'), many), 'too many headers');
    const socket = await connectTunnel(proxy.port, 'registry.test:443');
    const secure = tls.connect({ socket, ca: caPem, servername: 'registry.test' });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    await refused('intercepted', () => exchange(secure, huge), 'an oversized header in a tunnel');
    await stillUp();
  });

  it('refuses Content-Length together with Transfer-Encoding (request smuggling)', async () => {
    const smuggle = 'POST http://plain.test/ HTTP/1.1\r\nHost: plain.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n';
    assert.match(await exchange(net.connect(proxy.port, '127.0.0.1'), smuggle), /^HTTP\/1\.1 400/);
    await stillUp();
  });

  it('answers absurd Range headers sanely on a HIT', async () => {
    const blob = upstream.add(makeBlob(10_000, 'absurd-range'));
    const url = `https://registry.test/v2/lib/app/blobs/${blob.digest}`;
    await client.fetch(url);
    await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
    for (const range of ['bytes=999999999999999-', 'bytes=5-2', 'bytes=-0', 'bytes=0-1,5-6', 'items=0-5', `bytes=${'9'.repeat(400)}-`]) {
      const res = await client.fetch(url, { headers: { range } });
      assert.ok([200, 206, 416].includes(res.status), `${range}: ${res.status}`);
      if (res.status === 200) assert.ok(res.body.equals(blob.data), range);
    }
    await stillUp();
  });

  it('refuses malformed CONNECT lines with a 4xx and a log line', async () => {
    const lines: [string, RegExp][] = [
      ['CONNECT\r\n\r\n', /bad request refused/],
      ['CONNECT registry.test:443\r\n\r\n', /unsupported HTTP version/], // HTTP/0.9 to Node
      ['CONNECT registry.test:443 HTTP/2.0\r\nHost: x\r\n\r\n', /unsupported HTTP version/],
      ['CONNECT registry.test:443 HTTP/9.9\r\nHost: x\r\n\r\n', /bad request refused/],
      ['CONNECT registry.test:443 HTTP/1.1 extra\r\nHost: x\r\n\r\n', /bad request refused/],
      ['CONNECT  HTTP/1.1\r\nHost: x\r\n\r\n', /unsupported HTTP version/], // target "HTTP/1.1", no version
      ['CONNECT [::1:443 HTTP/1.1\r\nHost: x\r\n\r\n', /malformed CONNECT target refused/],
      ['CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\nHost: x\r\n\r\n', /malformed CONNECT target refused/],
      ['CONNECT registry.test:443:1 HTTP/1.1\r\nHost: x\r\n\r\n', /malformed CONNECT target refused/],
      ['CONNECT registry.test:-1 HTTP/1.1\r\nHost: x\r\n\r\n', /malformed CONNECT target refused/],
      ['CONNECT registry.test:0x1bb HTTP/1.1\r\nHost: x\r\n\r\n', /malformed CONNECT target refused/],
      ['\x00\x01\x02\x03 garbage\r\n\r\n', /bad request refused/],
    ];
    for (const [line, logged] of lines) {
      const before = (await proxy.logs()).length;
      const reply = await exchange(net.connect(proxy.port, '127.0.0.1'), line);
      assert.match(reply, /^HTTP\/1\.1 4\d\d /, JSON.stringify(line));
      await waitFor(async () => (await proxy.logs()).slice(before).some((l) => logged.test(l.msg)), {
        timeoutMs: 3000,
        what: `a log line for ${JSON.stringify(line)}`,
      });
    }
    await stillUp();
  });

  it('cuts off clients that dribble a request head (slowloris) after CLIENT_HEADERS_TIMEOUT, and serves others meanwhile', async () => {
    const mark = await proxy.logMark();
    const slowHead = `GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ${'a'.repeat(200)}`;
    const slowConnect = `CONNECT registry.test:443 HTTP/1.1\r\nHost: registry.test:443\r\nX-Slow: ${'a'.repeat(200)}`;
    const listener = dribble(net.connect(proxy.port, '127.0.0.1'), slowHead);
    const connectLine = dribble(net.connect(proxy.port, '127.0.0.1'), slowConnect);
    const tunnel = await connectTunnel(proxy.port, 'registry.test:443');
    const secure = tls.connect({ socket: tunnel, ca: caPem, servername: 'registry.test' });
    await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
    const inside = dribble(secure, `GET /v2/ HTTP/1.1\r\nHost: registry.test\r\nX-Slow: ${'a'.repeat(200)}`);
    const noHandshake = dribble(await connectTunnel(proxy.port, 'registry.test:443'), '\x16\x03\x01'); // a TLS record header, then nothing
    // Another client is served normally while those hang on.
    const blob = upstream.add(makeBlob(50_000, 'slowloris-bystander'));
    const bystander = await client.fetch(`https://registry.test/v2/lib/app/blobs/${blob.digest}`);
    assert.equal(bystander.status, 200);
    assert.ok(bystander.body.equals(blob.data));
    await stillUp();

    for (const [what, result] of [
      ['listener', listener],
      ['CONNECT line', connectLine],
      ['inside a tunnel', inside],
    ] as const) {
      const { reply, openMs } = await result;
      assert.ok(openMs < 4000, `${what}: closed after ${openMs} ms`);
      assert.match(reply, /^HTTP\/1\.1 408/, `${what}: 408 before the close`);
    }
    assert.ok((await noHandshake).openMs < 4000, `an unfinished handshake is cut too (${(await noHandshake).openMs} ms)`);
    // Waited for, not read once: under load a line can land a moment after the client saw the close.
    for (const where of ['listener', 'intercepted']) {
      await proxy.waitForLog((l) => l.msg === 'bad request refused' && l.where === where && l.code === 'ERR_HTTP_REQUEST_TIMEOUT', `a ${where} line`, {
        timeoutMs: 5000,
        since: mark,
      });
    }
    await proxy.waitForLog((l) => l.msg === 'TLS interception failed' && /handshake timed out/.test(String(l.error)), 'a handshake timeout line', {
      timeoutMs: 5000,
      since: mark,
    });
    await stillUp();
  });

  it('refuses dot segments, encoded separators and bad digests with a registry error: in a tunnel, on the mirror, as a plain-HTTP proxy request', async () => {
    const D = 'a'.repeat(64);
    const tricks: [string, string][] = [
      [`/v2/lib/../x/blobs/sha256:${D}`, 'NAME_INVALID'],
      [`/v2/lib/%2e%2e/x/blobs/sha256:${D}`, 'NAME_INVALID'],
      [`/v2/lib/%2E%2E/x/manifests/sha256:${D}`, 'NAME_INVALID'],
      [`/v2/lib/./x/blobs/sha256:${D}`, 'NAME_INVALID'],
      [`/v2/lib%2fx/blobs/sha256:${D}`, 'NAME_INVALID'],
      [`/v2/lib%2Fx/manifests/latest`, 'NAME_INVALID'],
      [`/v2/lib\\x/blobs/sha256:${D}`, 'NAME_INVALID'],
      [`/v2/../../../etc/passwd`, 'NAME_INVALID'],
      [`/v2/lib/app/blobs/sha256:${D}/..`, 'NAME_INVALID'],
      [`/v2/lib/app/blobs/sha256:${D.slice(1)}`, 'DIGEST_INVALID'],
      [`/v2/lib/app/blobs/sha256:${D.toUpperCase()}`, 'DIGEST_INVALID'],
      [`/v2/lib/app/manifests/sha256:${D}0`, 'DIGEST_INVALID'],
      [`/v2/lib/app/blobs/sha256:`, 'DIGEST_INVALID'],
      [`/v2/lib/app/blobs/sha512:${'b'.repeat(127)}`, 'DIGEST_INVALID'],
      ['//evil.test/v2/', 'UNSUPPORTED'],
    ];
    const seenBefore = upstream.seen.length;
    const linesBefore = (await proxy.requests()).length;
    const transports: [string, (path: string) => Promise<string>][] = [
      [
        'tunnel',
        async (p) => {
          const secure = tls.connect({ socket: await connectTunnel(proxy.port, 'registry.test:443'), ca: caPem, servername: 'registry.test' });
          await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
          return exchange(secure, `GET ${p} HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\n\r\n`);
        },
      ],
      [
        'mirror',
        (p) => exchange(net.connect(proxy.mirrorPort!, '127.0.0.1'), `GET ${p}?ns=registry.test HTTP/1.1\r\nHost: mirror\r\nConnection: close\r\n\r\n`),
      ],
      [
        'forward',
        (p) => exchange(net.connect(proxy.port, '127.0.0.1'), `GET http://registry.test${p} HTTP/1.1\r\nHost: registry.test\r\nConnection: close\r\n\r\n`),
      ],
    ];
    for (const [transport, send] of transports) {
      for (const [trick, code] of tricks) {
        const reply = parseReply(await send(trick));
        assert.deepEqual(reply, { status: 400, code }, `${transport} ${trick}`);
      }
    }
    assert.equal(upstream.seen.length, seenBefore, 'none of them reached upstream');
    const lines = (await proxy.requests()).slice(linesBefore);
    assert.equal(lines.length, tricks.length * transports.length, 'one line each');
    assert.ok(
      lines.every((l) => l.cache === 'REJECTED' && l.status === 400 && typeof l.error === 'string'),
      JSON.stringify(lines.filter((l) => l.cache !== 'REJECTED')),
    );
    await stillUp();
  });

  it('never throws in the request classifier, whatever the path (randomised, bounded)', () => {
    const alphabet = [
      '/',
      '.',
      '..',
      '%2f',
      '%2e',
      '\\',
      'v2',
      'blobs',
      'manifests',
      'sha256:',
      'a',
      'Z',
      ':',
      '?',
      '#',
      '%',
      '\u0000',
      '\u00e9',
      'tags',
      'list',
      'uploads',
      '_catalog',
      '-',
      '__',
    ];
    const random = crypto.createHash('sha256');
    let seed = 0;
    const next = () => {
      seed++;
      return random.copy().update(String(seed)).digest()[0]!;
    };
    for (let i = 0; i < 5000; i++) {
      const parts = Array.from({ length: 1 + (next() % 12) }, () => alphabet[next() % alphabet.length]!);
      const path = (next() % 2 ? '/v2/' : '/') + parts.join('');
      const method = ['GET', 'HEAD', 'PUT', 'DELETE', 'PATCH', 'POST'][next() % 6]!;
      const result = classify(method, path);
      assert.ok(['blob', 'manifest-by-digest', 'manifest-by-tag', 'write', 'passthrough', 'invalid'].includes(result.kind), path);
      if (result.kind === 'blob' || result.kind === 'manifest-by-digest') {
        assert.match(result.digest, /^sha256:[a-f0-9]{64}$/);
        assert.ok(!result.name.split('/').includes('..'), path);
      }
      if (result.kind !== 'invalid') {
        // What goes upstream is new URL(path, origin): it must stay on the host and mean the same request.
        const resolved = new URL(path, 'https://registry.test');
        assert.equal(resolved.host, 'registry.test', path);
        assert.equal(classify(method, resolved.pathname + resolved.search).kind, result.kind, path);
      }
    }
  });

  it('passes no write through under a path that URL resolution would turn into a /v2 path (ALLOW_PUSH is off)', async () => {
    for (const trick of [
      '/token/../v2/lib/app/manifests/pushed',
      '/token/%2e%2e/v2/lib/app/manifests/pushed',
      '/v2\\lib/app/manifests/pushed',
      '/v2#/lib/app/manifests/pushed',
    ]) {
      const secure = tls.connect({ socket: await connectTunnel(proxy.port, 'registry.test:443'), ca: caPem, servername: 'registry.test' });
      await new Promise<void>((resolve, reject) => secure.once('secureConnect', resolve).once('error', reject));
      const reply = await exchange(
        secure,
        `PUT ${trick} HTTP/1.1\r\nHost: registry.test\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}`,
      );
      assert.match(reply, /^HTTP\/1\.1 (400|405) /, trick);
    }
    assert.equal(upstream.seen.filter((r) => r.method === 'PUT').length, 0, 'no PUT reached upstream');
  });

  it('answers every random request inside a tunnel with a 2xx/4xx and a log line (randomised, bounded)', async () => {
    const alphabet = [
      '/',
      '.',
      '..',
      '%2f',
      '%2e',
      '%',
      '\\',
      'v2',
      'blobs',
      'manifests',
      'sha256:',
      'sha512:',
      'a',
      'Z',
      ':',
      '?',
      '\u00e9',
      'tags',
      'list',
      'uploads',
      '_catalog',
      '-',
      '__',
      'ab'.repeat(32),
    ];
    let seed = 0;
    const next = () => crypto.createHash('sha256').update(`router-${seed++}`).digest()[0]!;
    await proxy.requests(); // the earlier tests' last lines (a worker's can come late) are counted before the mark
    const linesBefore = (await proxy.logs()).length;
    const cases = 150;
    const startedAt = Date.now();
    for (let i = 0; i < cases; i++) {
      const parts = Array.from({ length: 1 + (next() % 10) }, () => alphabet[next() % alphabet.length]!);
      const path = (next() % 4 ? '/v2/' : '/') + parts.join('');
      const method = (['GET', 'HEAD', 'PUT', 'DELETE', 'PATCH', 'POST'] as const)[next() % 6]!;
      // Dispatcher.request sends the path as it is (no URL normalisation on the way).
      const res = await client.agent.request({ origin: 'https://registry.test', path, method });
      await res.body.dump();
      assert.ok([200, 400, 404, 405].includes(res.statusCode), `${method} ${path}: ${res.statusCode}`);
    }
    await proxy.requests(); // waits for the log to settle
    // A line an earlier test's request caused can land in the file after the mark (another worker's write):
    // lines are logged when the response ends, so one logged before this test's first request is not its own.
    const lines = (await proxy.logs())
      .slice(linesBefore)
      .filter((l) => (l.msg === 'request' || l.msg === 'bad request refused') && Date.parse(String(l.time)) >= startedAt);
    assert.equal(lines.length, cases, 'one line each: a request line, or the refusal of an unparseable one');
    assert.ok(!lines.some((l) => l.cache === 'MISS' || l.cache === 'HIT'), 'no random path reached the store');
    await stillUp();
  });
});
