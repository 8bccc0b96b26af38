// tier: e2e
// The cache CLI and API of a running regcache, with Docker Hub played by a scripted registry that
// CONNECT_TO routes registry-1.docker.io to: docker.io is one name in `cache ls/du`, `ls --images` and
// /api/v1/cache; `cache rm` of one tag keeps what another image uses and --dry-run removes nothing; a
// malformed digest is a usage error; Docker Hub's ratelimit gauge appears only once Docker Hub reported it.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createTestCA } from './harness/pki.js';
import { run, waitFor } from './harness/proc.js';
import { startRegcache, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob, type FakeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const HUB = 'https://registry-1.docker.io';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const ACCEPT = { accept: `${OCI_INDEX}, ${OCI_MANIFEST}` };

function document(value: unknown, mediaType: string): FakeBlob {
  const data = Buffer.from(JSON.stringify(value));
  return { data, digest: 'sha256:' + crypto.createHash('sha256').update(data).digest('hex'), mediaType };
}

interface Row {
  image: string;
  digest: string;
  size: number;
  complete: boolean;
  platforms: { stored: string[]; listed: number } | null;
}
interface Removal {
  dryRun: boolean;
  removed: number;
  entries: { digest: string }[];
  untagged: string[];
  kept: { digest: string; usedBy: string[] }[];
}

describe('the cache CLI and API of a running server, with Docker Hub', () => {
  const tmp = new TmpDirs();
  const hub = new FakeRegistry();
  let proxy: Regcache;
  let client: ProxyClient;
  const cli = (...args: string[]) => run(process.execPath, [CLI, 'cache', ...args, '--cache-dir', proxy.cacheDir], { env: { PATH: process.env.PATH ?? '' } });
  const json = async <T>(...args: string[]): Promise<T> => {
    const r = await cli(...args, '--json');
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as T;
  };
  const metrics = async () => (await fetch(`${proxy.proxyUrl}/metrics`)).text();
  const api = async () =>
    (await (await fetch(`${proxy.proxyUrl}/api/v1/cache`)).json()) as {
      registries: Record<string, { url: string; repositories: { name: string; tags: string[] }[] }>;
    };

  // alpine:3.20 and alpine:latest: one index listing amd64 (pulled) and arm64 (not); other:1 is the amd64 manifest.
  const config = makeBlob(2_000, 'hub-config');
  const layer = makeBlob(300_000, 'hub-layer');
  const amd64 = document(
    { schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: config.digest, size: 2_000 }, layers: [{ digest: layer.digest, size: 300_000 }] },
    OCI_MANIFEST,
  );
  const arm64 = makeBlob(10, 'hub-arm64-never-pulled');
  const index = document(
    {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: amd64.digest, size: amd64.data.length, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: OCI_MANIFEST, digest: arm64.digest, size: 10, platform: { os: 'linux', architecture: 'arm64' } },
      ],
    },
    OCI_INDEX,
  );

  before(async () => {
    const dir = await tmp.make('regcache-cache-cli');
    const ca = await createTestCA(dir, 'hub CA');
    await hub.start(await ca.issue(['registry-1.docker.io'], dir, 'hub'));
    for (const b of [config, layer, amd64, index]) hub.add(b);
    hub.tags.set('library/alpine:3.20', index);
    hub.tags.set('library/alpine:latest', index);
    hub.tags.set('library/other:1', amd64);
    proxy = await startRegcache({ dir, env: { UPSTREAM_CA_FILE: ca.certFile, CONNECT_TO: `registry-1.docker.io:443:127.0.0.1:${hub.port}` } });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await hub.close();
    await tmp.cleanup();
  });

  it('has no Docker Hub ratelimit gauge until Docker Hub reports one, then its value', async () => {
    assert.doesNotMatch(await metrics(), /regcache_docker_hub_ratelimit_remaining/, 'absent, not 0, on a fresh start');
    for (const tag of ['3.20', 'latest']) assert.equal((await client.fetch(`${HUB}/v2/library/alpine/manifests/${tag}`, { headers: ACCEPT })).status, 200);
    assert.equal((await client.fetch(`${HUB}/v2/library/other/manifests/1`, { headers: ACCEPT })).status, 200);
    for (const d of [amd64.digest]) assert.equal((await client.fetch(`${HUB}/v2/library/alpine/manifests/${d}`, { headers: ACCEPT })).status, 200);
    for (const b of [config, layer]) assert.equal((await client.fetch(`${HUB}/v2/library/alpine/blobs/${b.digest}`)).status, 200);
    assert.match(await metrics(), /^regcache_docker_hub_ratelimit_remaining 99$/m);
  });

  it('names Docker Hub docker.io in ls, du, ls --images and /api/v1/cache, whichever of its names is asked for', async () => {
    await waitFor(async () => (await json<unknown[]>('ls')).length === 4, { timeoutMs: 10_000, what: 'the index, the manifest and two blobs stored' });
    for (const name of ['docker.io', 'registry-1.docker.io', 'index.docker.io']) {
      const rows = await json<{ repositories: string[]; tags: string[] }[]>('ls', '--registry', name);
      assert.equal(rows.length, 4, name);
      assert.ok(
        rows.every((r) => r.repositories.every((repo) => repo.startsWith('docker.io/'))),
        JSON.stringify(rows),
      );
    }
    const table = await cli('ls', '--registry', 'docker.io');
    assert.match(table.stdout, /docker\.io\/library\/alpine:3\.20 docker\.io\/library\/alpine:latest/);
    const none = await cli('ls', '--registry', 'quay.io');
    assert.match(none.stdout, /nothing stored from quay\.io/);

    const usage = await json<{ totalBytes: number; registries: Record<string, { bytes: number }> }>('du');
    assert.deepEqual(Object.keys(usage.registries), ['docker.io']);
    assert.equal(usage.registries['docker.io']?.bytes, usage.totalBytes);
    assert.match((await cli('du')).stdout, /counts once in each/);

    const images = new Map((await json<Row[]>('ls', '--images', '--registry', 'docker.io')).map((r) => [r.image, r]));
    assert.deepEqual([...images.keys()], ['docker.io/library/alpine:3.20', 'docker.io/library/alpine:latest', 'docker.io/library/other:1']);
    const alpine = images.get('docker.io/library/alpine:3.20')!;
    assert.equal(alpine.digest, index.digest);
    assert.equal(alpine.size, index.data.length + amd64.data.length + config.data.length + layer.data.length);
    assert.equal(alpine.complete, true);
    assert.deepEqual(alpine.platforms, { stored: ['linux/amd64'], listed: 2 });
    assert.equal(images.get('docker.io/library/other:1')?.size, amd64.data.length + config.data.length + layer.data.length);
    assert.match((await cli('ls', '--images')).stdout, /yes\s+sha256:\S+\s+1\/2\s+docker\.io\/library\/alpine:3\.20/);

    const listing = await api();
    assert.deepEqual(Object.keys(listing.registries), ['docker.io']);
    assert.equal(listing.registries['docker.io']?.url, 'https://registry-1.docker.io');
    assert.deepEqual(listing.registries['docker.io']?.repositories, [
      { name: 'library/alpine', tags: ['3.20', 'latest'] },
      { name: 'library/other', tags: ['1'] },
    ]);
  });

  it('removes one tag of a shared manifest without touching what other images use; --dry-run removes nothing', async () => {
    const dry = await cli('rm', '--dry-run', 'docker.io/library/alpine:3.20');
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /would untag docker\.io\/library\/alpine:3\.20\nwould remove 0 entries/);
    assert.match(dry.stdout, /nothing was removed \(--dry-run\)/);
    assert.equal((await json<unknown[]>('ls', '--images')).length, 3, 'the dry run changed nothing');

    const removed = await cli('rm', 'alpine:3.20');
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, /^untagged docker\.io\/library\/alpine:3\.20\nremoved 0 entries/);
    assert.match(removed.stdout, new RegExp(`${index.digest}.*used by docker\\.io/library/alpine:latest`));
    assert.deepEqual((await api()).registries['docker.io']?.repositories, [
      { name: 'library/alpine', tags: ['latest'] },
      { name: 'library/other', tags: ['1'] },
    ]);

    const plan = await json<Removal>('rm', '--dry-run', 'alpine:latest');
    assert.deepEqual(
      plan.entries.map((e) => e.digest),
      [index.digest],
    );
    assert.deepEqual(new Set(plan.kept.map((k) => k.digest)), new Set([amd64.digest, config.digest, layer.digest]));
    const done = await json<Removal>('rm', 'alpine:latest');
    assert.deepEqual({ ...done, dryRun: true }, plan, 'the removal did what the dry run said');
    const left = await json<Row[]>('ls', '--images');
    assert.ok(
      left.some((r) => r.image === 'docker.io/library/other:1' && r.complete),
      JSON.stringify(left),
    );
    assert.equal((await client.fetch(`${HUB}/v2/library/other/blobs/${layer.digest}`)).status, 200);
    assert.equal((await proxy.requests()).filter((l) => l.digest === layer.digest).at(-1)?.cache, 'HIT', 'the shared layer is still served from the cache');
  });

  it('prune --dry-run lists what it would remove and removes nothing', async () => {
    const before = await json<{ totalBytes: number; entries: number }>('du');
    const dry = await json<Removal>('prune', '--dry-run', '--to-size', '1');
    assert.equal(dry.removed, before.entries);
    assert.equal(dry.entries.length, before.entries);
    assert.deepEqual(await json('du'), before);
    const text = await cli('prune', '--dry-run', '--older-than', '1s');
    assert.match(text.stdout, /would remove \d+ entries/);
  });

  it('calls a malformed digest or reference a usage error (exit 2)', async () => {
    for (const [target, message] of [
      ['sha256:deadbeef', /"sha256:deadbeef" is a malformed digest/],
      ['alpine@sha256:dead', /"sha256:dead" is a malformed digest/],
      ['Not A Ref', /is not an image reference/],
    ] as const) {
      const r = await cli('rm', target);
      assert.equal(r.code, 2, `${target}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });
});
