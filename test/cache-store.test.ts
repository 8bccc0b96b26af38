// tier: e2e
// The bounded, crash-safe store with real parts: real pulls (docker-registry + skopeo) for the bound and
// LRU order; the real regcache process killed with SIGKILL mid-fill; `regcache cache ...` run as the CLI
// against a running server.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { open, readdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { contentPath } from '../src/cache/content-files.js';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { run, sleep, waitFor } from './harness/proc.js';
import { createTestCA, type TestCA } from './harness/pki.js';
import { requestLines, startRegcache, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';
import { certDirFor, pullThrough, startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';
import { request } from 'undici';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const MiB = 1024 * 1024;

function cli(cacheDir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, 'cache', ...args, '--cache-dir', cacheDir], { env: { PATH: process.env.PATH ?? '' } });
}

async function cliJson<T>(cacheDir: string, ...args: string[]): Promise<T> {
  const r = await cli(cacheDir, ...args, '--json');
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

interface Listed {
  digest: string;
  kind: string;
  size: number;
  repositories: string[];
  tags: string[];
}
interface Usage {
  totalBytes: number;
  entries: number;
  maxBytes: number;
  registries: Record<string, { bytes: number }>;
}

describe('a bounded store under real pulls', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let proxy: Regcache;
  let certDir: string;
  const images = new Map<string, Image>();

  before(async () => {
    root = await tmp.make('regcache-bounded');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], []);
    // Five images of ~1.2 MiB each, every layer distinct; one image with a layer bigger than the bound.
    for (const name of ['a', 'b', 'c', 'd', 'e']) {
      const image = await makeImage(path.join(root, 'images', name), {
        layers: [
          { size: 700_000, seed: `${name}-1` },
          { size: 500_000, seed: `${name}-2` },
        ],
      });
      await pushImage(upstream.registry.url, `lib/${name}`, 'v1', image, { caFile: upstream.ca.certFile });
      images.set(name, image);
    }
    const huge = await makeImage(path.join(root, 'images', 'huge'), { layers: [{ size: 5 * MiB, seed: 'huge' }] });
    await pushImage(upstream.registry.url, 'lib/huge', 'v1', huge, { caFile: upstream.ca.certFile });
    images.set('huge', huge);
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test', CACHE_MAX_SIZE: '4m' },
      routes: { 'registry.test': upstream.registry.port },
    });
    certDir = await certDirFor(proxy, path.join(root, 'certs.d'));
  });

  after(async () => {
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  const pull = async (name: string) => {
    const r = await pullThrough(
      proxy,
      `registry.test/lib/${name}:v1`,
      path.join(root, `out-${name}-${crypto.randomUUID()}`),
      certDir,
      path.join(root, 'skopeo'),
    );
    assert.equal(r.code, 0, r.stderr);
  };
  const stored = async () => new Set((await cliJson<Listed[]>(proxy.cacheDir, 'ls')).map((e) => e.digest));
  const layersOf = (name: string) => images.get(name)!.layers.map((l) => l.digest);

  it('stays within CACHE_MAX_SIZE and evicts the least recently used image first', async () => {
    await pull('a');
    await pull('b');
    await pull('c');
    await pull('a'); // a is now more recent than b
    await pull('d');
    await pull('e');
    const usage = await cliJson<Usage>(proxy.cacheDir, 'du');
    assert.equal(usage.maxBytes, 4 * MiB);
    assert.ok(usage.totalBytes <= usage.maxBytes, `${usage.totalBytes} bytes stored`);
    const now = await stored();
    for (const d of layersOf('e')) assert.ok(now.has(d), 'the newest image is stored');
    for (const d of layersOf('a')) assert.ok(now.has(d), 'the recently pulled image survives');
    for (const d of layersOf('b')) assert.ok(!now.has(d), 'the least recently used image went first');
    assert.ok((await proxy.logs()).some((l) => l.msg === 'evicted' && l.reason === 'size'));
  });

  it('streams a blob larger than the bound through uncached, saying why', async () => {
    await pull('huge');
    const [layer] = layersOf('huge');
    // Its request line is written when regcache sees the response close, which may be after the client's last byte.
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.digest === layer && l.kind === 'blob', 'the request line of the huge layer');
    assert.equal(line?.cache, 'BYPASS');
    assert.equal(line?.reason, 'larger than CACHE_MAX_SIZE');
    assert.ok(!(await stored()).has(layer!));
  });
});

describe('crash safety, verify and the cache CLI', () => {
  const tmp = new TmpDirs();
  const upstream = new FakeRegistry();
  let dir: string;
  let ca: TestCA;
  let env: Record<string, string>;
  let proxy: Regcache;
  let client: ProxyClient;
  const REG = 'https://registry.test';

  const start = async () => {
    proxy = await startRegcache({ dir, env, cacheDir: path.join(dir, 'cache'), caDir: path.join(dir, 'certs') });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  };
  const stop = async () => {
    await client.close();
    await proxy.stop();
  };

  before(async () => {
    dir = await tmp.make('regcache-crash');
    ca = await createTestCA(dir, 'crash CA');
    await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
    env = { ADDITIONAL_REGISTRIES: 'registry.test', UPSTREAM_CA_FILE: ca.certFile, CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}` };
    await start();
  });

  after(async () => {
    await stop();
    await upstream.close();
    await tmp.cleanup();
  });

  it('survives kill -9 mid-fill: no partial entry, no leftover spool file, committed entries still HIT', async () => {
    const kept = upstream.add(makeBlob(300_000, 'kept'));
    assert.equal((await client.fetch(`${REG}/v2/lib/app/blobs/${kept.digest}`)).status, 200);
    const big = upstream.add(makeBlob(8 * MiB, 'killed'), { kind: 'slow', chunk: 256 * 1024, delayMs: 30 });
    const spool = path.join(proxy.cacheDir, 'spool');
    void client.fetch(`${REG}/v2/lib/app/blobs/${big.digest}`).catch(() => undefined);
    await waitFor(async () => (await readdir(spool)).length > 0, { timeoutMs: 10_000, what: 'a spool file' });
    await sleep(200);
    proxy.daemon.child.kill('SIGKILL');
    await proxy.daemon.exited;
    await client.close().catch(() => undefined);

    await start();
    assert.deepEqual(await readdir(spool), [], 'startup removed the partial');
    const listed = await cliJson<Listed[]>(proxy.cacheDir, 'ls');
    assert.deepEqual(
      listed.map((e) => e.digest),
      [kept.digest],
    );
    const again = await client.fetch(`${REG}/v2/lib/app/blobs/${kept.digest}`);
    assert.ok(again.body.equals(kept.data));
    upstream.behaviour.set(big.digest, { kind: 'ok' });
    const refetched = await client.fetch(`${REG}/v2/lib/app/blobs/${big.digest}`);
    assert.ok(refetched.body.equals(big.data));
    const lines = await requestLines(proxy, (l) => l.kind === 'blob', 2);
    assert.deepEqual(
      lines.map((l) => [l.digest, l.cache]),
      [
        [kept.digest, 'HIT'],
        [big.digest, 'MISS'],
      ],
    );
    const report = await cliJson<{ corrupt: string[]; missing: string[]; orphans: number }>(proxy.cacheDir, 'verify');
    assert.deepEqual([report.corrupt, report.missing, report.orphans], [[], [], 0], 'index and content agree');
  });

  it('keeps a read in progress working while its content is removed', async () => {
    // More than socket buffers hold: the server is still reading the file after the rm.
    const blob = upstream.add(makeBlob(24 * MiB, 'read-while-removed'));
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    await client.fetch(url);
    await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
    const res = await request(url, { dispatcher: client.agent });
    const hash = crypto.createHash('sha256');
    let first = true;
    for await (const chunk of res.body) {
      hash.update(chunk as Buffer);
      if (first) {
        first = false;
        const rm = await cli(proxy.cacheDir, 'rm', blob.digest); // by digest, mid-read
        assert.match(rm.stdout, /removed 1 entries/);
      }
    }
    assert.equal('sha256:' + hash.digest('hex'), blob.digest);
    const lines = await requestLines(proxy, (l) => l.digest === blob.digest, 2); // the MISS that stored it, then this read
    assert.equal(lines.at(-1)?.cache, 'HIT');
    assert.ok(!(await cliJson<Listed[]>(proxy.cacheDir, 'ls')).some((e) => e.digest === blob.digest));
  });

  it('verify finds a flipped byte and removes it, after which the blob is fetched again', async () => {
    const blob = upstream.add(makeBlob(200_000, 'flipped'));
    const url = `${REG}/v2/lib/app/blobs/${blob.digest}`;
    await client.fetch(url);
    await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
    const file = await open(contentPath(proxy.cacheDir, blob.digest), 'r+');
    await file.write(Buffer.from([blob.data[1000]! ^ 0xff]), 0, 1, 1000);
    await file.close();

    const verify = await cli(proxy.cacheDir, 'verify', '--json'); // through the running server
    assert.equal(verify.code, 1, 'corruption found: a non-zero exit');
    assert.match(verify.stderr, /verify found 1 corrupt and 0 missing entries/);
    const report = JSON.parse(verify.stdout) as { checked: number; corrupt: string[] };
    assert.deepEqual(report.corrupt, [blob.digest]);
    assert.ok(report.checked >= 3);
    const after = await client.fetch(url);
    assert.ok(after.body.equals(blob.data));
    assert.equal(upstream.count('GET', blob.digest), 2);
  });

  it('lists, sizes, removes and prunes through the CLI while the server runs', async () => {
    const shared = upstream.add(makeBlob(100_000, 'shared'));
    const own = upstream.add(makeBlob(150_000, 'own'));
    const manifest = makeBlob(0, 'unused');
    const doc = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { digest: shared.digest },
        layers: [{ digest: own.digest }],
      }),
    );
    const m = {
      ...manifest,
      data: doc,
      digest: 'sha256:' + crypto.createHash('sha256').update(doc).digest('hex'),
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
    };
    upstream.tags.set('lib/tool:v2', m);
    upstream.add(m);
    await client.fetch(`${REG}/v2/lib/tool/manifests/v2`);
    await client.fetch(`${REG}/v2/lib/tool/blobs/${shared.digest}`);
    await client.fetch(`${REG}/v2/lib/tool/blobs/${own.digest}`);
    await client.fetch(`${REG}/v2/lib/other/blobs/${shared.digest}`); // the config is shared with another repository
    await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === own.digest, 'the commit');

    // A HIT's repository reaches the index after the response (with WORKERS > 1 as a message of its own to
    // the primary), and a manifest is stored after it is answered: the listing has them moments later, not
    // necessarily at once. Each try spawns the CLI, seconds apiece when the suite loads the machine.
    let listed: Listed[] = [];
    await waitFor(
      async () => {
        listed = await cliJson<Listed[]>(proxy.cacheDir, 'ls', '--registry', 'registry.test');
        const sharedListed = listed.find((e) => e.digest === shared.digest)?.repositories.length ?? 0;
        return sharedListed >= 2 && listed.some((e) => e.digest === m.digest && e.tags.length > 0);
      },
      { timeoutMs: 60_000, what: 'the shared blob listed under both repositories, the manifest under its tag' },
    ).catch(() => undefined); // the assertions below say what is missing
    const tool = listed.find((e) => e.digest === m.digest);
    assert.deepEqual(tool?.tags, ['registry.test/lib/tool:v2']);
    assert.deepEqual(listed.find((e) => e.digest === shared.digest)?.repositories, ['registry.test/lib/other', 'registry.test/lib/tool']);
    assert.deepEqual(await cliJson<Listed[]>(proxy.cacheDir, 'ls', '--registry', 'quay.io'), []);
    const table = await cli(proxy.cacheDir, 'ls');
    assert.match(table.stdout, /registry\.test\/lib\/tool:v2/);

    const usage = await cliJson<Usage>(proxy.cacheDir, 'du');
    assert.equal(
      usage.totalBytes,
      listed.reduce((n, e) => n + e.size, 0),
    );
    assert.equal(usage.registries['registry.test']?.bytes, usage.totalBytes);

    const removed = await cli(proxy.cacheDir, 'rm', 'registry.test/lib/tool:v2');
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, /removed 2 entries/); // the manifest and its own layer; the shared config stays
    const left = new Set((await cliJson<Listed[]>(proxy.cacheDir, 'ls')).map((e) => e.digest));
    assert.ok(!left.has(m.digest) && !left.has(own.digest) && left.has(shared.digest));
    const mark = await proxy.logMark();
    assert.equal((await client.fetch(`${REG}/v2/lib/tool/blobs/${own.digest}`)).status, 200);
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.digest === own.digest, 'the refetch request line', { since: mark });
    assert.equal(line.cache, 'MISS');

    assert.equal((await cliJson<{ removed: number }>(proxy.cacheDir, 'prune', '--older-than', '1h')).removed, 0, 'everything was used within the hour');
    const pruned = await cliJson<{ removed: number }>(proxy.cacheDir, 'prune', '--to-size', '1');
    assert.ok(pruned.removed >= 1);
    assert.equal((await cliJson<Usage>(proxy.cacheDir, 'du')).totalBytes, 0);
  });

  it('refuses bad arguments with a message and a non-zero exit', async () => {
    const cases: [string[], RegExp, number][] = [
      [['prune', '--older-than', '3 days'], /--older-than="3 days".*e\.g\./, 2],
      [['prune'], /needs --older-than/, 2],
      [['rm', 'Not A Ref'], /not an image reference/, 2],
      [['rm', 'registry.test/lib/none:v1'], /not in the cache/, 1],
      [['frobnicate'], /unknown command/, 2],
    ];
    for (const [args, message, code] of cases) {
      const r = await cli(proxy.cacheDir, ...args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });

  it('sweeps entries unused for CACHE_INACTIVE', async () => {
    const sweeping = await startRegcache({ dir: path.join(dir, 'inactive'), env: { ...env, CACHE_INACTIVE: '2s' } });
    const sweeper = new ProxyClient(sweeping.proxyUrl, sweeping.caFile);
    try {
      const blob = upstream.add(makeBlob(50_000, 'inactive'));
      await sweeper.fetch(`${REG}/v2/lib/app/blobs/${blob.digest}`);
      await sweeping.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
      await sweeping.waitForLog((l) => l.msg === 'evicted' && l.reason === 'inactive', 'the inactive sweep', 10_000);
      assert.deepEqual(await cliJson<Listed[]>(sweeping.cacheDir, 'ls'), []);
    } finally {
      await sweeper.close();
      await sweeping.stop();
    }
  });

  it('refuses to start a second server on the same CACHE_DIR', async () => {
    await assert.rejects(startRegcache({ dir: path.join(dir, 'second'), env, cacheDir: proxy.cacheDir }), /in use by another regcache/);
  });
});

describe('a disk that fills up mid-fill', () => {
  const tmp = new TmpDirs();
  const upstream = new FakeRegistry();
  let dir: string;
  let mounted = false;
  let proxy: Regcache | undefined;
  let client: ProxyClient | undefined;

  before(async () => {
    dir = await tmp.make('regcache-enospc');
    const ca = await createTestCA(dir, 'enospc CA');
    await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
    const cacheDir = path.join(dir, 'cache');
    await run('mkdir', ['-p', cacheDir]);
    // A 6 MiB filesystem of its own (root only): the disk runs out long before CACHE_MAX_SIZE (32g).
    mounted = (await run('mount', ['-t', 'tmpfs', '-o', 'size=6m', 'tmpfs', cacheDir])).code === 0;
    if (!mounted) return;
    proxy = await startRegcache({
      dir,
      cacheDir,
      env: { ADDITIONAL_REGISTRIES: 'registry.test', UPSTREAM_CA_FILE: ca.certFile, CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}` },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    if (mounted) await run('umount', [path.join(dir, 'cache')]);
    await upstream.close();
    await tmp.cleanup();
  });

  it('completes every download from upstream, keeps no partial, and stays usable (ENOSPC)', async (t) => {
    if (!mounted) return t.skip('mounting a tmpfs needs root');
    // Two fills that each fit the free space when they start, but not together.
    const x = upstream.add(makeBlob(3_500_000, 'enospc-x'), { kind: 'slow', chunk: 128 * 1024, delayMs: 15 });
    const y = upstream.add(makeBlob(3_500_000, 'enospc-y'), { kind: 'slow', chunk: 128 * 1024, delayMs: 15 });
    const [rx, ry] = await Promise.all([
      client!.fetch(`https://registry.test/v2/lib/app/blobs/${x.digest}`),
      client!.fetch(`https://registry.test/v2/lib/app/blobs/${y.digest}`),
    ]);
    assert.ok(rx.body.equals(x.data), 'first client got every byte');
    assert.ok(ry.body.equals(y.data), 'second client got every byte');
    const failed = await proxy!.waitForLog((l) => l.msg === 'fill failed; nothing stored' && l.reason === 'store', 'a fill failing on the full disk');
    assert.match(String(failed.error), /ENOSPC/);
    // The other fill's spool is there until it settles too (seen under load: it was still committing).
    const other = failed.digest === x.digest ? y.digest : x.digest;
    await proxy!.waitForLog((l) => (l.msg === 'fill committed' || l.msg === 'fill failed; nothing stored') && l.digest === other, 'the other fill to settle');
    assert.ok(
      upstream.seen.some((r) => r.range !== undefined && r.path.endsWith(String(failed.digest))),
      'the rest came by a Range request',
    );
    assert.deepEqual(await readdir(path.join(proxy!.cacheDir, 'spool')), [], 'the partial is gone');

    const z = upstream.add(makeBlob(1_000_000, 'enospc-z'));
    const url = `https://registry.test/v2/lib/app/blobs/${z.digest}`;
    assert.ok((await client!.fetch(url)).body.equals(z.data));
    await proxy!.waitForLog((l) => l.msg === 'fill committed' && l.digest === z.digest, 'the store taking new content');
    assert.ok((await client!.fetch(url)).body.equals(z.data));
    assert.equal((await proxy!.requests()).filter((l) => l.digest === z.digest).at(-1)?.cache, 'HIT');
  });
});
