// The images the store holds, and what each of them uses: read from the stored manifests, so that
// `regcache cache ls --images`, `cache rm <image>` and its --dry-run agree on what belongs to an image
// and on what another image still needs.
//
// An image is a stored manifest under a name a client can pull it by:
// - every tag the index knows ("registry/repository:tag");
// - "registry/repository@digest" for a manifest requested under that repository that has no tag there
//   and that no stored index (manifest list) requested there lists (pulled by digest, or a tag since
//   moved on).
// From an image's manifest, an index reaches the child manifests it lists that are stored, and an image
// manifest its config and layers (and an artifact's blobs). Content-addressed files never change, so
// each manifest is read once per graph.
import { isSha256Digest } from '../reference/digest.js';
import { displayReference } from '../reference/registry-name.js';
import { formatRepository, parseTag } from '../reference/repository-reference.js';
import type { ContentIndex, ContentStore } from './content-store.js';
import { entryKey, type Entry } from './entry-index.js';

export interface StoredImage {
  reference: string; // as shown: "docker.io/library/alpine:3.20" or ".../alpine@sha256:..."
  repository: string; // as shown: "docker.io/library/alpine"
  tag: string | null;
  storedTag: string | null; // the tag as the index holds it ("registry-1.docker.io/library/alpine:3.20")
  manifest: Entry;
}

export interface Reach {
  entries: Map<string, Entry>; // by entryKey: manifests, configs and layers present
  missing: string[]; // configs and layers a stored manifest names that are not stored
  unreadable: string[]; // stored manifests whose content could not be read as a manifest
  imageManifests: number; // stored image (not index) manifests reached
}

/** An index's platforms (attestations aside): those stored, of how many it lists. */
export interface Platforms {
  stored: string[];
  listed: number;
}

interface Child {
  digest: string;
  platform: string | null; // "linux/arm64/v8"; null for attestations and unnamed ones
}

interface ManifestLinks {
  children: Child[]; // an index's manifests
  blobs: string[]; // an image manifest's config and layers
}

export class ImageGraph {
  private constructor(
    private readonly index: ContentIndex,
    private readonly links: Map<string, ManifestLinks | null>, // manifest digest -> links (null: unreadable)
  ) {}

  /** Reads every stored manifest once. */
  static async load(store: ContentStore): Promise<ImageGraph> {
    const links = new Map<string, ManifestLinks | null>();
    for (const e of [...store.index.oldestFirst()]) {
      if (e.kind !== 'manifest') continue;
      const body = await store.readAll(e);
      links.set(e.digest, body === null ? null : parseLinks(body.toString('utf8')));
    }
    return new ImageGraph(store.index, links);
  }

  /** Every stored image, sorted by reference. */
  images(): StoredImage[] {
    const listedIn = new Map<string, Set<string>>(); // manifest digest -> repositories of indexes listing it
    for (const e of this.manifests()) {
      for (const child of this.links.get(e.digest)?.children ?? []) {
        const repos = listedIn.get(child.digest) ?? new Set<string>();
        listedIn.set(child.digest, repos);
        for (const ref of e.refs) repos.add(displayReference(ref));
      }
    }
    const images: StoredImage[] = [];
    for (const e of this.manifests()) {
      const taggedIn = new Set<string>();
      for (const storedTag of e.tags) {
        const reference = displayReference(storedTag);
        const tagged = parseTag(reference);
        const repository = formatRepository(tagged);
        taggedIn.add(repository);
        images.push({ reference, repository, tag: tagged.tag, storedTag, manifest: e });
      }
      for (const repository of new Set(e.refs.map(displayReference))) {
        if (taggedIn.has(repository) || listedIn.get(e.digest)?.has(repository)) continue;
        images.push({ reference: `${repository}@${e.digest}`, repository, tag: null, storedTag: null, manifest: e });
      }
    }
    return images.sort((a, b) => a.reference.localeCompare(b.reference));
  }

  /** What the given manifests use, themselves included: the one definition of "belongs to an image". */
  reach(manifests: Entry[]): Reach {
    const reach: Reach = { entries: new Map(), missing: [], unreadable: [], imageManifests: 0 };
    const missing = new Set<string>();
    const visit = (e: Entry) => {
      const key = entryKey(e.kind, e.digest);
      if (reach.entries.has(key)) return;
      reach.entries.set(key, e);
      if (e.kind !== 'manifest') return;
      const links = this.links.get(e.digest);
      if (!links) {
        reach.unreadable.push(e.digest);
        return;
      }
      if (links.children.length === 0) reach.imageManifests++;
      for (const child of links.children) {
        const stored = this.index.get('manifest', child.digest);
        if (stored) visit(stored); // a platform not pulled is absent, not missing
      }
      for (const digest of links.blobs) {
        const blob = this.index.get('blob', digest);
        if (blob) visit(blob);
        else missing.add(digest);
      }
    };
    for (const m of manifests) visit(m);
    reach.missing = [...missing];
    return reach;
  }

  /** For an index: which of its platforms are stored; null for an image manifest (or an unreadable one). */
  platforms(manifest: Entry): Platforms | null {
    const children = this.links.get(manifest.digest)?.children ?? [];
    if (children.length === 0) return null;
    const named = children.filter((c) => c.platform !== null);
    return { stored: named.filter((c) => this.index.get('manifest', c.digest)).map((c) => c.platform!), listed: named.length };
  }

  private *manifests(): Iterable<Entry> {
    for (const digest of this.links.keys()) {
      const e = this.index.get('manifest', digest);
      if (e) yield e;
    }
  }
}

/** An index's child manifests, or an image manifest's config and layers; null when it is not a manifest. */
function parseLinks(text: string): ManifestLinks | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    // not JSON: not a manifest this listing can read (the image is listed without its links).
    return null;
  }
  if (typeof doc !== 'object' || doc === null) return null;
  const d = doc as { manifests?: unknown; config?: unknown; layers?: unknown; blobs?: unknown };
  const descriptors = (value: unknown): Record<string, unknown>[] =>
    (Array.isArray(value) ? value : [value]).filter(
      (x): x is Record<string, unknown> => typeof x === 'object' && x !== null && typeof x.digest === 'string' && isSha256Digest(x.digest),
    );
  const children = descriptors(d.manifests).map((c) => ({ digest: c.digest as string, platform: platformOf(c.platform) }));
  const blobs = [...descriptors(d.config), ...descriptors(d.layers), ...descriptors(d.blobs)].map((b) => b.digest as string);
  return { children, blobs };
}

function platformOf(value: unknown): string | null {
  if (typeof value !== 'object' || value === null) return null;
  const p = value as { os?: unknown; architecture?: unknown; variant?: unknown };
  if (typeof p.os !== 'string' || typeof p.architecture !== 'string' || p.os === 'unknown') return null; // buildkit's attestations: unknown/unknown
  return [p.os, p.architecture, typeof p.variant === 'string' ? p.variant : ''].filter(Boolean).join('/');
}
