// The `regcache cache` operations (ls, du, rm, prune, verify) on an open store, and what prefetch asks
// (which blobs are present). The same code runs in the server (asked over the control socket) and in
// the CLI (when no server holds the cache directory).
import crypto from 'node:crypto';
import { isDigestArgument, parseImageReference } from '../reference/image-reference.js';
import { displayReference, registryDisplayName } from '../reference/registry-name.js';
import { formatRepository, parseRepository } from '../reference/repository-reference.js';
import type { ContentFile, ContentStore } from './content-store.js';
import type { Entry, EntryKind } from './entry-index.js';
import { ImageGraph, type Platforms } from './image-graph.js';
import { eachAtOnce } from './each-at-once.js';

export interface ListedEntry {
  kind: EntryKind;
  digest: string;
  size: number;
  mediaType: string;
  lastAccess: string;
  created: string;
  repositories: string[]; // as shown: Docker Hub as docker.io
  tags: string[];
}

/** One stored image (`cache ls --images`). */
export interface ListedImage {
  image: string; // "docker.io/library/alpine:3.20", or "registry/repository@sha256:..." without a tag
  digest: string; // its manifest (an index, for a multi-platform image)
  size: number; // its manifests, configs and layers that are stored, each once
  complete: boolean; // every config and layer of every stored platform is stored
  missing: string[]; // configs and layers named by a stored manifest but not stored
  platforms: Platforms | null; // for an index: the platforms stored, of how many
  lastAccess: string; // the most recent use of any of its entries
}

export interface Usage {
  totalBytes: number;
  entries: number;
  maxBytes: number;
  registries: Record<string, { bytes: number; entries: number }>; // an entry counts once in each registry that requested it
}

export interface RemovedEntry {
  kind: EntryKind;
  digest: string;
  size: number;
}

export interface RemovalReport {
  dryRun: boolean; // nothing was removed: this is what would have been
  removed: number;
  bytes: number;
  entries: RemovedEntry[];
  untagged: string[]; // image references no longer listed (rm of an image)
  kept: (RemovedEntry & { usedBy: string[] })[]; // entries of the image that other images or repositories use
}

export interface VerifyReport {
  checked: number;
  corrupt: string[];
  missing: string[];
  orphans: number;
  bytesFreed: number;
}

export class CacheAdminError extends Error {
  override name = 'CacheAdminError';
}

export class CacheAdmin {
  constructor(
    private readonly store: ContentStore,
    private readonly maxBytes: number,
    // entries dropped when the store was opened because their file was gone: the first verify reports them
    private missingAtOpen: readonly string[] = [],
  ) {}

  /** One command as the CLI or the control socket names it. */
  run(cmd: string, args: Record<string, unknown>): Promise<unknown> {
    const text = (name: string): string | undefined => (typeof args[name] === 'string' ? (args[name] as string) : undefined);
    const num = (name: string): number | null => (typeof args[name] === 'number' ? (args[name] as number) : null);
    const dryRun = args.dryRun === true;
    switch (cmd) {
      case 'ls':
        return args.images === true ? this.images(text('registry')) : Promise.resolve(this.ls(text('registry')));
      case 'du':
        return Promise.resolve(this.du());
      case 'rm':
        return this.rm(text('target') ?? '', dryRun);
      case 'prune':
        return this.prune(num('olderThanMs'), num('toBytes'), dryRun);
      case 'verify':
        return this.verify();
      case 'present': {
        const digests = Array.isArray(args.digests) ? args.digests.filter((d): d is string => typeof d === 'string') : [];
        return Promise.resolve(this.present(digests, text('registry') ?? ''));
      }
      default:
        return Promise.reject(new CacheAdminError(`unknown cache command ${JSON.stringify(cmd)}`));
    }
  }

  ls(registry?: string): ListedEntry[] {
    const wanted = registry === undefined ? undefined : registryDisplayName(registry);
    const rows: ListedEntry[] = [];
    for (const e of this.store.index.oldestFirst()) {
      if (wanted && !e.refs.some((r) => registryDisplayName(registryOf(r)) === wanted)) continue;
      rows.push({
        kind: e.kind,
        digest: e.digest,
        size: e.size,
        mediaType: e.mediaType,
        lastAccess: new Date(e.lastAccess).toISOString(),
        created: new Date(e.created).toISOString(),
        repositories: [...new Set(e.refs.map(displayReference))].sort(),
        tags: e.tags.map(displayReference).sort(),
      });
    }
    return rows.reverse(); // most recently used first
  }

  /** One row per stored image (see image-graph.ts), sorted by reference. */
  async images(registry?: string): Promise<ListedImage[]> {
    const wanted = registry === undefined ? undefined : registryDisplayName(registry);
    const graph = await ImageGraph.load(this.store);
    const rows: ListedImage[] = [];
    for (const image of graph.images()) {
      if (wanted && !image.repository.startsWith(`${wanted}/`)) continue;
      const reach = graph.reach([image.manifest]);
      const entries = [...reach.entries.values()];
      rows.push({
        image: image.reference,
        digest: image.manifest.digest,
        size: entries.reduce((n, e) => n + e.size, 0),
        complete: reach.missing.length === 0 && reach.unreadable.length === 0 && reach.imageManifests > 0,
        missing: reach.missing,
        platforms: graph.platforms(image.manifest),
        lastAccess: new Date(Math.max(...entries.map((e) => e.lastAccess))).toISOString(),
      });
    }
    return rows;
  }

  du(): Usage {
    const registries: Usage['registries'] = {};
    for (const e of this.store.index.oldestFirst()) {
      for (const reg of new Set(e.refs.map((r) => registryDisplayName(registryOf(r))))) {
        const r = (registries[reg] ??= { bytes: 0, entries: 0 });
        r.bytes += e.size;
        r.entries++;
      }
    }
    return { totalBytes: this.store.index.totalBytes, entries: this.store.index.size, maxBytes: this.maxBytes, registries };
  }

  /**
   * `sha256:...`: that content, whatever refers to it. An image reference: the image's tag (or, by
   * digest, its names in that repository) is forgotten, and of the entries it reaches (image-graph.ts)
   * those are removed that no other stored image reaches and that no other repository requested.
   */
  async rm(target: string, dryRun = false): Promise<RemovalReport> {
    const index = this.store.index;
    if (isDigestArgument(target)) {
      const entries = [index.get('blob', target), index.get('manifest', target)].filter((e): e is Entry => e !== undefined);
      if (entries.length === 0) throw new CacheAdminError(`${target} is not in the cache`);
      return this.removeAll(entries, dryRun);
    }
    const ref = parseImageReference(target);
    const repository = displayReference(formatRepository(ref));
    const graph = await ImageGraph.load(this.store);
    const images = graph.images();
    const named = images.filter((i) => i.repository === repository && (ref.digest ? i.manifest.digest === ref.digest : i.tag === ref.tag));
    const roots = named.map((i) => i.manifest);
    // By digest, a manifest of the repository that an index lists is no image of its own, but it is named.
    const listed = ref.digest ? index.get('manifest', ref.digest) : undefined;
    if (roots.length === 0 && listed?.refs.some((r) => displayReference(r) === repository)) roots.push(listed);
    if (roots.length === 0) throw new CacheAdminError(`${target} is not in the cache (as ${repository}${ref.digest ? '@' + ref.digest : ':' + ref.tag})`);

    const candidates = graph.reach(roots).entries;
    const usedBy = new Map<string, Set<string>>();
    const use = (key: string, by: string) => (usedBy.get(key) ?? usedBy.set(key, new Set()).get(key)!).add(by);
    for (const other of images) {
      if (named.includes(other)) continue;
      for (const key of graph.reach([other.manifest]).entries.keys()) if (candidates.has(key)) use(key, other.reference);
    }
    // Requested under another repository: an image there may need it even if its manifest is not stored
    // (named only when no stored image of that repository already is).
    for (const [key, e] of candidates) {
      for (const other of new Set(e.refs.map(displayReference))) {
        const imageThere = [...(usedBy.get(key) ?? [])].some((u) => u.startsWith(`${other}:`) || u.startsWith(`${other}@`));
        if (other !== repository && !imageThere) use(key, other);
      }
    }

    const doomed = [...candidates].filter(([key]) => !usedBy.has(key)).map(([, e]) => e);
    const kept = [...candidates].filter(([key]) => usedBy.has(key)).map(([key, e]) => ({ ...describe(e), usedBy: [...usedBy.get(key)!].sort() }));
    const untagged = named.filter((i) => i.tag !== null);
    if (!dryRun) for (const i of untagged) await index.untag(i.storedTag!);
    const report = await this.removeAll(doomed, dryRun);
    return { ...report, untagged: untagged.map((i) => i.reference), kept };
  }

  /** Entries unused for olderThanMs, then least recently used ones until the total is at most toBytes. */
  async prune(olderThanMs: number | null, toBytes: number | null, dryRun = false): Promise<RemovalReport> {
    const index = this.store.index;
    const cutoff = olderThanMs === null ? null : Date.now() - olderThanMs;
    const doomed: Entry[] = [];
    let total = index.totalBytes;
    for (const e of index.oldestFirst()) {
      const old = cutoff !== null && e.lastAccess < cutoff;
      const over = toBytes !== null && total > toBytes;
      if (!old && !over) break; // oldest first: nothing newer qualifies either
      doomed.push(e);
      total -= e.size;
    }
    return this.removeAll(doomed, dryRun);
  }

  /**
   * Which of these blobs a pull from `registry` would get from the store: stored, and either public or
   * delivered by that registry before (private content is served only at the origins it came from).
   */
  present(digests: string[], registry: string): string[] {
    const wanted = registryDisplayName(registry);
    return digests.filter((d) => {
      const e = this.store.index.get('blob', d);
      return e !== undefined && (e.access === 'public' || e.sources.some((r) => registryDisplayName(registryOf(r)) === wanted));
    });
  }

  /** Re-hashes every content file; removes corrupt or missing entries and files no entry refers to. */
  async verify(): Promise<VerifyReport> {
    const report: VerifyReport = { checked: 0, corrupt: [], missing: [...this.missingAtOpen], orphans: 0, bytesFreed: 0 };
    this.missingAtOpen = [];
    // A fleet replica's index may not hold yet what another replica stored a moment ago: every entry the
    // store holds is checked, not only those this replica has heard of (the soak saw one left for a second pass).
    await this.store.syncIndex();
    // A few entries at once: on a bucket each costs round trips (a HEAD, a GET) that one at a time turned
    // a verify of a hundred small entries into five seconds of waiting.
    await eachAtOnce([...this.store.index.oldestFirst()], VERIFY_CONCURRENCY, async (e) => {
      report.checked++;
      const file = await this.store.open(e);
      if (!file) {
        if (this.store.index.get(e.kind, e.digest) !== e) return; // removed meanwhile (evicted, rm): not missing
        report.missing.push(e.digest);
        await this.store.index.delete(e.kind, e.digest);
        return;
      }
      const actual = await sha256Of(file);
      if (actual !== e.digest) {
        report.corrupt.push(e.digest);
        report.bytesFreed += e.size;
        await this.store.remove(e.kind, e.digest);
      }
    });
    const unreferenced = await this.store.removeUnreferenced();
    report.orphans = unreferenced.files;
    report.bytesFreed += unreferenced.bytes;
    return report;
  }

  private async removeAll(entries: Entry[], dryRun: boolean): Promise<RemovalReport> {
    const report: RemovalReport = { dryRun, removed: 0, bytes: 0, entries: [], untagged: [], kept: [] };
    for (const e of entries) {
      if (!dryRun && !(await this.store.remove(e.kind, e.digest))) continue; // gone meanwhile
      report.removed++;
      report.bytes += e.size;
      report.entries.push(describe(e));
    }
    return report;
  }
}

function describe(e: Entry): RemovedEntry {
  return { kind: e.kind, digest: e.digest, size: e.size };
}

function registryOf(ref: string): string {
  return parseRepository(ref).registry;
}

const HASH_CHUNK = 1024 * 1024;
const VERIFY_CONCURRENCY = 8;

/** Hashes the whole content, however long the file really is, and closes it. */
async function sha256Of(file: ContentFile): Promise<string> {
  const hash = crypto.createHash('sha256');
  const buffer = Buffer.allocUnsafe(HASH_CHUNK);
  try {
    for (let position = 0; ;) {
      const n = await file.read(buffer, HASH_CHUNK, position);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
      position += n;
    }
  } finally {
    await file.close();
  }
  return 'sha256:' + hash.digest('hex');
}
