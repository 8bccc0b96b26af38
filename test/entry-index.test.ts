// tier: unit
// The entry index on disk: replayed in LRU order after a restart, tolerant of a torn last line,
// compacted without leftovers; and the nginx-syntax bounds that configure it.
import assert from 'node:assert/strict';
import { appendFile, open, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { EntryIndex, entryKey, type Entry } from '../src/cache/entry-index.js';
import { ConfigError, loadConfig, parseDuration, parseSize } from '../src/config/config.js';
import { TmpDirs } from './harness/tmp.js';

const digest = (n: number): string => 'sha256:' + n.toString(16).padStart(64, '0');
const entry = (n: number, size = 100): Entry => ({
  kind: 'blob',
  digest: digest(n),
  size,
  mediaType: 'application/octet-stream',
  created: 1000 + n,
  lastAccess: 1000 + n,
  refs: ['registry.test/lib/app'],
  sources: ['registry.test/lib/app'],
  tags: [],
});

describe('EntryIndex', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('tags a manifest stored after its tag was resolved (HEAD, then GET by digest), also after a restart', async () => {
    const dir = await tmp.make('regcache-index-pointer');
    const index = await EntryIndex.open(dir);
    const tag = 'registry.test/lib/app:v1';
    await index.setPointer(`${tag}|application/vnd.oci.image.index.v1+json`, digest(7)); // the HEAD: not stored yet
    assert.equal(index.taggedManifest(tag), undefined);
    await index.put({ ...entry(7), kind: 'manifest', tags: [] }); // the GET by digest carries no tag
    assert.equal(index.taggedManifest(tag)?.digest, digest(7));
    assert.deepEqual(
      index.pointersOf(tag).map((p) => p.digest),
      [digest(7)],
    );
    await index.setPointer(`${tag}|application/vnd.oci.image.index.v1+json`, digest(8)); // the tag moved
    await index.put({ ...entry(7), digest: digest(9), kind: 'manifest', tags: [] }); // unrelated manifest
    assert.equal(index.taggedManifest(tag)?.digest, digest(7), 'the last stored manifest keeps the tag until the new one is stored');
    await index.put({ ...entry(8), kind: 'manifest', tags: [] });
    assert.equal(index.taggedManifest(tag)?.digest, digest(8));
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.equal(reopened.taggedManifest(tag)?.digest, digest(8));
    assert.deepEqual(reopened.get('manifest', digest(7))?.tags, []);
    await reopened.close();
  });

  it('keeps a referrers pointer across a restart without tagging the list it names', async () => {
    const dir = await tmp.make('regcache-index-referrers');
    const index = await EntryIndex.open(dir);
    const key = `registry.test/lib/app@${digest(1)}|referrers;artifactType=`;
    await index.put({ ...entry(2), kind: 'manifest', tags: [] });
    await index.setPointer(key, digest(2));
    assert.deepEqual(index.get('manifest', digest(2))?.tags, [], 'a referrers list carries no tag');
    await index.put({ ...entry(3), kind: 'manifest', tags: [] });
    await index.setPointer(key, digest(3)); // the list grew
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.equal(reopened.pointer(key)?.digest, digest(3));
    assert.deepEqual(reopened.get('manifest', digest(3))?.tags, []);
    await reopened.close();
  });

  it('keeps the origins that delivered an entry across a restart, apart from those it was only requested under', async () => {
    const dir = await tmp.make('regcache-index-sources');
    const index = await EntryIndex.open(dir);
    await index.put(entry(31));
    await index.reference('blob', digest(31), 'hostile.test/lib/app', null); // a read: requested under, no source
    await index.addSource('blob', digest(31), 'mirror.test/lib/app'); // delivered the same bytes
    await index.addSource('blob', digest(31), 'mirror.test/lib/app');
    await index.close();
    const reopened = await EntryIndex.open(dir);
    const e = reopened.get('blob', digest(31))!;
    assert.deepEqual(e.refs, ['registry.test/lib/app', 'hostile.test/lib/app']);
    assert.deepEqual(e.sources, ['registry.test/lib/app', 'mirror.test/lib/app']);
    await reopened.close();
  });

  it('takes only the first repository of an entry journalled before sources were recorded as its source', async () => {
    const dir = await tmp.make('regcache-index-old-sources');
    const { sources: _, ...old } = { ...entry(32), refs: ['registry.test/lib/app', 'hostile.test/lib/app'] };
    await writeFile(path.join(dir, 'index.jsonl'), JSON.stringify({ op: 'put', e: old }) + '\n');
    const index = await EntryIndex.open(dir);
    assert.deepEqual(index.get('blob', digest(32))?.sources, ['registry.test/lib/app']);
    await index.close();
  });

  it("survives a full disk at the access times' flush, and writes them at the next one (the soak's primary died of it)", async (t) => {
    t.mock.timers.enable({ apis: ['setInterval'] });
    const dir = await tmp.make('regcache-index-full');
    const index = await EntryIndex.open(dir);
    await index.put(entry(21));
    index.touch('blob', digest(21), 1_800_000_000_000);
    const handle = (index as unknown as { handle: { appendFile: (text: string) => Promise<void> } }).handle;
    const appendFile = handle.appendFile.bind(handle);
    handle.appendFile = () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      t.mock.timers.tick(10_000); // the flush timer
      for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    assert.deepEqual(unhandled, [], 'no rejection left to end the process');
    handle.appendFile = appendFile; // room again
    await index.flushTouches();
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.equal(reopened.get('blob', digest(21))?.lastAccess, 1_800_000_000_000, 'the kept touch written');
    await reopened.close();
  });

  it('journals a removal the full disk refused (torn mid-line) at the next write, which never glues onto the torn line', async () => {
    for (const next of ['flush timer', 'another write'] as const) {
      const dir = await tmp.make('regcache-index-torn');
      const index = await EntryIndex.open(dir);
      for (const n of [31, 32, 33]) await index.put(entry(n));
      const handle = (index as unknown as { handle: { appendFile: (text: string) => Promise<void> } }).handle;
      const appendFile = handle.appendFile.bind(handle);
      handle.appendFile = async (text) => {
        await appendFile(text.slice(0, 12)); // a short write, then the disk is full
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      };
      await assert.rejects(index.delete('blob', digest(31)), /ENOSPC/);
      handle.appendFile = appendFile; // room again
      if (next === 'flush timer') await index.flushTouches();
      else await index.delete('blob', digest(32));
      await index.close();
      const reopened = await EntryIndex.open(dir); // a restart: what the journal says
      assert.deepEqual(
        [...reopened.oldestFirst()].map((e) => e.digest),
        next === 'flush timer' ? [digest(32), digest(33)] : [digest(33)],
        `after ${next}`,
      );
      await reopened.close();
    }
  });

  it('keeps a removed tag removed when its manifest is stored again (cache rm, then a pull by digest)', async () => {
    const dir = await tmp.make('regcache-index-untag');
    const index = await EntryIndex.open(dir);
    const tag = 'registry.test/lib/app:v1';
    await index.setPointer(`${tag}|application/vnd.oci.image.manifest.v1+json`, digest(11));
    await index.put({ ...entry(11), kind: 'manifest', tags: [] });
    assert.equal(index.taggedManifest(tag)?.digest, digest(11));
    await index.untag(tag);
    await index.delete('manifest', digest(11));
    await index.put({ ...entry(11), kind: 'manifest', tags: [] });
    assert.equal(index.taggedManifest(tag), undefined);
    assert.deepEqual(index.pointersOf(tag), []);
    await index.close();
  });

  it('records whether content is public or private as told, and keeps it across restarts (journal replayed, compacted)', async () => {
    const dir = await tmp.make('regcache-index-access');
    const index = await EntryIndex.open(dir);
    for (const n of [1, 2, 3]) await index.put(entry(n));
    await index.setAccess('blob', digest(1), 'private');
    await index.setAccess('blob', digest(2), 'public');
    await index.setAccess('blob', digest(4), 'public'); // not stored: nothing to say it of
    const accessOf = (i: EntryIndex) => [1, 2, 3, 4].map((n) => i.get('blob', digest(n))?.access);
    assert.deepEqual(accessOf(index), ['private', 'public', undefined, undefined]);
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.deepEqual(accessOf(reopened), ['private', 'public', undefined, undefined], 'after a restart');
    await reopened.setAccess('blob', digest(1), 'public'); // another origin serves it to anyone
    await reopened.close();
    const again = await EntryIndex.open(dir);
    assert.deepEqual(accessOf(again), ['public', 'public', undefined, undefined], 'after the compaction at the restart, and the public op appended');
    await again.close();
  });

  it('never takes a public back: a private told later (another origin, an older listing) leaves it public, in memory and replayed', async () => {
    const dir = await tmp.make('regcache-index-public-stays');
    const index = await EntryIndex.open(dir);
    await index.put(entry(6));
    await index.setAccess('blob', digest(6), 'public');
    await index.setAccess('blob', digest(6), 'private');
    assert.equal(index.get('blob', digest(6))?.access, 'public');
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.equal(reopened.get('blob', digest(6))?.access, 'public', 'after a restart');
    await reopened.close();
    const replica = EntryIndex.replica([]);
    replica.applyOps([
      { op: 'put', e: entry(7) },
      { op: 'acc', k: entryKey('blob', digest(7)), a: 'public' },
      { op: 'acc', k: entryKey('blob', digest(7)), a: 'private' },
    ]);
    assert.equal(replica.get('blob', digest(7))?.access, 'public', 'a replica applying the ops in order');
  });

  it('ignores a public/private fact about an entry it does not hold (a replica that dropped it, a journal line after its removal)', () => {
    const replica = EntryIndex.replica([]);
    replica.applyOps([{ op: 'acc', k: entryKey('blob', digest(5)), a: 'public' }]);
    assert.equal(replica.get('blob', digest(5)), undefined);
    replica.applyOps([{ op: 'put', e: entry(5) }]);
    assert.equal(replica.get('blob', digest(5))?.access, undefined, 'not public from before it was held');
  });

  it('keeps entries, sizes and LRU order across a restart', async () => {
    const dir = await tmp.make('regcache-index');
    const index = await EntryIndex.open(dir);
    for (const n of [1, 2, 3]) await index.put(entry(n));
    index.touch('blob', digest(1), 5000); // 1 is now the most recently used
    await index.reference('blob', digest(2), 'quay.io/other/app', null);
    await index.close();

    const reopened = await EntryIndex.open(dir);
    assert.deepEqual(
      [...reopened.oldestFirst()].map((e) => e.digest),
      [digest(2), digest(3), digest(1)],
    );
    assert.equal(reopened.totalBytes, 300);
    assert.deepEqual(reopened.get('blob', digest(2))?.refs, ['registry.test/lib/app', 'quay.io/other/app']);
    await reopened.delete('blob', digest(3));
    await reopened.close();
    const again = await EntryIndex.open(dir);
    assert.equal(again.size, 2);
    assert.equal(again.totalBytes, 200);
    await again.close();
  });

  it('compacts the journal while running once touches pile up', async () => {
    const dir = await tmp.make('regcache-index-compact');
    const index = await EntryIndex.open(dir, 10);
    await index.put(entry(1));
    await index.put(entry(2));
    for (let t = 0; t < 30; t++) {
      index.touch('blob', digest(1 + (t % 2)), 10_000 + t);
      await index.flushTouches();
    }
    const lines = (await readFile(path.join(dir, 'index.jsonl'), 'utf8')).split('\n').filter(Boolean);
    assert.ok(lines.length <= 2 + 10 + 1, `${lines.length} journal lines`);
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.deepEqual(
      [...reopened.oldestFirst()].map((e) => [e.digest, e.lastAccess]),
      [
        [digest(1), 10_028],
        [digest(2), 10_029],
      ],
    );
    await reopened.close();
  });

  it('moves a tag to the manifest it now points at', async () => {
    const dir = await tmp.make('regcache-index-tags');
    const index = await EntryIndex.open(dir);
    await index.put({ ...entry(1), kind: 'manifest', tags: ['r/app:v1'] });
    await index.put({ ...entry(2), kind: 'manifest' });
    await index.reference('manifest', digest(2), null, 'r/app:v1');
    assert.equal(index.taggedManifest('r/app:v1')?.digest, digest(2));
    assert.deepEqual(index.get('manifest', digest(1))?.tags, []);
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.equal(reopened.taggedManifest('r/app:v1')?.digest, digest(2));
    await reopened.close();
  });

  it('commits concurrent puts together: every one durable, far fewer syncs than puts', async () => {
    const dir = await tmp.make('regcache-index-group');
    const index = await EntryIndex.open(dir);
    // Count the journal's datasyncs through FileHandle's prototype (the handle itself is private).
    const probe = await open(path.join(dir, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { datasync: () => Promise<void> };
    await probe.close();
    const datasync = proto.datasync;
    let syncs = 0;
    proto.datasync = function (this: unknown) {
      syncs++;
      return datasync.call(this);
    };
    try {
      await Promise.all(Array.from({ length: 200 }, (_, n) => index.put(entry(n + 1))));
    } finally {
      proto.datasync = datasync;
    }
    assert.ok(syncs >= 1 && syncs < 20, `${syncs} datasyncs for 200 concurrent puts`);
    await index.close();
    const reopened = await EntryIndex.open(dir);
    assert.equal(reopened.size, 200);
    assert.deepEqual(
      [...reopened.oldestFirst()].map((e) => e.digest),
      Array.from({ length: 200 }, (_, n) => digest(n + 1)),
    );
    await reopened.close();
  });

  it('ignores a line torn by a crash and leaves no temporary files', async () => {
    const dir = await tmp.make('regcache-index-torn');
    const index = await EntryIndex.open(dir);
    await index.put(entry(1));
    await index.close();
    await appendFile(path.join(dir, 'index.jsonl'), '{"op":"put","e":{"kind":"blob","dig');
    await writeFile(path.join(dir, 'index.jsonl.abc123.tmp'), 'half a compaction');
    const reopened = await EntryIndex.open(dir);
    assert.equal(reopened.size, 1);
    await reopened.close();
    assert.deepEqual((await readdir(dir)).sort(), ['index.jsonl']);
    assert.equal((await readFile(path.join(dir, 'index.jsonl'), 'utf8')).split('\n').filter(Boolean).length, 1);
  });
});

describe('cache bounds configuration', () => {
  it('reads nginx sizes and durations', () => {
    assert.equal(parseSize('X', '32g'), 32 * 1024 ** 3);
    assert.equal(parseSize('X', '500M'), 500 * 1024 ** 2);
    assert.equal(parseSize('X', '1024k'), 1024 * 1024);
    assert.equal(parseSize('X', '12345'), 12345);
    assert.equal(parseDuration('X', '60d'), 60 * 86_400_000);
    assert.equal(parseDuration('X', '1h30m'), 90 * 60_000);
    assert.equal(parseDuration('X', '45'), 45_000);
    const c = loadConfig({});
    assert.equal(c.cacheMaxSize, 32 * 1024 ** 3);
    assert.equal(c.cacheInactiveMs, 60 * 86_400_000);
  });

  for (const [variable, value] of [
    ['CACHE_MAX_SIZE', '10 gb'],
    ['CACHE_MAX_SIZE', '0'],
    ['CACHE_MAX_SIZE', '-5m'],
    ['CACHE_INACTIVE', '3 days'],
    ['CACHE_INACTIVE', '0d'],
  ] as const) {
    it(`refuses ${variable}=${value} naming the variable and an example`, () => {
      assert.throws(
        () => loadConfig({ [variable]: value }),
        (err: Error) => err instanceof ConfigError && err.message.includes(`${variable}="${value}"`) && /e\.g\./.test(err.message),
      );
    });
  }
});
