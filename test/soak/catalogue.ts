// What the soak's upstream holds: images of mixed sizes, public and private, made from the run's seed
// (same seed, same digests) and pushed into the token-auth docker-registry. Private images have layers of
// their own (no digest is shared with public content), so any private byte a client without access gets is
// a leak, whatever repository it named.
import { open } from 'node:fs/promises';
import path from 'node:path';
import { makeImage, pushImage, type Image } from '../harness/images.js';
import type { TokenAuthUpstream } from '../support/upstream-fixture.js';
import { eachAtOnce } from '../../src/cache/each-at-once.js';
import { Rng } from './rng.js';

export interface Item {
  repo: string;
  tag: string;
  private: boolean;
  image: Image;
  /** Config and layers. */
  blobs: string[];
}

export interface Blob {
  digest: string;
  size: number;
  private: boolean;
  file: string | null; // on disk (layers, configs)
  bytes: Buffer | null; // in memory (manifests: small)
}

export interface Catalogue {
  items: Item[];
  /** Every digest a client may ask for: blobs and manifests. */
  blobs: Map<string, Blob>;
  bytes: number;
  /** The bytes [start, end] of a digest, for checking a Range answer. */
  slice(digest: string, start: number, end: number): Promise<Buffer>;
}

const KIB = 1024;
const MIB = 1024 * KIB;

/** A layer size: mostly small, some a few MB, a few past one 8 MiB multipart part. */
function layerSize(rng: Rng): number {
  const kind = rng.weighted({ small: 72, medium: 25, large: 3 });
  if (kind === 'small') return rng.between(2 * KIB, 160 * KIB);
  if (kind === 'medium') return rng.between(300 * KIB, 2 * MIB);
  return rng.between(9 * MIB, 12 * MIB);
}

/** Images pushed at once: the push is the soak's set-up's longest step, wall time the whole suite waits for. */
const PUSHING = 4;

export async function buildCatalogue(hub: TokenAuthUpstream, dir: string, seed: number, counts: { public: number; private: number }): Promise<Catalogue> {
  const rng = new Rng(seed, 'catalogue');
  const total = counts.public + counts.private;
  // Every draw first, in order (same seed, same catalogue), then the images made and pushed PUSHING at once.
  // A few base layers that public images share (the same digest under several repositories).
  const bases = Array.from({ length: 4 }, (_, i) => ({ size: layerSize(rng), seed: `soak-${seed}-base-${i}` }));
  const plans = Array.from({ length: total }, (_, i) => {
    const isPrivate = i >= counts.public;
    const repo = isPrivate ? `team/private-${i}` : `library/app-${i}`;
    const own = Array.from({ length: rng.between(1, 3) }, (_, j) => ({ size: layerSize(rng), seed: `soak-${seed}-${i}-${j}` }));
    const layers = !isPrivate && rng.chance(0.5) ? [rng.pick(bases), ...own] : own;
    return { i, isPrivate, repo, layers };
  });
  const items: Item[] = new Array<Item>(total);
  await eachAtOnce(plans, PUSHING, async (plan) => {
    const image = await makeImage(path.join(dir, `image-${plan.i}`), { layers: plan.layers, gzipLevel: 0 });
    await pushImage(hub.upstream.registry.url, plan.repo, 'v1', image, { caFile: hub.upstream.ca.certFile, token: hub.seedToken(plan.repo) });
    items[plan.i] = { repo: plan.repo, tag: 'v1', private: plan.isPrivate, image, blobs: [image.config.digest, ...image.layers.map((l) => l.digest)] };
  });
  const blobs = new Map<string, Blob>();
  for (const { image, private: isPrivate } of items) {
    for (const b of [image.config, ...image.layers]) blobs.set(b.digest, { digest: b.digest, size: b.size, private: isPrivate, file: b.file, bytes: null });
    blobs.set(image.manifestDigest, { digest: image.manifestDigest, size: image.manifest.length, private: isPrivate, file: null, bytes: image.manifest });
  }
  const slice = async (digest: string, start: number, end: number): Promise<Buffer> => {
    const blob = blobs.get(digest)!;
    if (blob.bytes) return blob.bytes.subarray(start, end + 1);
    const handle = await open(blob.file!, 'r');
    try {
      const out = Buffer.alloc(end - start + 1);
      await handle.read(out, 0, out.length, start);
      return out;
    } finally {
      await handle.close();
    }
  };
  return { items, blobs, bytes: [...blobs.values()].reduce((s, b) => s + b.size, 0), slice };
}
