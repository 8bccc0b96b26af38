// Store integrity (issue 12, items 7-9) with real parts: the verifying reader in-process against temp
// files; the real regcache process with a fake upstream for stored files that changed or shrank on disk,
// a small tmpfs as a full disk, and a process started under umask 000.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { chmod, mkdir, open, readdir, rm, stat, statfs, truncate, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { integrityOf } from '../src/cache/content-store.js';
import { createTestCA, type TestCA } from './harness/pki.js';
import { run, sleep, waitFor } from './harness/proc.js';
import { startRegcache, type Regcache, type RegcacheOptions } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob, type FakeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const contentPath = createRequire(import.meta.url)('cacache/lib/content/path.js') as (cache: string, integrity: string) => string;
const MiB = 1024 * 1024;
const REG = 'https://registry.test';

const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const storedFile = (cacheDir: string, digest: string): string => contentPath(cacheDir, integrityOf(digest));
const blobUrl = (b: FakeBlob): string => `${REG}/v2/lib/app/blobs/${b.digest}`;

async function flipByte(file: string, offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, offset);
    one[0]! ^= 0xff;
    await handle.write(one, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

function cli(cacheDir: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run(process.execPath, [CLI, 'cache', ...args, '--cache-dir', cacheDir], { env: { PATH: process.env.PATH ?? '' } });
}

async function storedDigests(cacheDir: string): Promise<string[]> {
  const r = await cli(cacheDir, 'ls', '--json');
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { digest: string }[]).map((e) => e.digest);
}

interface Received {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer; // what arrived before the end or the cut
  error: Error | null; // the cut, if the body did not complete
  ms: number;
}

/** A GET through regcache that keeps what arrived when the body is cut, and gives up after 10 s. */
async function fetchKeepingCuts(client: ProxyClient, url: string, headers: Record<string, string> = {}, method: 'GET' | 'HEAD' = 'GET'): Promise<Received> {
  const started = Date.now();
  const res = await request(url, { dispatcher: client.agent, method, headers, signal: AbortSignal.timeout(10_000) });
  const chunks: Buffer[] = [];
  let error: Error | null = null;
  try {
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
  } catch (err) {
    error = err as Error;
  }
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks), error, ms: Date.now() - started };
}

/** A fake upstream with its own CA, and a regcache routed to it. */
class Fixture {
  readonly upstream = new FakeRegistry();
  ca!: TestCA;
  env!: Record<string, string>;

  async start(dir: string): Promise<void> {
    this.ca = await createTestCA(dir, 'store integrity CA');
    await this.upstream.start(await this.ca.issue(['registry.test'], dir, 'upstream'));
    this.env = { ADDITIONAL_REGISTRIES: 'registry.test', UPSTREAM_CA_FILE: this.ca.certFile, CONNECT_TO: `registry.test:443:127.0.0.1:${this.upstream.port}` };
  }

  async regcache(opts: RegcacheOptions): Promise<{ proxy: Regcache; client: ProxyClient }> {
    const proxy = await startRegcache({ ...opts, env: { ...this.env, ...opts.env } });
    return { proxy, client: new ProxyClient(proxy.proxyUrl, proxy.caFile) };
  }
}

describe('a full disk (small tmpfs as CACHE_DIR)', () => {
  const tmp = new TmpDirs();
  const fx = new Fixture();
  let dir: string;
  let cacheDir: string;
  let mounted = false;
  let proxy: Regcache | undefined;
  let client: ProxyClient | undefined;
  const early: FakeBlob[] = [];

  before(async () => {
    dir = await tmp.make('regcache-full-disk');
    await fx.start(dir);
    cacheDir = path.join(dir, 'cache');
    await mkdir(cacheDir);
    // 8 MiB of its own (root only); the reserve is then 2% of it. CACHE_MAX_SIZE (32g) never binds.
    mounted = (await run('mount', ['-t', 'tmpfs', '-o', 'size=8m', 'tmpfs', cacheDir])).code === 0;
    if (!mounted) return;
    ({ proxy, client } = await fx.regcache({ dir, cacheDir }));
    for (const name of ['a', 'b', 'c']) {
      const blob = fx.upstream.add(makeBlob(1536 * 1024, `full-disk-${name}`));
      assert.ok((await client.fetch(blobUrl(blob))).body.equals(blob.data));
      await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
      early.push(blob);
    }
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    if (mounted) await run('umount', [cacheDir]);
    await fx.upstream.close();
    await tmp.cleanup();
  });

  const readyz = async () => {
    const res = await request(`${proxy!.proxyUrl}/readyz`);
    return { status: res.statusCode, body: (await res.body.json()) as unknown };
  };

  it('streams a blob that eviction could not make room for through, evicting nothing', async (t) => {
    if (!mounted) return t.skip('mounting a tmpfs needs root');
    const big = fx.upstream.add(makeBlob(9 * MiB, 'full-disk-big')); // more than the whole filesystem
    const got = await client!.fetch(blobUrl(big));
    assert.ok(got.body.equals(big.data), 'the client got every byte');
    const line = (await proxy!.requests()).find((l) => l.digest === big.digest);
    assert.equal(line?.cache, 'BYPASS');
    assert.equal(line?.reason, 'not enough free disk space');
    const logs = await proxy!.logs();
    assert.ok(!logs.some((l) => l.msg === 'evicted'), 'nothing was evicted');
    assert.ok(logs.some((l) => l.msg === 'no room on disk even after evicting everything; nothing evicted' && l.bytes === big.data.length));
    assert.deepEqual((await storedDigests(cacheDir)).sort(), early.map((b) => b.digest).sort(), 'the cache is intact');
    assert.deepEqual(await readdir(path.join(cacheDir, 'spool')), []);
  });

  it('still evicts least recently used content when that makes room', async (t) => {
    if (!mounted) return t.skip('mounting a tmpfs needs root');
    const mid = fx.upstream.add(makeBlob(5 * MiB, 'full-disk-mid')); // fits once two of the three are gone
    assert.ok((await client!.fetch(blobUrl(mid))).body.equals(mid.data));
    await proxy!.waitForLog((l) => l.msg === 'fill committed' && l.digest === mid.digest, 'the commit');
    const evicted = await proxy!.waitForLog((l) => l.msg === 'evicted' && l.reason === 'disk' && l.level === 'info', 'the eviction summary');
    assert.equal(evicted.entries, 2);
    assert.deepEqual((await storedDigests(cacheDir)).sort(), [early[2]!.digest, mid.digest].sort(), 'the two oldest went');
  });

  it('/readyz answers 503 with the reason while the disk is full, 200 once there is room', async (t) => {
    if (!mounted) return t.skip('mounting a tmpfs needs root');
    assert.deepEqual(await readyz(), { status: 200, body: { ready: true, checks: { listening: true, diskSpace: true } } });
    const fs = await statfs(cacheDir);
    const filler = path.join(cacheDir, 'filler');
    await writeFile(filler, Buffer.alloc(fs.bavail * fs.bsize - 32 * 1024)); // 32 KiB left, below the reserve
    try {
      assert.deepEqual(await readyz(), { status: 503, body: { ready: false, checks: { listening: true, diskSpace: false } } });
    } finally {
      await rm(filler);
    }
    assert.equal((await readyz()).status, 200);
  });
});
