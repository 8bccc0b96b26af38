// tier: e2e
// PROXY_AUTH: htpasswd (bcrypt, SHA) or inline users; real skopeo and dockerd with credentials in
// HTTPS_PROXY; 407 without them; the proxy's own endpoints stay open.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { ConfigError } from '../src/config/config.js';
import { PasswordGuard } from '../src/auth/password-guard.js';
import { UserSet } from '../src/auth/user-set.js';
import { startDockerd, type Dockerd } from './harness/dockerd.js';
import type { Regcache } from './harness/regcache.js';
import { assertSkopeoDir, skopeoCopyToDir } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import { basic, sha } from './support/credentials.js';
import { certDirFor, pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

describe('PROXY_AUTH users', () => {
  const tmp = new TmpDirs();
  const guard = new PasswordGuard();
  after(async () => {
    await guard.close();
    await tmp.cleanup();
  });
  const load = (value: string) => UserSet.load(value, 'PROXY_AUTH', guard);
  // Each check from its own address: this is about what passes, not about throttling.
  let client = 0;
  const passes = async (auth: UserSet, header: string | undefined) => 'users' in (await auth.check(header, `10.9.0.${client++}`));

  it('accepts bcrypt and SHA htpasswd entries and refuses everything else', async () => {
    const file = path.join(await tmp.make('regcache-htpasswd'), 'htpasswd');
    await writeFile(file, `# team\nalice:${bcrypt.hashSync('wonder land', 4).replace('$2b$', '$2y$')}\nbob:${sha('b0b')}\n`);
    const auth = load(file);
    assert.equal(await passes(auth, basic('alice', 'wonder land')), true);
    assert.equal(await passes(auth, basic('alice', 'wonder land')), true, 'remembered');
    assert.equal(await passes(auth, basic('bob', 'b0b')), true);
    for (const bad of [basic('alice', 'wrong'), basic('bob', 'B0B'), basic('carol', 'x'), 'Bearer abc', 'Basic !!!', undefined]) {
      assert.equal(await passes(auth, bad), false, String(bad));
    }
  });

  it('takes an inline list', async () => {
    const auth = load('ci:t0ken ops:s3cret');
    assert.equal(await passes(auth, basic('ops', 's3cret')), true);
    assert.equal(await passes(auth, basic('ops', 't0ken')), false);
  });

  it('names PROXY_AUTH on a bad file, never a password', async () => {
    const dir = await tmp.make('regcache-htpasswd-bad');
    const apr1 = path.join(dir, 'apr1');
    await writeFile(apr1, 'carol:$apr1$xyz$abcdefghijklmnopqrstuv\n');
    assert.throws(
      () => load(apr1),
      (e: Error) => e instanceof ConfigError && /PROXY_AUTH=.*bcrypt \(htpasswd -B\) or SHA/.test(e.message),
    );
    assert.throws(
      () => load(path.join(dir, 'missing')),
      (e: Error) => e instanceof ConfigError && /ENOENT/.test(e.message),
    );
    assert.throws(
      () => load('alice:pw bob'),
      (e: Error) => e instanceof ConfigError && !/pw/.test(e.message),
    );
  });
});

describe('proxy authentication with real clients', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let certDir: string;
  let dockerd: Dockerd | undefined;

  before(async () => {
    root = await tmp.make('regcache-proxy-auth');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test', 'registry-1.docker.io'], ['auth-a']);
    await pushTo(upstream, 'lib/app', 'v1');
    await pushTo(upstream, 'library/app', 'v1');
    const htpasswd = path.join(root, 'htpasswd');
    await writeFile(htpasswd, `alice:${bcrypt.hashSync('s3cr3t-pw', 4)}\n`);
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test', PROXY_AUTH: htpasswd },
      routes: { 'registry.test': upstream.registry.port, 'registry-1.docker.io': upstream.registry.port },
    });
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
  });

  after(async () => {
    await dockerd?.stop();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  const proxyUrl = (userinfo: string): string => proxy.proxyUrl.replace('http://', `http://${userinfo}`);
  const pull = (userinfo: string, out: string) =>
    skopeoCopyToDir('registry.test/lib/app:v1', path.join(root, out), {
      dir: path.join(root, 'skopeo'),
      certDir,
      env: { HTTPS_PROXY: proxyUrl(userinfo), NO_PROXY: '' },
    });

  it('lets skopeo through with credentials in HTTPS_PROXY, and refuses it without or with wrong ones', async () => {
    const ok = await pull('alice:s3cr3t-pw@', 'ok');
    assert.equal(ok.code, 0, ok.stderr);
    await assertSkopeoDir(path.join(root, 'ok'), upstream.image);
    for (const [userinfo, out] of [
      ['', 'none'],
      ['alice:wrong@', 'wrong'],
    ] as const) {
      const refused = await pull(userinfo, out);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /407|Proxy Authentication Required/i);
    }
    const lines = await proxy.logs();
    assert.ok(lines.some((l) => l.msg === 'proxy authentication required' && l.credentials === 'wrong'));
    assert.ok(lines.some((l) => l.msg === 'proxy authentication required' && l.credentials === 'none'));
    assert.doesNotMatch(await readFile(proxy.logFile, 'utf8'), /s3cr3t-pw|YWxpY2U6czNjcjN0LXB3/);
  });

  it('answers forward requests without credentials with 407, and keeps /ca.crt open', async () => {
    assert.equal((await fetch(`${proxy.proxyUrl}/`)).status, 200); // origin-form: the proxy itself
    assert.equal((await fetch(`${proxy.proxyUrl}/ca.crt`)).status, 200);
    const raw = await new Promise<string>((resolve, reject) => {
      const s = net.connect(proxy.port, '127.0.0.1', () => s.write('GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n'));
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString()));
      s.once('close', () => resolve(text));
      s.once('error', reject);
    });
    assert.match(raw, /^HTTP\/1\.1 407/);
    assert.match(raw, /proxy-authenticate: Basic realm="regcache"/i);
  });

  it('lets dockerd pull with credentials in HTTPS_PROXY', async () => {
    dockerd = await startDockerd({ dir: path.join(root, 'd'), env: { HTTPS_PROXY: proxyUrl('alice:s3cr3t-pw@'), SSL_CERT_FILE: proxy.caFile } });
    const pulled = await dockerd.docker(['pull', 'docker.io/library/app:v1']);
    assert.equal(pulled.code, 0, pulled.stderr);
    const blobs = (await proxy.requests()).filter((l) => l.kind === 'blob' && l.host === 'registry-1.docker.io');
    assert.ok(blobs.length >= upstream.blobs.length, 'the pull went through the proxy');
  });
});
