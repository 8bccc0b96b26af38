// tier: unit
// The content files' helpers in process. commitSmall (how a manifest is stored: a spool file written,
// synced, handed to the commit) leaves no file behind when any step fails: the soak (issue 25) found a
// spool file left by a manifest whose write hit a full disk, which nothing removes before a restart.
// A spool file is named over the IPC channel (a worker asks the primary to commit it): only a spool name
// (fill-[a-z0-9-]+) is taken, never a path.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it, mock } from 'node:test';
import cacache from 'cacache';
import crypto from 'node:crypto';
import { commitSmall, contentPath, newSpoolName, openSpoolDir, spoolDirOf, spoolPath } from '../src/cache/content-files.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import { TmpDirs } from './harness/tmp.js';

describe('commitSmall', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('removes the spool file when the write fails (ENOSPC), and when the commit fails', async () => {
    const dir = await tmp.make('regcache-content-files');
    await openSpoolDir(dir);
    const realOpen = fs.open.bind(fs);
    const full = mock.method(fs, 'open', async (...args: Parameters<typeof fs.open>) => {
      const handle = await realOpen(...args);
      // The disk fills after the file was created: its first write fails.
      handle.writeFile = () => Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
      return handle;
    });
    let committed = false;
    await assert.rejects(
      commitSmall(dir, newSpoolName('w1-'), Buffer.from('{"schemaVersion":2}'), async () => {
        committed = true;
      }),
      /ENOSPC/,
    );
    full.mock.restore();
    assert.equal(committed, false, 'nothing half-written was committed');
    assert.deepEqual(await fs.readdir(spoolDirOf(dir)), [], 'no spool file left by the failed write');

    await assert.rejects(
      commitSmall(dir, newSpoolName('w1-'), Buffer.from('{}'), () => Promise.reject(new Error('the primary is gone'))),
      /the primary is gone/,
    );
    assert.deepEqual(await fs.readdir(spoolDirOf(dir)), [], 'none left by the failed commit');

    let moved = '';
    await commitSmall(dir, newSpoolName('w1-'), Buffer.from('{"ok":1}'), async (file) => {
      moved = path.join(dir, 'kept');
      await fs.rename(file, moved);
    });
    assert.equal(await fs.readFile(moved, 'utf8'), '{"ok":1}', 'a commit that works gets the bytes');
  });
});

describe('contentPath: cacache content layout, owned by regcache', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it("puts content where cacache's public API reads it by integrity", async () => {
    const dir = await tmp.make('regcache-content-layout');
    const body = Buffer.from('a layer, as regcache stores it');
    const hash = createHash('sha256').update(body);
    const digest = `sha256:${hash.copy().digest('hex')}`;
    const file = contentPath(dir, digest);
    await fs.mkdir(path.dirname(file), { recursive: true });
    await fs.writeFile(file, body);
    const integrity = `sha256-${hash.digest('base64')}`;
    assert.ok(await cacache.get.hasContent(dir, integrity), 'cacache finds the file regcache wrote');
    assert.deepEqual(await cacache.get.byDigest(dir, integrity), body);
  });
});

describe('spool names', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('takes only spool names, never a path', async () => {
    const dir = await tmp.make('regcache-spool-names');
    for (const name of [newSpoolName(), newSpoolName('w1-')]) assert.equal(spoolPath(dir, name), path.join(spoolDirOf(dir), name));
    for (const name of ['../index', 'fill-../../ca.key', 'fill-a/b', '/etc/passwd', 'fill-', 'spool', '', 'fill-A', 'fill-a\nb', 'fill-a.b'])
      assert.throws(() => spoolPath(dir, name), /not a spool file name/, JSON.stringify(name));
  });

  it("refuses a worker's commit of a path: the file named stays where it is and nothing is stored", async () => {
    const dir = await tmp.make('regcache-spool-names');
    const store = await LocalStore.open(dir);
    try {
      const victim = path.join(dir, 'victim');
      const data = Buffer.from('not content of the cache');
      await fs.writeFile(victim, data);
      const digest = 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
      const content = { kind: 'blob' as const, digest, size: data.length, mediaType: 'application/octet-stream' };
      await assert.rejects(async () => store.commitSpooled('../victim', content, { ref: 'registry.test/lib/app', tag: null }), /not a spool file name/);
      assert.equal(await fs.readFile(victim, 'utf8'), 'not content of the cache', 'the file stays where it was');
      assert.equal(store.index.get('blob', digest), undefined, 'and nothing was stored');
    } finally {
      await store.close();
    }
  });
});
