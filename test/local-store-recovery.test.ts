// tier: unit
// The directory store after a crash: an entry whose content file is gone (a removal killed between its
// unlink and its journal line, or one the full disk did not let it journal) is dropped when the store
// opens and reported by the first `cache verify`; an entry removed while verify runs is not "missing".
// The soak's 60-minute run found such entries (cache verify: 3 missing, 2 not damaged by a fault).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { rm } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import { CacheAdmin, type VerifyReport } from '../src/cache/cache-admin.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import { TmpDirs } from './harness/tmp.js';

const REPO = 'registry.test/lib/app';

async function putBlob(store: LocalStore, seed: string): Promise<string> {
  const data = Buffer.alloc(1000, seed);
  const digest = 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
  await store.putVerified({ kind: 'blob', digest, size: data.length, mediaType: 'application/octet-stream' }, data, { ref: REPO, tag: null });
  return digest;
}

const digests = (store: LocalStore): string[] => [...store.index.oldestFirst()].map((e) => e.digest).sort();

describe('LocalStore after a crash', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('drops at open an entry the journal names but whose file is gone; the first verify reports it, the second is clean', async () => {
    const dir = await tmp.make('regcache-lost-file');
    const store = await LocalStore.open(dir);
    const kept = await putBlob(store, 'k');
    const lost = await putBlob(store, 'l');
    await store.close();
    await rm(store.contentPath(lost)); // the unlink happened, its journal line did not

    const reopened = await LocalStore.open(dir);
    assert.deepEqual(digests(reopened), [kept]);
    assert.deepEqual(
      reopened.lostAtOpen.map((e) => e.digest),
      [lost],
    );
    const admin = new CacheAdmin(
      reopened,
      1024 ** 3,
      reopened.lostAtOpen.map((e) => e.digest),
    );
    const first = (await admin.run('verify', {})) as VerifyReport;
    assert.deepEqual(first.missing, [lost]);
    assert.equal(first.checked, 1);
    const second = (await admin.run('verify', {})) as VerifyReport;
    assert.deepEqual(second.missing, []);
    await reopened.close();

    const third = await LocalStore.open(dir); // the drop was journalled
    assert.deepEqual(third.lostAtOpen, []);
    assert.deepEqual(digests(third), [kept]);
    await third.close();
  });

  it('does not count as missing an entry removed while verify ran (evicted, cache rm)', async () => {
    const store = await LocalStore.open(await tmp.make('regcache-verify-race'));
    const a = await putBlob(store, 'a');
    const b = await putBlob(store, 'b');
    const open = store.open.bind(store);
    store.open = async (content) => {
      if (content.digest === a) await store.remove('blob', b); // evicted between verify's listing and its open
      return open(content);
    };
    const report = (await new CacheAdmin(store, 1024 ** 3).run('verify', {})) as VerifyReport;
    assert.deepEqual(report.missing, []);
    assert.deepEqual(report.corrupt, []);
    assert.deepEqual(digests(store), [a]);
    await store.close();
  });
});
