// tier: e2e
// The proxy's own endpoints after real pulls: the cache API, Prometheus metrics, health and readiness,
// and the dockerd set-up script.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run } from './harness/proc.js';
import { requestLines, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { samples } from './support/metric-samples.js';
import { certDirFor, pullThrough, pushTo, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

describe('admin endpoints', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let certDir: string;

  before(async () => {
    root = await tmp.make('regcache-admin');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['admin-a', 'admin-b']);
    await pushTo(upstream, 'lib/app', 'v1');
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test' },
      routes: { 'registry.test': upstream.registry.port },
    });
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  const get = async (p: string) => {
    const res = await fetch(`${proxy.proxyUrl}${p}`);
    return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
  };
  const pull = async (out: string) => {
    const r = await pullThrough(proxy, 'registry.test/lib/app:v1', path.join(root, out), certDir, path.join(root, 'skopeo'));
    assert.equal(r.code, 0, r.stderr);
  };

  it('reports health and readiness', async () => {
    const health = await get('/healthz');
    assert.equal(health.status, 200);
    assert.deepEqual(JSON.parse(health.text), { ok: true, checks: { process: true, caLoaded: true, cacheDirWritable: true } });
    assert.equal((await get('/readyz')).status, 200);
    // Probes come every few seconds: their lines are debug, so that an info log is not all probes.
    const probes = await requestLines(proxy, (l) => l.path === '/healthz' || l.path === '/readyz', 2);
    const lines = await proxy.requests();
    assert.ok(probes.length >= 2 && probes.every((l) => l.level === 'debug'), JSON.stringify(probes));
    assert.ok(lines.filter((l) => l.path === '/ca.crt' || l.kind !== 'admin').every((l) => l.level !== 'debug'));
  });

  it('moves the cache API and the metrics with pulls', async () => {
    const empty = JSON.parse((await get('/api/v1/cache/summary')).text) as Record<string, number>;
    assert.deepEqual(empty, { total: 0 });
    await pull('first');
    const cold = (await get('/metrics')).text;
    const blobs = upstream.blobs.length;
    assert.equal(samples(cold, 'regcache_requests_total').get('cache="MISS",kind="blob",registry="registry.test"'), blobs);
    assert.equal(samples(cold, 'regcache_upstream_fetches_total').get(''), blobs);
    assert.ok((samples(cold, 'regcache_bytes_served_total').get('source="upstream",registry="registry.test"') ?? 0) > 0);
    assert.ok((samples(cold, 'regcache_leaf_certificates_minted').get('') ?? 0) >= 1);

    await pull('second');
    const warm = (await get('/metrics')).text;
    assert.equal(samples(warm, 'regcache_requests_total').get('cache="HIT",kind="blob",registry="registry.test"'), blobs);
    const fromCache = samples(warm, 'regcache_bytes_served_total').get('source="cache",registry="registry.test"') ?? 0;
    const layerBytes = upstream.image.layers.reduce((n, l) => n + l.size, 0);
    assert.ok(fromCache >= layerBytes, `${fromCache} bytes from cache`);
    assert.equal(samples(warm, 'regcache_upstream_fetches_total').get(''), blobs, 'no new fetches');
    assert.equal(samples(warm, 'regcache_store_entries').get(''), blobs + 1, 'blobs and the manifest');

    // Without admin users configured, the listing names only what upstream serves to anyone, once known.
    await proxy.waitForLog(
      (l) => l.msg === 'content access learned' && l.digest === upstream.image.manifestDigest && l.access === 'public',
      'the manifest known as public',
    );
    const listing = JSON.parse((await get('/api/v1/cache')).text) as {
      registries: Record<string, { url: string; images: number; repositories: unknown[] }>;
      summary: Record<string, number>;
    };
    assert.deepEqual(listing.registries['registry.test'], { url: 'https://registry.test', images: 1, repositories: [{ name: 'lib/app', tags: ['v1'] }] });
    assert.deepEqual(listing.summary, { 'registry.test': 1, total: 1 });
    assert.deepEqual(JSON.parse((await get('/api/v1/cache/summary')).text), listing.summary);
  });

  it('serves a valid set-up script naming the address it was reached at, and refuses a crafted Host', async () => {
    const script = await get('/setup/systemd');
    assert.equal(script.status, 200);
    assert.match(script.text, new RegExp(`PROXY='http://127\\.0\\.0\\.1:${proxy.port}'`));
    const file = path.join(root, 'setup.sh');
    await writeFile(file, script.text);
    const syntax = await run('bash', ['-n', file]);
    assert.equal(syntax.code, 0, syntax.stderr);

    const crafted = await new Promise<string>((resolve, reject) => {
      const s = net.connect(proxy.port, '127.0.0.1', () => s.write('GET /setup/systemd HTTP/1.1\r\nHost: x$(touch /tmp/pwned)\r\nConnection: close\r\n\r\n'));
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString()));
      s.once('close', () => resolve(text));
      s.once('error', reject);
    });
    assert.match(crafted, /^HTTP\/1\.1 400/);
  });
});
