// tier: e2e
// Store integrity (issue 12, items 7-9) with real parts: the real regcache process with a fake upstream for
// stored files that changed or shrank on disk, a small tmpfs as a full disk, and a process started under
// umask 000. The verifying reader in process against temp files: test/verified-file-reader.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { chmod, mkdir, open, readdir, rm, stat, statfs, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { contentPath } from '../src/cache/content-files.js';
import { CorruptContentError } from '../src/cache/verified-file-reader.js';
import { run, waitFor } from './harness/proc.js';
import { requestLines, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { makeBlob, type FakeBlob } from './support/fake-registry.js';
import { FakeUpstream } from './support/fake-upstream.js';
import { ProxyClient } from './support/proxy-client.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const MiB = 1024 * 1024;
const REG = 'https://registry.test';

const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const storedFile = (cacheDir: string, digest: string): string => contentPath(cacheDir, digest);
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

describe('stored bytes are checked on the way out', () => {
  const tmp = new TmpDirs();
  const fx = new FakeUpstream();
  let dir: string;
  let proxy: Regcache;
  let client: ProxyClient;

  before(async () => {
    dir = await tmp.make('regcache-integrity');
    await fx.start(dir, 'store integrity CA');
    ({ proxy, client } = await fx.regcache({ dir: path.join(dir, 'verifying') }));
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await fx.upstream.close();
    await tmp.cleanup();
  });

  // The line of the first request for the digest after the mark (taken before sending it): waited for, as
  // regcache writes it when it sees the response close, which can come after the client has the answer. Each
  // request's line is waited for before the next mark, so a late line never lands after a mark.
  const lineSince = async (rc: Regcache, digest: string, since: number) => (await requestLines(rc, (l) => l.digest === digest, 1, { since }))[0];
  /** GET once (MISS) and wait until the content is committed and the request logged (a later mark is after it). */
  const stored = async (rc: Regcache, c: ProxyClient, blob: FakeBlob): Promise<string> => (await commit(rc, c, blob)).file;
  const commit = async (rc: Regcache, c: ProxyClient, blob: FakeBlob): Promise<{ file: string; committedAt: number }> => {
    const mark = await rc.logMark();
    assert.ok((await c.fetch(blobUrl(blob))).body.equals(blob.data));
    await lineSince(rc, blob.digest, mark);
    const line = await rc.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
    return { file: storedFile(rc.cacheDir, blob.digest), committedAt: Date.parse(String(line.time)) };
  };
  /**
   * Stores the blob, then flips one byte of its file so that regcache can see the change: a file its own
   * fill wrote is trusted while its ctime is no later than the commit (trusted-files.ts), and a write in the
   * same clock tick as the commit can leave the ctime there (seen under load: the flipped file served as
   * trusted). The byte is flipped back and forth until the ctime is past the commit line.
   */
  const storedThenFlipped = async (rc: Regcache, c: ProxyClient, blob: FakeBlob, offset: number): Promise<void> => {
    const { file, committedAt } = await commit(rc, c, blob);
    await flipByte(file, offset);
    while ((await stat(file)).ctimeMs <= committedAt) {
      await flipByte(file, offset);
      await flipByte(file, offset);
    }
  };

  it('cuts a HIT whose stored file has a flipped byte, logs CORRUPT, drops the entry; the next GET refetches', async () => {
    const blob = fx.upstream.add(makeBlob(2 * MiB, 'flipped-hit'));
    await storedThenFlipped(proxy, client, blob, 5000);

    const headMark = await proxy.logMark();
    const head = await fetchKeepingCuts(client, blobUrl(blob), {}, 'HEAD');
    assert.equal(head.status, 200, 'a HEAD only checks the size');
    assert.equal((await lineSince(proxy, blob.digest, headMark))?.cache, 'HIT');

    const cut = await fetchKeepingCuts(client, blobUrl(blob));
    assert.equal(cut.status, 200);
    assert.equal(cut.headers['content-length'], String(blob.data.length));
    assert.ok(cut.error, 'the body was cut');
    assert.ok(cut.body.length < blob.data.length, `${cut.body.length} of ${blob.data.length} bytes: never a complete bad body`);
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.cache === 'CORRUPT' && l.digest === blob.digest, 'the CORRUPT line');
    assert.equal(line.level, 'warn');
    assert.match(String(line.error), /CorruptContentError: the stored bytes hash to sha256:[0-9a-f]{64}, not /);
    // Issue 25's soak: the cut surfaced again as a client's fault ("TLS interception failed", "bad request refused").
    const blamed = (await proxy.logs()).filter(
      (l) => (l.msg === 'bad request refused' || l.msg === 'TLS interception failed') && /CorruptContent|hash to/.test(String(l.error)),
    );
    assert.deepEqual(blamed, [], "regcache's own cut is not logged as the client's bad request");
    assert.ok(
      (await proxy.logs()).some((l) => l.msg === 'stored content does not match its digest; dropped' && l.digest === blob.digest && l.level === 'warn'),
    );
    assert.ok(!(await storedDigests(proxy.cacheDir)).includes(blob.digest), 'the entry is dropped');

    const againMark = await proxy.logMark();
    const again = await client.fetch(blobUrl(blob));
    assert.ok(again.body.equals(blob.data), 'the refetch is correct');
    assert.equal((await lineSince(proxy, blob.digest, againMark))?.cache, 'MISS');
    assert.equal(fx.upstream.count('GET', blob.digest), 2);
    await waitFor(async () => (await proxy.logs()).filter((l) => l.msg === 'fill committed' && l.digest === blob.digest).length === 2, {
      timeoutMs: 10_000,
      what: 'the recommit',
    });
    const storedMark = await proxy.logMark();
    assert.ok((await client.fetch(blobUrl(blob))).body.equals(blob.data));
    assert.equal((await lineSince(proxy, blob.digest, storedMark))?.cache, 'HIT', 'the refetched content is stored again');
  });

  it('treats a truncated stored file as missing: refetched, correct, promptly, and logged', async () => {
    const blob = fx.upstream.add(makeBlob(3 * MiB, 'truncated'));
    await truncate(await stored(proxy, client, blob), 1 * MiB);

    const headsBefore = fx.upstream.count('HEAD', blob.digest); // regcache's own access check HEADs too
    const headMark = await proxy.logMark();
    const head = await fetchKeepingCuts(client, blobUrl(blob), {}, 'HEAD');
    assert.equal(head.status, 200);
    assert.equal((await lineSince(proxy, blob.digest, headMark))?.cache, 'MISS', 'a HEAD of a short file goes upstream');
    assert.equal(fx.upstream.count('HEAD', blob.digest), headsBefore + 1);

    const getMark = await proxy.logMark();
    const got = await fetchKeepingCuts(client, blobUrl(blob));
    assert.equal(got.error, null);
    assert.ok(got.body.equals(blob.data));
    assert.ok(got.ms < 5000, `took ${got.ms} ms`);
    assert.equal((await lineSince(proxy, blob.digest, getMark))?.cache, 'MISS');
    assert.equal(fx.upstream.count('GET', blob.digest), 2);
    const warning = (await proxy.logs()).find((l) => l.msg === 'stored content has the wrong size; dropped' && l.digest === blob.digest);
    assert.equal(warning?.level, 'warn');
    assert.deepEqual([warning?.size, warning?.actualSize], [3 * MiB, 1 * MiB]);
  });

  it('cuts a Range request on a stored file with a flipped byte outside the range', async () => {
    const blob = fx.upstream.add(makeBlob(2 * MiB, 'flipped-range'));
    await storedThenFlipped(proxy, client, blob, 2 * MiB - 1);

    const cut = await fetchKeepingCuts(client, blobUrl(blob), { range: 'bytes=0-99' });
    assert.equal(cut.status, 206);
    assert.ok(cut.error, 'the ranged body was cut');
    assert.ok(cut.body.length < 100);
    await proxy.waitForLog((l) => l.msg === 'request' && l.cache === 'CORRUPT' && l.digest === blob.digest, 'the CORRUPT line');
    assert.ok(!(await storedDigests(proxy.cacheDir)).includes(blob.digest));
  });

  it('the scrubber (SCRUB_RATE) drops a stored file whose byte flipped while regcache was down; the next GET refetches', async () => {
    // Stopped, flipped, restarted: the index is loaded with the entry, so the first pass starts at once.
    const where = path.join(dir, 'scrubbed');
    const blob = fx.upstream.add(makeBlob(2 * MiB, 'scrubbed'));
    const first = await fx.regcache({ dir: where, env: { SCRUB_RATE: '0' } });
    try {
      await stored(first.proxy, first.client, blob);
    } finally {
      await first.client.close();
      await first.proxy.stop();
    }
    await flipByte(storedFile(first.proxy.cacheDir, blob.digest), 4321);
    const { proxy: scrubbing, client: scrubbingClient } = await fx.regcache({ dir: where, env: { SCRUB_RATE: '1g' } });
    try {
      const line = await scrubbing.waitForLog((l) => l.msg === 'stored content does not match its digest; dropped' && l.digest === blob.digest, 'the scrub');
      assert.equal(line.by, 'scrub');
      assert.equal(line.cache, 'CORRUPT');
      assert.ok(!(await storedDigests(scrubbing.cacheDir)).includes(blob.digest), 'the entry is dropped');
      const againMark = await scrubbing.logMark();
      const again = await scrubbingClient.fetch(blobUrl(blob));
      assert.ok(again.body.equals(blob.data));
      assert.equal((await lineSince(scrubbing, blob.digest, againMark))?.cache, 'MISS', 'refetched, never served from the flipped file');
      assert.equal(fx.upstream.count('GET', blob.digest), 2);
    } finally {
      await scrubbingClient.close();
      await scrubbing.stop();
    }
  });

  it('with VERIFY_ON_READ=false serves the flipped file as it is (the check is what catches it)', async () => {
    const { proxy: plain, client: plainClient } = await fx.regcache({ dir: path.join(dir, 'not-verifying'), env: { VERIFY_ON_READ: 'false' } });
    try {
      const blob = fx.upstream.add(makeBlob(2 * MiB, 'flipped-unverified'));
      await storedThenFlipped(plain, plainClient, blob, 5000);
      const gotMark = await plain.logMark();
      const got = await fetchKeepingCuts(plainClient, blobUrl(blob));
      assert.equal(got.error, null);
      assert.equal(got.body.length, blob.data.length);
      assert.notEqual(sha256(got.body), blob.digest, 'the changed bytes went out whole');
      assert.equal((await lineSince(plain, blob.digest, gotMark))?.cache, 'HIT');

      // The size check stays on without verification.
      const short = fx.upstream.add(makeBlob(1 * MiB, 'truncated-unverified'));
      await truncate(await stored(plain, plainClient, short), 1000);
      const refetchMark = await plain.logMark();
      const refetched = await fetchKeepingCuts(plainClient, blobUrl(short));
      assert.ok(refetched.body.equals(short.data));
      assert.equal((await lineSince(plain, short.digest, refetchMark))?.cache, 'MISS');
    } finally {
      await plainClient.close();
      await plain.stop();
    }
  });

  it('cache verify exits 1 when it finds corruption, 0 once the cache is clean', async () => {
    const blob = fx.upstream.add(makeBlob(300_000, 'verify-exit'));
    // Whatever the tests before left in this cache, checked first: this test counts only its own entry.
    await cli(proxy.cacheDir, 'verify');
    await storedThenFlipped(proxy, client, blob, 10);
    const found = await cli(proxy.cacheDir, 'verify');
    assert.equal(found.code, 1, found.stdout + found.stderr);
    assert.match(found.stdout, new RegExp(`corrupt \\(removed\\): ${blob.digest}`));
    assert.match(found.stderr, /^regcache: verify found 1 corrupt and 0 missing entries/);
    const clean = await cli(proxy.cacheDir, 'verify');
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    assert.match(clean.stdout, /0 corrupt, 0 missing/);
  });
});

describe('a full disk (small tmpfs as CACHE_DIR)', () => {
  const tmp = new TmpDirs();
  const fx = new FakeUpstream();
  let dir: string;
  let cacheDir: string;
  let mounted = false;
  let proxy: Regcache | undefined;
  let client: ProxyClient | undefined;
  const early: FakeBlob[] = [];

  before(async () => {
    dir = await tmp.make('regcache-full-disk');
    await fx.start(dir, 'store integrity CA');
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
    // Its request line is written when regcache sees the response close, which may be after the client's last byte.
    const line = await proxy!.waitForLog((l) => l.msg === 'request' && l.digest === big.digest, 'the request line of the big blob');
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

describe('modes regardless of umask', () => {
  const tmp = new TmpDirs();
  const fx = new FakeUpstream();
  let dir: string;

  before(async () => {
    dir = await tmp.make('regcache-umask');
    await fx.start(dir, 'store integrity CA');
  });
  after(() => fx.upstream.close().then(() => tmp.cleanup()));

  /** Every directory and file below root with its permission bits, e.g. ['content-v2/sha256', 0o700]. */
  async function modesBelow(root: string): Promise<[string, number, 'dir' | 'file' | 'other'][]> {
    const entries = await readdir(root, { recursive: true, withFileTypes: true });
    const rows: [string, number, 'dir' | 'file' | 'other'][] = [];
    for (const e of entries) {
      const full = path.join(e.parentPath, e.name);
      rows.push([path.relative(root, full), (await stat(full)).mode & 0o777, e.isDirectory() ? 'dir' : e.isFile() ? 'file' : 'other']);
    }
    return rows;
  }

  it('creates every directory 0700 and every file 0600 under umask 000 (CA_DIR and CACHE_DIR)', async () => {
    const cacheDir = path.join(dir, 'cache');
    await mkdir(cacheDir);
    await chmod(cacheDir, 0o777); // a CACHE_DIR that exists already, wide open: it is narrowed
    const caDir = path.join(dir, 'ca', 'nested'); // created by regcache, parents included
    const { proxy, client } = await fx.regcache({ dir, cacheDir, caDir, umask: '000', freshCa: true });
    try {
      const blob = fx.upstream.add(makeBlob(100_000, 'umask-blob'));
      const manifest = makeBlob(0, 'unused');
      const doc = Buffer.from(JSON.stringify({ schemaVersion: 2, layers: [{ digest: blob.digest }] }));
      const m = { ...manifest, data: doc, digest: sha256(doc), mediaType: 'application/vnd.oci.image.manifest.v1+json' };
      fx.upstream.tags.set('lib/app:v1', m); // stored through putBuffer, not a fill
      fx.upstream.add(m);
      assert.equal((await client.fetch(`${REG}/v2/lib/app/manifests/v1`)).status, 200);
      assert.ok((await client.fetch(blobUrl(blob))).body.equals(blob.data));
      await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the commit');
      assert.deepEqual((await storedDigests(cacheDir)).sort(), [blob.digest, m.digest].sort());

      assert.equal((await stat(cacheDir)).mode & 0o777, 0o700, 'CACHE_DIR');
      assert.equal((await stat(caDir)).mode & 0o777, 0o700, 'CA_DIR');
      assert.equal((await stat(path.join(dir, 'ca'))).mode & 0o777, 0o700, "CA_DIR's parent, created too");
      assert.equal((await stat(path.join(caDir, 'ca.key'))).mode & 0o777, 0o600, 'the CA key');
      assert.equal((await stat(path.join(caDir, 'leaf.key'))).mode & 0o777, 0o600, 'the leaf key');
      const rows = await modesBelow(cacheDir);
      const files = rows.filter(([, , type]) => type === 'file').map(([name]) => name);
      assert.ok(files.includes('index.jsonl'), 'the journal is there');
      assert.ok(files.includes(path.relative(cacheDir, storedFile(cacheDir, blob.digest))), 'the blob is there');
      assert.ok(files.includes(path.relative(cacheDir, storedFile(cacheDir, m.digest))), 'the manifest is there');
      assert.ok(rows.some(([name]) => name === 'spool'));
      const wrong = rows.filter(([, mode, type]) => (type === 'dir' ? mode !== 0o700 : mode !== 0o600)).map(([name, mode]) => `${name} ${mode.toString(8)}`);
      assert.deepEqual(wrong, [], 'directories 0700, files (and the control socket) 0600');
      assert.ok(rows.filter(([, , type]) => type === 'dir').length >= 5, 'content-v2 and its nested directories were checked');
    } finally {
      await client.close();
      await proxy.stop();
    }
  });
});
