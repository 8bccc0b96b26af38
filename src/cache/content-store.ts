// What regcache needs of a place that keeps content, and nothing more: the fill coordinator and the cache
// commands use only this. Each store brings one in its backend (backend.ts): a directory in cacache's
// layout described by an EntryIndex journal (local/), a worker's view of its primary's directory
// (workers/), a bucket shared by a fleet (s3/), with no change to registry/. Content is addressed by kind
// and sha256 digest, written once through a spool (readable while it fills, committed when its digest is
// verified), and read by position.
import type { EventEmitter } from 'node:events';
import type { Entry, EntryIndex, EntryKind, TagPointer } from './entry-index.js';

export type ContentKind = EntryKind;

/** Where a request for the content came from: kept in the index for `regcache cache ls/rm`. */
export interface Provenance {
  ref: string | null; // "registry/repository" (reference/repository-reference.ts)
  tag: string | null; // "registry/repository:tag"
}

/** Content the store holds, as its index describes it. */
export interface StoredContent {
  kind: ContentKind;
  digest: string;
  size: number;
  mediaType: string;
}

/**
 * A stored file as the filesystem describes it. Anything that writes, truncates, touches (utimes), chmods
 * or links the file moves its ctime, which no caller can set back (only the clock can).
 */
export interface FileIdentity {
  key: string; // device, inode, size, mtime and ctime (ns)
  changedMs: number; // ctime
  contentKey: string; // device, inode, size and mtime (ns): what an unlink leaves as it was
  linked: boolean; // the file still has a name (a link count above 0)
}

/** Stored content opened for reading. */
export interface ContentFile {
  /** The size found when it was opened (the caller compares it with the index's). */
  readonly size: number;
  /**
   * What the file was when opened; absent where there is no such thing (a bucket's object). VERIFY_ON_READ
   * =once trusts a file it verified only while this stays the same (trusted-files.ts).
   */
  readonly identity?: FileIdentity;
  /** The identity now (an fstat of the open file). */
  restat?(): Promise<FileIdentity>;
  /** Reads up to `length` bytes at `position` into the start of `buffer`; 0 at the end. */
  read(buffer: Buffer, length: number, position: number): Promise<number>;
  close(): Promise<void>;
}

/** Content being written by a fill: readable while it grows, committed or discarded at the end. */
export interface Spool {
  /** How another process working on the same store finds it (to follow the fill while it grows). */
  readonly name: string;
  /** Writes the chunks at `position`; resolves to the bytes written (maybe fewer: write the rest). */
  write(chunks: Buffer[], position: number): Promise<number>;
  read(buffer: Buffer, length: number, position: number): Promise<number>;
  /** Makes what was written durable (before the commit: the index must never name lost bytes). */
  sync(): Promise<void>;
  /** Releases the spool once nobody reads it (after commit or discard). */
  close(): Promise<void>;
}

/** What a spool is begun for: the content a fill writes (its size is known only at the end). */
export type SpooledContent = Pick<StoredContent, 'kind' | 'digest'>;

/**
 * The place that holds the content cannot be reached, or refuses (a bucket that is down, gone, or denies
 * regcache's credentials): requests that need it are answered 503 rather than served or stored half-way.
 */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError';
}

/** Free space where content goes, and how much of it the store keeps for its index and the OS. */
export interface DiskSpace {
  free: number;
  reserve: number;
}

/**
 * The index a store keeps (entries, tags, tag pointers, whether content is public), as everything
 * outside cache/ reads and writes it.
 */
export type ContentIndex = Pick<
  EntryIndex,
  'size' | 'totalBytes' | 'get' | 'oldestFirst' | 'taggedManifest' | 'untag' | 'setAccess' | 'pointer' | 'pointersOf' | 'setPointer' | 'delete'
>;

/** What a 'committed' event carries: the entry, and the origin ("registry/repository") that delivered it. */
export interface Committed {
  entry: Entry;
  ref: string | null;
}

/**
 * Content already stored arrived again, from `from` (a second fill of the same bytes, from another origin):
 * the entry keeps what it knows (its origins, tags and whether it is public) and `learn`s the origin as a
 * source (it delivered the bytes) and a repository; a
 * new origin is then announced as a commit is ('committed' on `store`, with the entry as `current` has it),
 * so that it is asked about like one. What was announced, or null.
 */
export async function storedAgain(
  store: EventEmitter,
  entry: Entry,
  from: Provenance,
  learn: () => Promise<void>,
  current: () => Entry | undefined = () => entry,
): Promise<Committed | null> {
  const newOrigin = from.ref !== null && !entry.sources.includes(from.ref);
  await learn();
  if (!newOrigin) return null;
  const committed = { entry: current() ?? entry, ref: from.ref };
  store.emit('committed', committed.entry, committed.ref);
  return committed;
}

/**
 * Emits 'committed' (entry, ref) when content is stored, and when content already stored arrives from an
 * origin its entry did not name (ref: that origin's "registry/repository").
 */
export interface ContentStore extends EventEmitter {
  readonly index: ContentIndex;
  /**
   * The entry of the stored content of this kind and digest (what it is, and who may have it: its
   * sources, whether it is public); waits for a commit of it in progress.
   */
  lookup(kind: ContentKind, digest: string): Promise<Entry | null>;
  /**
   * A tag pointer ("registry/repository:tag|accept"), also when this process has not heard of it yet: a
   * fleet replica asks the bucket, so a tag another replica resolved costs no upstream GET here.
   */
  lookupPointer(key: string): Promise<TagPointer | undefined>;
  /** Opens stored content; null when it is gone (removed meanwhile, or behind the store's back). */
  open(content: StoredContent): Promise<ContentFile | null>;
  /** The whole of small stored content (a manifest); null when it is gone. */
  readAll(content: StoredContent): Promise<Buffer | null>;
  /** Where the content lives, for log lines (a path, a URL). */
  where(digest: string): string;
  /** A new, empty spool for a fill of `content` (a bucket starts its upload where the content will live). */
  beginSpool(content: SpooledContent): Promise<Spool>;
  /** Stores a verified, synced spool as `content` (the spool is the store's afterwards; close it). */
  commit(spool: Spool, content: StoredContent, from: Provenance): Promise<void>;
  /** Drops a spool whose content will never be stored. */
  discard(spool: Spool): Promise<void>;
  /** Stores a small body (a manifest) whose digest the caller has verified. */
  putVerified(content: StoredContent, data: Buffer, from: Provenance): Promise<void>;
  /**
   * Removes an entry and, unless another entry holds the same bytes, its content. Readers that opened
   * the content before keep reading it to the end.
   */
  remove(kind: ContentKind, digest: string): Promise<Entry | undefined>;
  /** A read: most recently used now, and the repository/tag noted. */
  use(kind: ContentKind, digest: string, from: Provenance): void;
  /** Free space where content is written (one statfs for a directory). */
  space(): Promise<DiskSpace>;
  /**
   * Content read as stored did not hash to its digest: drops a replica's local copy of it when that is
   * what was read (true: a bucket replica's local tier), rather than the entry (false: the caller removes
   * the entry; always so where the stored bytes are the only ones).
   */
  dropCorruptCopy(digest: string): Promise<boolean>;
  /** Removes content no entry refers to (left by a crash, or put there by hand); what it freed. */
  removeUnreferenced(): Promise<{ files: number; bytes: number }>;
  /**
   * Brings `index` up to what the store holds now (a fleet replica reads the bucket's entries, which other
   * replicas write); before a pass that must see every entry, such as `cache verify`. Rejects when it cannot.
   */
  syncIndex(): Promise<void>;
  close(): Promise<void>;
}
