// tier: e2e
// Registry-mirror mode (MIRROR_PORT): dockerd with registry-mirrors and containerd with a hosts.toml pull
// Docker Hub names through the same cache, no proxy or CA involved; ns= and virtual-host routing,
// catalog and tags from the cache, writes refused, MIRROR_AUTH.
import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import https from 'node:https';
import type tls from 'node:tls';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startContainerd, type Containerd } from './harness/containerd.js';
import { startDockerd, type Dockerd } from './harness/dockerd.js';
import { makeImage, MediaTypes, pushImage } from './harness/images.js';
import { freePort } from './harness/ports.js';
import { requestLines, type Regcache } from './harness/regcache.js';
import { run } from './harness/proc.js';
import { assertSkopeoDir, runSkopeo } from './harness/skopeo.js';
import { TmpDirs } from './harness/tmp.js';
import type { TokenServer } from './harness/token-server.js';
import { request, type Reply } from './support/plain-http.js';
import { pushTo, startProxyFor, startUpstream, startTokenAuthUpstream, type Upstream } from './support/upstream-fixture.js';

function mirrorGet(port: number, pathAndQuery: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Reply> {
  return request(port, pathAndQuery, { headers, method });
}

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const prefetch = (args: string[], env: Record<string, string>) =>
  run(process.execPath, [CLI, 'prefetch', ...args], { env: { PATH: process.env.PATH ?? '', ...env } });

describe('registry-mirror mode', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let mirrorPort: number;
  let dockerd: Dockerd | undefined;
  let containerd: Containerd | undefined;
  const ACCEPT = { accept: [MediaTypes.dockerManifest, MediaTypes.ociManifest].join(', ') };

  before(async () => {
    root = await tmp.make('regcache-mirror');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry-1.docker.io', 'registry.test'], ['mirror-a', 'mirror-b']);
    await pushTo(upstream, 'library/hello', 'v1');
    await pushTo(upstream, 'lib/app', 'v1');
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test', MIRROR_PORT: String(await freePort()), REGISTRY_DOMAIN: 'mirror.test' },
      routes: { 'registry-1.docker.io': upstream.registry.port, 'registry.test': upstream.registry.port },
    });
    mirrorPort = proxy.mirrorPort!;
  });

  after(async () => {
    await dockerd?.stop();
    await containerd?.stop();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('serves dockerd through registry-mirrors: MISS, then HIT after docker rmi', async () => {
    const mirror = `127.0.0.1:${mirrorPort}`;
    dockerd = await startDockerd({
      dir: path.join(root, 'd'),
      env: {},
      daemonConfig: { 'registry-mirrors': [`http://${mirror}`], 'insecure-registries': [mirror] },
    });
    assert.equal((await dockerd.docker(['pull', 'hello:v1'])).code, 0);
    const cold = (await proxy.requests()).filter((l) => l.kind === 'blob' && l.host === 'registry-1.docker.io');
    assert.deepEqual(new Set(cold.map((l) => l.digest)), new Set(upstream.blobs));
    assert.ok(cold.every((l) => l.cache === 'MISS'));
    assert.equal((await dockerd.docker(['rmi', 'hello:v1'])).code, 0);
    const mark = (await proxy.logs()).length;
    const again = await dockerd.docker(['pull', 'hello:v1']);
    assert.equal(again.code, 0, again.stderr);
    const warm = (await proxy.requests(mark)).filter((l) => l.kind === 'blob');
    assert.ok(warm.length >= upstream.blobs.length && warm.every((l) => l.cache === 'HIT'), JSON.stringify(warm));
  });

  it('serves containerd through a hosts.toml (ctr --hosts-dir)', async () => {
    containerd = await startContainerd({ dir: path.join(root, 'c') });
    const hostsDir = path.join(root, 'hosts');
    // The hosts.toml regcache hands out for containerd, as an operator would use it.
    const setup = await (await fetch(`${proxy.proxyUrl}/setup/containerd`)).text();
    const block = setup.split('# --- ').find((b) => b.startsWith('docker.io\n'));
    assert.ok(block, setup);
    assert.match(block, new RegExp(`\\[host\\."http://127\\.0\\.0\\.1:${mirrorPort}"\\]`));
    assert.ok(setup.includes('# --- registry.test\n'), 'one block per allowlisted registry');
    await mkdir(path.join(hostsDir, 'docker.io'), { recursive: true });
    await writeFile(path.join(hostsDir, 'docker.io', 'hosts.toml'), block.split('\n').slice(1).join('\n'));
    const mark = (await proxy.logs()).length;
    const pulled = await containerd.ctr(['images', 'pull', '--hosts-dir', hostsDir, 'docker.io/library/hello:v1']);
    assert.equal(pulled.code, 0, pulled.stderr);
    const lines = (await proxy.requests(mark)).filter((l) => l.kind === 'blob');
    assert.ok(lines.length >= upstream.image.layers.length && lines.every((l) => l.cache === 'HIT'), 'the same cache served containerd');

    // Another registry: containerd names it with ?ns=, and the mirror goes there.
    const regBlock = setup.split('# --- ').find((b) => b.startsWith('registry.test\n'))!;
    await mkdir(path.join(hostsDir, 'registry.test'), { recursive: true });
    await writeFile(path.join(hostsDir, 'registry.test', 'hosts.toml'), regBlock.split('\n').slice(1).join('\n'));
    const mark2 = (await proxy.logs()).length;
    const other = await containerd.ctr(['images', 'pull', '--hosts-dir', hostsDir, 'registry.test/lib/app:v1']);
    assert.equal(other.code, 0, other.stderr);
    const hosts = new Set((await proxy.requests(mark2)).filter((l) => l.kind === 'manifest-by-tag').map((l) => l.host));
    assert.deepEqual([...hosts], ['registry.test']);
  });

  it("routes by containerd's ns= and by a virtual-host name, and refuses registries off the allowlist", async () => {
    const byNs = await mirrorGet(mirrorPort, '/v2/lib/app/manifests/v1?ns=registry.test', ACCEPT);
    assert.equal(byNs.status, 200);
    assert.equal(byNs.headers['docker-content-digest'], upstream.image.manifestDigest);
    const byHost = await mirrorGet(mirrorPort, '/v2/lib/app/manifests/v1', { ...ACCEPT, host: `registry.test.mirror.test:${mirrorPort}` });
    assert.equal(byHost.status, 200);
    const hubMark = await proxy.logMark();
    const hubByHost = await mirrorGet(mirrorPort, '/v2/library/hello/manifests/v1', { ...ACCEPT, host: 'docker.io.mirror.test' });
    assert.equal(hubByHost.status, 200);
    // By its path: the line of the request before can come after the mark.
    const [hubLine] = await requestLines(proxy, (l) => l.kind === 'manifest-by-tag' && l.path?.includes('/library/hello/') === true, 1, { since: hubMark });
    assert.equal(hubLine?.host, 'registry-1.docker.io');
    const refusedMark = await proxy.logMark();
    const refused = await mirrorGet(mirrorPort, '/v2/x/manifests/v1?ns=evil.example');
    assert.equal(refused.status, 403);
    assert.match(refused.body, /"code":"DENIED"/);
    const [line] = await requestLines(proxy, (l) => l.cache === 'REJECTED', 1, { since: refusedMark });
    assert.equal(line?.host, 'evil.example', 'the refused registry is named');
  });

  it('serves skopeo addressing it by a virtual-host name (DNS set-up, from a network namespace)', async (t) => {
    // The namespace's own /etc/netns/<ns>/hosts plays DNS: <registry>.mirror.test -> this host.
    const ns = `rc${process.pid % 100000}`;
    const subnet = `10.${200 + (process.pid % 50)}.${process.pid % 250}`;
    const sh = (cmd: string) => run('sh', ['-c', cmd]);
    if ((await sh(`ip netns add ${ns}`)).code !== 0) return t.skip('network namespaces need root');
    try {
      const setup = await sh(
        [
          `ip link add ${ns}a type veth peer name ${ns}b`,
          `ip link set ${ns}b netns ${ns}`,
          `ip addr add ${subnet}.1/24 dev ${ns}a`,
          `ip link set ${ns}a up`,
          `ip netns exec ${ns} ip addr add ${subnet}.2/24 dev ${ns}b`,
          `ip netns exec ${ns} ip link set ${ns}b up`,
          `ip netns exec ${ns} ip link set lo up`,
          `mkdir -p /etc/netns/${ns}`,
          `echo "${subnet}.1 registry.test.mirror.test" > /etc/netns/${ns}/hosts`,
        ].join(' && '),
      );
      assert.equal(setup.code, 0, setup.stderr);
      const out = path.join(root, 'vhost');
      const copied = await runSkopeo(['copy', '--src-tls-verify=false', `docker://registry.test.mirror.test:${mirrorPort}/lib/app:v1`, `dir:${out}`], {
        dir: path.join(root, 'skopeo-vhost'),
        prefix: ['ip', 'netns', 'exec', ns],
      });
      assert.equal(copied.code, 0, copied.stderr);
      await assertSkopeoDir(out, upstream.image);
      const blobs = (await proxy.requests()).filter((l) => l.kind === 'blob' && l.host === 'registry.test');
      assert.ok(blobs.length >= upstream.blobs.length, 'the mirror routed the pull to registry.test');
    } finally {
      await sh(`ip netns del ${ns}; ip link del ${ns}a 2>/dev/null; rm -rf /etc/netns/${ns}`);
    }
  });

  it('answers the ping, catalog and tags from the cache, and refuses writes', async () => {
    const mark = await proxy.logMark();
    const ping = await mirrorGet(mirrorPort, '/v2/');
    assert.equal(ping.status, 200);
    assert.equal(ping.headers['docker-distribution-api-version'], 'registry/2.0');
    // An open mirror with no admin users lists what upstream serves to anyone, once that is known.
    await proxy.waitForLog(
      (l) => l.msg === 'content access learned' && l.digest === upstream.image.manifestDigest && l.access === 'public',
      'the manifest known as public',
    );
    const catalog = JSON.parse((await mirrorGet(mirrorPort, '/v2/_catalog')).body) as { repositories: string[] };
    assert.deepEqual(catalog.repositories, ['library/hello']);
    const tags = JSON.parse((await mirrorGet(mirrorPort, '/v2/lib/app/tags/list?ns=registry.test')).body) as { tags: string[] };
    assert.deepEqual(tags, { name: 'lib/app', tags: ['v1'] });
    const push = await mirrorGet(mirrorPort, '/v2/library/hello/blobs/uploads/', {}, 'POST');
    assert.equal(push.status, 405);
    assert.match(push.body, /UNSUPPORTED/);
    // The log: the ping is no cache HIT (nothing came from the cache), listings say how much they sent. The
    // push's line is the last one this test waits for: each is written when its response closes.
    await requestLines(proxy, (l) => l.kind === 'ping' || l.kind === 'tags' || l.kind === 'catalog' || l.status === 405, 4, { since: mark });
    const lines = await proxy.requests();
    assert.equal(lines.filter((l) => l.kind === 'ping').at(-1)?.cache, 'LOCAL');
    const tagsLine = lines.filter((l) => l.kind === 'tags').at(-1);
    assert.equal(tagsLine?.bytes, Buffer.byteLength(JSON.stringify(tags)));
    assert.ok((lines.filter((l) => l.kind === 'catalog').at(-1)?.bytes ?? 0) > 0);
    assert.ok(
      lines.every((l) => net.isIP(String(l.client)) !== 0),
      'every request line names its client',
    );
  });

  it('prefetches through the running server, found over its control socket: fetched, then already cached', async () => {
    const image = await makeImage(path.join(root, 'prefetch-image'), { layers: [{ size: 250_000, seed: 'prefetch-a' }] });
    await pushImage(upstream.registry.url, 'lib/prefetched', 'v2', image, { caFile: upstream.ca.certFile });
    // No MIRROR_PORT here: the server says where its mirror listens (a free port, not the default 5000).
    const r = await prefetch(['registry.test/lib/prefetched:v2'], { CACHE_DIR: proxy.cacheDir });
    assert.equal(r.code, 0, r.stderr);
    const bytes = image.config.size + image.layers[0]!.size;
    assert.match(r.stdout, /^registry\.test\/lib\/prefetched:v2: fetched 2 blobs \((\d+\.\d) KiB\), already cached 0 \(0 B\); 1 manifest\n$/);
    assert.equal(r.stdout.match(/fetched 2 blobs \((\S+) KiB/)?.[1], (bytes / 1024).toFixed(1));
    assert.equal(r.stderr, '', 'no progress when stderr is not a terminal');
    const misses = (await proxy.requests()).filter((l) => l.kind === 'blob' && l.cache === 'MISS' && l.host === 'registry.test');
    for (const digest of [image.config.digest, image.layers[0]!.digest])
      assert.ok(
        misses.some((l) => l.digest === digest),
        `${digest} was fetched into the cache`,
      );

    const mark = (await proxy.logs()).length;
    const again = await prefetch(['registry.test/lib/prefetched:v2'], { CACHE_DIR: proxy.cacheDir });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /fetched 0 blobs \(0 B\), already cached 2 \(\d+\.\d KiB\)/);
    assert.deepEqual(
      (await proxy.requests(mark)).filter((l) => l.kind === 'blob'),
      [],
      'what is stored is not downloaded again',
    );

    const bad = await prefetch(['registry.test/lib/none:v1'], { CACHE_DIR: proxy.cacheDir });
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /registry\.test\/lib\/none:v1: .*404/);
  });

  it('shows one updating progress line on a terminal: bytes, total, rate', async () => {
    const image = await makeImage(path.join(root, 'prefetch-tty'), { layers: [{ size: 2_000_000, seed: 'prefetch-tty' }] });
    await pushImage(upstream.registry.url, 'lib/tty', 'v1', image, { caFile: upstream.ca.certFile });
    const command = `CACHE_DIR=${proxy.cacheDir} ${process.execPath} ${CLI} prefetch registry.test/lib/tty:v1`;
    const tty = await run('script', ['-qec', command, '/dev/null'], { env: { PATH: process.env.PATH ?? '' } }); // a pseudo-terminal
    assert.equal(tty.code, 0, tty.stdout);
    const total = ((image.config.size + image.layers[0]!.size) / 1048576).toFixed(1);
    const line = tty.stdout.split('\r\x1b[K').find((l) => l.includes('blob 2/2'));
    assert.match(line ?? tty.stdout, /^registry\.test\/lib\/tty:v1 {2}\d+(\.\d)? (B|KiB|MiB) \/ (\d+\.\d) MiB {2}\d+(\.\d)? (B|KiB|MiB)\/s {2}blob 2\/2$/);
    assert.equal(line?.match(/\/ (\S+) MiB/)?.[1], total, 'the total is the size of the blobs to fetch');
    assert.match(tty.stdout, /\r\x1b\[Kregistry\.test\/lib\/tty:v1: fetched 2 blobs/, 'the line is cleared before the summary');
  });

  it('says no server is running for the cache, or that its mirror is off, and how to fix it', async () => {
    const empty = await prefetch(['alpine:3.20'], { CACHE_DIR: path.join(root, 'no-server') });
    assert.equal(empty.code, 1);
    assert.match(empty.stderr, /no regcache server is running for CACHE_DIR=.*no-server .*regcache serve.*MIRROR_PORT/);
    const off = await startProxyFor(upstream, { dir: path.join(root, 'mirror-off'), routes: {} }); // MIRROR_PORT=0
    try {
      const r = await prefetch(['alpine:3.20'], { CACHE_DIR: off.cacheDir });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /runs with the mirror off \(MIRROR_PORT=0\).*restart it with MIRROR_PORT set/);
    } finally {
      await off.stop();
    }
  });

  it('asks for credentials with MIRROR_AUTH', async () => {
    const guarded = await startProxyFor(upstream, {
      dir: path.join(root, 'guarded'),
      env: { MIRROR_PORT: String(await freePort()), MIRROR_AUTH: 'puller:pw' },
      routes: { 'registry-1.docker.io': upstream.registry.port },
    });
    try {
      const none = await mirrorGet(guarded.mirrorPort!, '/v2/');
      assert.equal(none.status, 401);
      assert.match(String(none.headers['www-authenticate']), /^Basic/);
      const ok = await mirrorGet(guarded.mirrorPort!, '/v2/library/hello/manifests/v1', {
        ...ACCEPT,
        authorization: 'Basic ' + Buffer.from('puller:pw').toString('base64'),
      });
      assert.equal(ok.status, 200);
    } finally {
      await guarded.stop();
    }
  });
});

describe('mirror in front of a token-auth registry', () => {
  const tmp = new TmpDirs();
  let upstream: Upstream;
  let tokens: TokenServer;
  let proxy: Regcache;

  before(async () => {
    const root = await tmp.make('regcache-mirror-token');
    const hub = await startTokenAuthUpstream(root, ['registry-1.docker.io'], ['mirror-token-a']);
    ({ upstream, tokens } = hub);
    await pushTo(upstream, 'library/hello', 'v1', hub.seedToken('library/hello'));
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'auth.test', UPSTREAM_CA_FILE: hub.caBundle, MIRROR_PORT: String(await freePort()) },
      routes: { 'registry-1.docker.io': upstream.registry.port, 'auth.test': tokens.port },
    });
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await tokens?.stop();
    await tmp.cleanup();
  });

  it('fetches its own anonymous token: mirror clients need none', async () => {
    const accept = { accept: MediaTypes.dockerManifest };
    const manifest = await mirrorGet(proxy.mirrorPort!, '/v2/library/hello/manifests/v1', accept);
    assert.equal(manifest.status, 200, manifest.body);
    const blob = await mirrorGet(proxy.mirrorPort!, `/v2/library/hello/blobs/${upstream.image.layers[0]!.digest}`);
    assert.equal(blob.status, 200);
    assert.ok(tokens.requests.some((r) => !r.authorization && r.scopes.includes('repository:library/hello:pull') && r.status === 200));
  });
});

describe('mirror over HTTPS, and ADMIN_PORT', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;

  before(async () => {
    root = await tmp.make('regcache-mirror-tls');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry-1.docker.io'], ['mirror-tls-a']);
    await pushTo(upstream, 'library/hello', 'v1');
  });
  after(async () => {
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  const httpsPing = (port: number, ca: string, servername: string) =>
    new Promise<{ status: number; san: string }>((resolve, reject) => {
      const req = https.request({ host: '127.0.0.1', port, path: '/v2/', ca, servername }, (res) => {
        const san = (res.socket as tls.TLSSocket).getPeerCertificate().subjectaltname ?? '';
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, san }));
      });
      req.once('error', reject);
      req.end();
    });

  it('mints the mirror a certificate for MIRROR_HOSTNAME from the regcache CA', async () => {
    const proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'minted'),
      env: { MIRROR_PORT: String(await freePort()), MIRROR_HOSTNAME: 'mirror.local', ADMIN_PORT: String(await freePort()) },
      routes: { 'registry-1.docker.io': upstream.registry.port },
    });
    try {
      const ca = await readFile(proxy.caFile, 'utf8');
      assert.deepEqual(await httpsPing(proxy.mirrorPort!, ca, 'mirror.local'), { status: 200, san: 'DNS:mirror.local' });
      const prefetched = await prefetch(['hello:v1'], { CACHE_DIR: proxy.cacheDir }); // the server says its mirror speaks TLS
      assert.equal(prefetched.code, 0, prefetched.stderr);
      assert.match(prefetched.stdout, /^hello:v1: fetched 2 blobs/);
      const adminPort = Number((await proxy.logs()).find((l) => l.msg === 'listening')?.adminPort);
      const metrics = await fetch(`http://127.0.0.1:${adminPort}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /regcache_requests_total/);
    } finally {
      await proxy.stop();
    }
  });

  it('serves the mirror with MIRROR_TLS_CERT and MIRROR_TLS_KEY', async () => {
    const cert = await upstream.ca.issue(['mirror.corp'], root, 'mirror');
    const proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'files'),
      env: { MIRROR_PORT: String(await freePort()), MIRROR_TLS_CERT: cert.certFile, MIRROR_TLS_KEY: cert.keyFile },
      routes: { 'registry-1.docker.io': upstream.registry.port },
    });
    try {
      assert.deepEqual(await httpsPing(proxy.mirrorPort!, upstream.ca.certPem, 'mirror.corp'), { status: 200, san: 'DNS:mirror.corp' });
    } finally {
      await proxy.stop();
    }
  });
});
