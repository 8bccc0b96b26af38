// tier: unit
// What belongs to a stored image, in-process against a real LocalStore in a temp dir: `cache rm` removes
// only what no other stored image (another tag, another repository, an index listing the manifest) or
// repository uses, --dry-run reports exactly that, `ls --images` agrees, and Docker Hub is docker.io.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { after, describe, it } from 'node:test';
import { CacheAdmin, type ListedImage, type RemovalReport } from '../src/cache/cache-admin.js';
import type { Provenance } from '../src/cache/content-store.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import type { EntryKind } from '../src/cache/entry-index.js';
import { TmpDirs } from './harness/tmp.js';

const HUB = 'registry-1.docker.io';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** A store with helpers that put content the way fills do (verified digest, provenance). */
class Fixture {
  private constructor(
    readonly store: LocalStore,
    readonly admin: CacheAdmin,
  ) {}

  static async open(dir: string): Promise<Fixture> {
    const store = await LocalStore.open(dir);
    return new Fixture(store, new CacheAdmin(store, 1024 ** 3));
  }

  async put(kind: EntryKind, data: Buffer, repo: string, tag: string | null = null, mediaType = 'application/octet-stream'): Promise<string> {
    const digest = 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
    const from: Provenance = { ref: repo, tag: tag === null ? null : `${repo}:${tag}` };
    await this.store.putVerified({ kind, digest, size: data.length, mediaType }, data, from);
    return digest;
  }

  blob(seed: string, size: number, repo: string): Promise<string> {
    return this.put('blob', Buffer.alloc(size, seed), repo);
  }

  /** An image manifest naming a config and layers (stored or not). */
  image(repo: string, tag: string | null, config: string, layers: string[]): Promise<string> {
    const doc = { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: config, size: 1 }, layers: layers.map((digest) => ({ digest, size: 1 })) };
    return this.put('manifest', Buffer.from(JSON.stringify(doc)), repo, tag, OCI_MANIFEST);
  }

  index(repo: string, tag: string | null, children: { digest: string; platform: string }[]): Promise<string> {
    const manifests = children.map(({ digest, platform }) => {
      const [os, architecture] = platform.split('/');
      return { mediaType: OCI_MANIFEST, digest, size: 1, platform: { os, architecture } };
    });
    return this.put('manifest', Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests })), repo, tag, OCI_INDEX);
  }

  digests(): Set<string> {
    return new Set([...this.store.index.oldestFirst()].map((e) => e.digest));
  }

  close(): Promise<void> {
    return this.store.close();
  }
}

const unstored = (seed: string) => 'sha256:' + crypto.createHash('sha256').update(seed).digest('hex');

describe('stored images: cache rm, --dry-run and ls --images', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  /**
   * docker.io/library/alpine:3.20 and :latest name one index, which lists an amd64 manifest (stored) and
   * an arm64 one (not pulled); docker.io/library/other:1 names the amd64 manifest itself.
   */
  async function alpine(): Promise<{ f: Fixture; index: string; amd64: string; config: string; layer: string }> {
    const f = await Fixture.open(await tmp.make('regcache-images'));
    const repo = `${HUB}/library/alpine`;
    const config = await f.blob('c', 100, repo);
    const layer = await f.blob('l', 1000, repo);
    const amd64 = await f.image(repo, null, config, [layer]);
    const index = await f.index(repo, '3.20', [
      { digest: amd64, platform: 'linux/amd64' },
      { digest: unstored('arm64'), platform: 'linux/arm64' },
      { digest: unstored('attestation'), platform: 'unknown/unknown' },
    ]);
    await f.store.index.reference('manifest', index, repo, `${repo}:latest`);
    await f.put('manifest', await readFile(f.store.contentPath(amd64)), `${HUB}/library/other`, '1', OCI_MANIFEST); // the same bytes, tagged there
    return { f, index, amd64, config, layer };
  }

  it('removes only the tag when another tag names the same manifest', async () => {
    const { f, index } = await alpine();
    const before = f.digests();
    const report = await f.admin.rm('alpine:3.20');
    assert.deepEqual(report.untagged, ['docker.io/library/alpine:3.20']);
    assert.equal(report.removed, 0);
    assert.deepEqual(f.digests(), before, 'nothing another image uses is removed');
    assert.deepEqual(report.kept.find((k) => k.digest === index)?.usedBy, ['docker.io/library/alpine:latest']);
    assert.equal(f.store.index.taggedManifest(`${HUB}/library/alpine:latest`)?.digest, index);
    assert.equal(f.store.index.taggedManifest(`${HUB}/library/alpine:3.20`), undefined);
    const images = (await f.admin.images()).map((i) => i.image);
    assert.deepEqual(images, ['docker.io/library/alpine:latest', 'docker.io/library/other:1']);
    await f.close();
  });

  it("removes an index and what only it uses, keeping a manifest another repository's tag names", async () => {
    const { f, index, amd64, config, layer } = await alpine();
    await f.admin.rm('docker.io/library/alpine:3.20');
    const report = await f.admin.rm('index.docker.io/library/alpine:latest');
    assert.deepEqual(
      report.entries.map((e) => e.digest),
      [index],
    );
    assert.deepEqual(new Set(report.kept.map((k) => k.digest)), new Set([amd64, config, layer]));
    for (const k of report.kept) assert.ok(k.usedBy.includes('docker.io/library/other:1'), JSON.stringify(k));
    assert.deepEqual(f.digests(), new Set([amd64, config, layer]));
    // No index lists the amd64 manifest in library/alpine now: it is an image there by digest.
    const images = await f.admin.images();
    assert.deepEqual(
      images.map((i) => i.image),
      [`docker.io/library/alpine@${amd64}`, 'docker.io/library/other:1'],
    );
    assert.ok(images.every((i) => i.complete));
    await f.close();
  });

  it('keeps a layer another repository requested, even when no stored manifest there names it', async () => {
    const f = await Fixture.open(await tmp.make('regcache-images-refs'));
    const shared = await f.blob('s', 300, 'registry.test/lib/tool');
    await f.store.index.reference('blob', shared, 'registry.test/lib/other', null);
    const own = await f.blob('o', 200, 'registry.test/lib/tool');
    const manifest = await f.image('registry.test/lib/tool', 'v2', shared, [own]);
    const report = await f.admin.rm('registry.test/lib/tool:v2');
    assert.deepEqual(new Set(report.entries.map((e) => e.digest)), new Set([manifest, own]));
    assert.deepEqual(report.kept, [{ kind: 'blob', digest: shared, size: 300, usedBy: ['registry.test/lib/other'] }]);
    assert.deepEqual(f.digests(), new Set([shared]));
    await f.close();
  });

  it('--dry-run reports exactly what the removal then removes, and removes nothing', async () => {
    const { f } = await alpine();
    await f.admin.rm('alpine:3.20');
    const before = f.digests();
    const dry = await f.admin.rm('alpine:latest', true);
    assert.equal(dry.dryRun, true);
    assert.deepEqual(f.digests(), before, 'nothing removed');
    assert.equal(f.store.index.taggedManifest(`${HUB}/library/alpine:latest`)?.kind, 'manifest', 'the tag is still there');
    const real = await f.admin.rm('alpine:latest');
    const strip = (r: RemovalReport) => ({ ...r, dryRun: undefined });
    assert.deepEqual(strip(real), strip(dry));
    assert.deepEqual(
      real.entries.map((e) => e.kind),
      ['manifest'],
      'the index goes; what other:1 uses stays',
    );
    const pruneDry = await f.admin.prune(null, 1, true);
    assert.equal(pruneDry.removed, f.store.index.size);
    assert.deepEqual(new Set(pruneDry.entries.map((e) => e.digest)), f.digests());
    assert.equal(f.store.index.size, pruneDry.removed, 'prune --dry-run removed nothing');
    await f.close();
  });

  it('lists images: docker.io names, sizes, complete or not, platforms, and an image by digest once its tag moved', async () => {
    const { f, index, amd64, config, layer } = await alpine();
    const size = (d: string, kind: EntryKind = 'blob') => f.store.index.get(kind, d)!.size;
    const rows = new Map((await f.admin.images()).map((r) => [r.image, r]));
    const tagged = rows.get('docker.io/library/alpine:3.20')!;
    assert.equal(tagged.digest, index);
    assert.equal(tagged.size, size(index, 'manifest') + size(amd64, 'manifest') + size(config) + size(layer));
    assert.equal(tagged.complete, true);
    assert.deepEqual(tagged.platforms, { stored: ['linux/amd64'], listed: 2 }, 'the attestation is no platform');
    assert.equal(rows.get('docker.io/library/other:1')?.platforms, null);

    // A layer that was never fetched, and a tag that moved on: the old manifest is still pullable by digest.
    const repo = 'ghcr.io/org/app';
    const appConfig = await f.blob('ac', 50, repo);
    const old = await f.image(repo, 'v1', appConfig, []);
    const current = await f.image(repo, 'v1', appConfig, [unstored('never fetched')]);
    const app = (await f.admin.images('ghcr.io')).map((r): [string, ListedImage] => [r.image, r]);
    assert.deepEqual(
      app.map(([name]) => name),
      [`ghcr.io/org/app:v1`, `ghcr.io/org/app@${old}`],
    );
    assert.equal(app[0]![1].digest, current);
    assert.equal(app[0]![1].complete, false);
    assert.deepEqual(app[0]![1].missing, [unstored('never fetched')]);
    assert.equal(app[1]![1].complete, true);

    for (const name of ['docker.io', 'registry-1.docker.io', 'INDEX.docker.io']) {
      assert.deepEqual(
        (await f.admin.images(name)).map((r) => r.image),
        ['docker.io/library/alpine:3.20', 'docker.io/library/alpine:latest', 'docker.io/library/other:1'],
        name,
      );
    }
    const removed = await f.admin.rm(`ghcr.io/org/app@${old}`);
    assert.deepEqual(
      removed.entries.map((e) => e.digest),
      [old],
      'its config is used by the current v1',
    );
    await f.close();
  });

  it('forgets a removed tag across a restart, with what it pointed at', async () => {
    const dir = await tmp.make('regcache-images-untag');
    let f = await Fixture.open(dir);
    const repo = 'registry.test/lib/app';
    const config = await f.blob('c', 10, repo);
    const manifest = await f.image(repo, 'v1', config, []);
    await f.store.index.reference('manifest', manifest, repo, `${repo}:v2`);
    const pointer = `${repo}:v1|${OCI_MANIFEST}`;
    await f.store.index.setPointer(pointer, manifest);
    await f.admin.rm('registry.test/lib/app:v1');
    assert.equal(f.store.index.pointer(pointer), undefined, 'no STALE answer for a removed tag');
    await f.close();
    f = await Fixture.open(dir);
    assert.equal(f.store.index.taggedManifest(`${repo}:v1`), undefined);
    assert.equal(f.store.index.pointer(pointer), undefined);
    assert.equal(f.store.index.taggedManifest(`${repo}:v2`)?.digest, manifest);
    await f.close();
  });

  it('names Docker Hub docker.io in ls and du, counting an entry once per registry', async () => {
    const f = await Fixture.open(await tmp.make('regcache-images-names'));
    const blob = await f.blob('b', 500, `${HUB}/library/alpine`);
    await f.store.index.reference('blob', blob, 'index.docker.io/library/alpine', null);
    await f.store.index.reference('blob', blob, 'quay.io/org/alpine', null);
    const usage = f.admin.du();
    assert.deepEqual(usage.registries, { 'docker.io': { bytes: 500, entries: 1 }, 'quay.io': { bytes: 500, entries: 1 } });
    assert.equal(usage.totalBytes, 500);
    assert.deepEqual(f.admin.ls('registry-1.docker.io')[0]?.repositories, ['docker.io/library/alpine', 'quay.io/org/alpine']);
    assert.equal(f.admin.ls('docker.io').length, 1);
    assert.equal(f.admin.ls('ghcr.io').length, 0);
    await f.close();
  });

  it('says which blobs a pull from a registry would get from the store (prefetch skips them)', async () => {
    const f = await Fixture.open(await tmp.make('regcache-images-present'));
    const hub = await f.blob('h', 10, `${HUB}/library/alpine`);
    const privateElsewhere = await f.blob('p', 10, 'ghcr.io/org/secret');
    const publicElsewhere = await f.blob('q', 10, 'quay.io/org/app');
    await f.store.index.setAccess('blob', publicElsewhere, 'public');
    assert.deepEqual(f.admin.present([hub, privateElsewhere, publicElsewhere, unstored('x')], 'docker.io'), [hub, publicElsewhere]);
    await f.close();
  });

  it('refuses a malformed digest and names what is not in the cache', async () => {
    const f = await Fixture.open(await tmp.make('regcache-images-bad'));
    await assert.rejects(f.admin.rm('sha256:deadbeef'), /malformed digest/);
    await assert.rejects(f.admin.rm('alpine@sha256:deadbeef'), /malformed digest/);
    await assert.rejects(f.admin.rm('alpine:3.20'), /is not in the cache \(as docker\.io\/library\/alpine:3\.20\)/);
    await assert.rejects(f.admin.rm(unstored('none')), /is not in the cache/);
    await f.close();
  });
});
