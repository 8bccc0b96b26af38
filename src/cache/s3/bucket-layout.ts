// Where the S3 store keeps what in its bucket, under CACHE_STORE's prefix; the one place that writes and
// parses these keys. Every fact is an object of its own, written by one replica and never edited in place
// by another, so replicas that write at once never lose each other's facts (S3 has no atomic
// read-modify-write): provenance and public/private facts are empty marker objects named by what they
// say, and a LIST of a prefix reads them all.
//
//   content/sha256/<hex>                                the bytes, one object per digest (blob and manifest share it)
//   entries/<kind>/sha256/<hex>                         JSON: size, media type, created; its presence makes the content visible
//   refs/<kind>/sha256/<hex>/<b64url repository>        empty: requested under "registry/repository"
//   sources/<kind>/sha256/<hex>/<b64url repository>     empty: that origin delivered bytes that hashed to the digest
//   access/<kind>/sha256/<hex>/<public|private>         empty: what upstream said (public wins over private)
//   tags/<b64url "registry/repository:tag">             the manifest digest the tag names (last writer wins)
//   pointers/<b64url "registry/repository:tag|accept">  JSON: digest, checkedAt (last writer wins)
//   fills/<kind>/sha256/<hex>/<b64url origin>/<gen>     JSON: the fill lock (fill-lock.ts), one object per generation
//   sweep/lease/<gen>                                   JSON: the eviction lease (fill-lock.ts' scheme; bucket-eviction.ts)
//   sweep/usage.json                                    JSON: access times folded from the batches (the sweeper writes it)
//   usage/<b64url replica>/<time>-<seq>                 JSON: one replica's access batch (written once, deleted once folded)
//   trash/<kind>/sha256/<hex>                           JSON: evicted at; the content is deleted after the grace period
import type { Access, EntryKind } from '../entry-index.js';

const GENERATION_DIGITS = 8; // zero-padded: LIST returns generations in numeric order

export class BucketLayout {
  /** `prefix`: '' or a path ending in '/'. */
  constructor(readonly prefix: string) {}

  get contents(): string {
    return `${this.prefix}content/`;
  }

  content(digest: string): string {
    return this.contents + digestPath(digest);
  }

  /** The digest of a content/ key; null for a key that is not one. */
  parseContent(key: string): string | null {
    const m = /^sha256\/([0-9a-f]{64})$/.exec(key.slice(this.contents.length));
    return m ? `sha256:${m[1]}` : null;
  }

  get entries(): string {
    return `${this.prefix}entries/`;
  }

  entry(kind: EntryKind, digest: string): string {
    return `${this.entries}${kind}/${digestPath(digest)}`;
  }

  /** kind and digest of an entries/ key; null for a key that is not one. */
  parseEntry(key: string): { kind: EntryKind; digest: string } | null {
    return parseContentKey(key.slice(this.entries.length));
  }

  get refs(): string {
    return `${this.prefix}refs/`;
  }

  refsOf(kind: EntryKind, digest: string): string {
    return `${this.refs}${kind}/${digestPath(digest)}/`;
  }

  ref(kind: EntryKind, digest: string, ref: string): string {
    return this.refsOf(kind, digest) + encode(ref);
  }

  parseRef(key: string): { kind: EntryKind; digest: string; ref: string } | null {
    return parseMarker(key.slice(this.refs.length), (last) => ({ ref: decode(last) }));
  }

  get sources(): string {
    return `${this.prefix}sources/`;
  }

  sourcesOf(kind: EntryKind, digest: string): string {
    return `${this.sources}${kind}/${digestPath(digest)}/`;
  }

  source(kind: EntryKind, digest: string, ref: string): string {
    return this.sourcesOf(kind, digest) + encode(ref);
  }

  parseSource(key: string): { kind: EntryKind; digest: string; ref: string } | null {
    return parseMarker(key.slice(this.sources.length), (last) => ({ ref: decode(last) }));
  }

  get access(): string {
    return `${this.prefix}access/`;
  }

  accessOf(kind: EntryKind, digest: string): string {
    return `${this.access}${kind}/${digestPath(digest)}/`;
  }

  accessMarker(kind: EntryKind, digest: string, access: Access): string {
    return this.accessOf(kind, digest) + access;
  }

  parseAccess(key: string): { kind: EntryKind; digest: string; access: Access } | null {
    return parseMarker(key.slice(this.access.length), (last) => (last === 'public' || last === 'private' ? { access: last } : null));
  }

  get tags(): string {
    return `${this.prefix}tags/`;
  }

  tag(tag: string): string {
    return this.tags + encode(tag);
  }

  parseTag(key: string): string {
    return decode(key.slice(this.tags.length));
  }

  get pointers(): string {
    return `${this.prefix}pointers/`;
  }

  pointer(pointerKey: string): string {
    return this.pointers + encode(pointerKey);
  }

  parsePointer(key: string): string {
    return decode(key.slice(this.pointers.length));
  }

  /** Every fill lock of a content, whatever the origin. */
  fillsOf(kind: EntryKind, digest: string): string {
    return `${this.prefix}fills/${kind}/${digestPath(digest)}/`;
  }

  /** The generations of one fill lock: per origin and content (fills are per origin: fill-table.ts). */
  fillLocks(origin: string, kind: EntryKind, digest: string): string {
    return `${this.fillsOf(kind, digest)}${encode(origin)}/`;
  }

  fillLock(origin: string, kind: EntryKind, digest: string, generation: number): string {
    return this.generation(this.fillLocks(origin, kind, digest), generation);
  }

  /** One generation of a lock whose generations live under `locks` (a fill's, or the eviction lease). */
  generation(locks: string, generation: number): string {
    return locks + String(generation).padStart(GENERATION_DIGITS, '0');
  }

  /** The eviction lease's generations (fill-lock.ts' scheme): the replica holding the live one sweeps. */
  get sweepLease(): string {
    return `${this.prefix}sweep/lease/`;
  }

  /** The access times every batch folded so far, written by the sweeping replica only. */
  get usageMerged(): string {
    return `${this.prefix}sweep/usage.json`;
  }

  /** Every replica's access batches, each written once by its replica and deleted once folded. */
  get usage(): string {
    return `${this.prefix}usage/`;
  }

  usageBatch(replica: string, name: string): string {
    return `${this.usage}${encode(replica)}/${name}`;
  }

  get trash(): string {
    return `${this.prefix}trash/`;
  }

  /** An evicted entry whose content waits out the grace period (JSON: when it was evicted). */
  trashMarker(kind: EntryKind, digest: string): string {
    return `${this.trash}${kind}/${digestPath(digest)}`;
  }

  parseTrash(key: string): { kind: EntryKind; digest: string } | null {
    return parseContentKey(key.slice(this.trash.length));
  }

  parseGeneration(key: string): number | null {
    const last = key.slice(key.lastIndexOf('/') + 1);
    return /^\d+$/.test(last) ? Number(last) : null;
  }
}

/** "sha256:<hex>" -> "sha256/<hex>": a key segment per algorithm, no ':' in keys. */
function digestPath(digest: string): string {
  return digest.replace(':', '/');
}

function parseContentKey(rest: string): { kind: EntryKind; digest: string } | null {
  const m = /^(blob|manifest)\/sha256\/([0-9a-f]{64})$/.exec(rest);
  return m ? { kind: m[1] as EntryKind, digest: `sha256:${m[2]}` } : null;
}

function parseMarker<T>(rest: string, last: (segment: string) => T | null): ({ kind: EntryKind; digest: string } & T) | null {
  const cut = rest.lastIndexOf('/');
  const content = parseContentKey(rest.slice(0, cut));
  const fact = cut < 0 ? null : last(rest.slice(cut + 1));
  return content && fact ? { ...content, ...fact } : null;
}

// Repository names, tags and origins become one key segment: base64url has no '/', and any byte a tag or
// an Accept list may hold survives.
function encode(text: string): string {
  return Buffer.from(text, 'utf8').toString('base64url');
}

function decode(segment: string): string {
  return Buffer.from(segment, 'base64url').toString('utf8');
}
