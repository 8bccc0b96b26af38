// The content-addressed store: content files in cacache's layout under CACHE_DIR (one file per digest,
// whatever the repository or registry), described by regcache's own EntryIndex. Fills are spooled to
// CACHE_DIR/spool and moved into place once their digest is verified (docs/decisions.md: one disk write
// per byte, and cacache's index cannot keep LRU order or sizes).
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { EntryIndex, entryKey, type Entry, type EntryKind } from './entry-index.js';

const require = createRequire(import.meta.url);
// cacache's own content-path function, so that content lands exactly where cacache's tools look.
const cacachePath = require('cacache/lib/content/path.js') as (cache: string, integrity: string) => string;

export type ContentKind = EntryKind;

export interface StoredContent {
  path: string;
  size: number;
  mediaType: string;
  digest: string;
}

/** Where a request for the content came from: kept in the index for `regcache cache ls/rm`. */
export interface Provenance {
  ref: string | null; // "registry/repository"
  tag: string | null; // "registry/repository:tag"
}

export class ContentStore extends EventEmitter {
  readonly spoolDir: string;
  // Small writes not yet on disk: a lookup for the same entry waits for them instead of missing.
  private readonly pending = new Map<string, Promise<void>>();

  private constructor(
    readonly dir: string,
    readonly index: EntryIndex,
  ) {
    super();
    this.spoolDir = path.join(dir, 'spool');
  }

  /** Creates the directories, removes spool files left by a crash (never committed), loads the index. */
  static async open(dir: string): Promise<ContentStore> {
    await fs.mkdir(dir, { recursive: true });
    const spoolDir = path.join(dir, 'spool');
    await fs.rm(spoolDir, { recursive: true, force: true });
    await fs.mkdir(spoolDir, { recursive: true });
    return new ContentStore(dir, await EntryIndex.open(dir));
  }

  /** O(1): the index says where the content is; a file that vanished shows up when it is opened. */
  async lookup(kind: ContentKind, digest: string): Promise<StoredContent | null> {
    await this.pending.get(entryKey(kind, digest))?.catch(() => undefined);
    const entry = this.index.get(kind, digest);
    if (!entry) return null;
    return { path: this.contentPath(digest), size: entry.size, mediaType: entry.mediaType, digest };
  }

  /** A HIT: most recently used now, and the repository/tag noted. */
  use(kind: ContentKind, digest: string, from: Provenance): void {
    this.index.touch(kind, digest);
    void this.index.reference(kind, digest, from.ref, from.tag).catch(() => undefined);
  }

  contentPath(digest: string): string {
    return cacachePath(this.dir, integrityOf(digest));
  }

  newSpoolFile(): string {
    return path.join(this.spoolDir, `fill-${crypto.randomUUID()}`);
  }

  /** Moves a verified, synced spool file into place and records the entry. */
  async commitFile(spoolFile: string, kind: ContentKind, digest: string, size: number, mediaType: string, from: Provenance): Promise<void> {
    const target = this.contentPath(digest);
    await fs.mkdir(path.dirname(target), { recursive: true });
    await fs.rename(spoolFile, target); // same filesystem; replaces identical bytes if already present
    const now = Date.now();
    const entry: Entry = { kind, digest, size, mediaType, created: now, lastAccess: now, refs: from.ref ? [from.ref] : [], tags: from.tag ? [from.tag] : [] };
    await this.index.put(entry);
    this.emit('committed', entry);
  }

  /** Stores a small body (a manifest) whose digest the caller has verified. */
  putBuffer(kind: ContentKind, digest: string, data: Buffer, mediaType: string, from: Provenance): Promise<void> {
    const key = entryKey(kind, digest);
    if (this.index.get(kind, digest)) {
      return this.index.reference(kind, digest, from.ref, from.tag); // already stored: just note where from
    }
    const write = (async () => {
      const spool = this.newSpoolFile();
      const handle = await fs.open(spool, 'wx', 0o600);
      try {
        await handle.writeFile(data);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      try {
        await this.commitFile(spool, kind, digest, data.length, mediaType, from);
      } catch (err) {
        await fs.rm(spool, { force: true });
        throw err;
      }
    })().finally(() => {
      if (this.pending.get(key) === write) this.pending.delete(key);
    });
    this.pending.set(key, write);
    return write;
  }

  /**
   * Removes an entry, and its content file unless another entry holds the same bytes. The unlink is
   * issued in the same tick as the in-memory deletion, not after the journal sync: a request arriving
   * meanwhile misses and refills, and its commit must not be unlinked by this removal.
   */
  async remove(kind: ContentKind, digest: string): Promise<Entry | undefined> {
    if (!this.index.get(kind, digest)) return undefined;
    const deleted = this.index.delete(kind, digest); // gone from memory now; the journal line follows
    // Readers that have the file open keep reading: unlinking only takes the name away.
    const unlinked = this.index.sharesContent(kind, digest) ? null : fs.rm(this.contentPath(digest), { force: true });
    const [entry] = await Promise.all([deleted, unlinked]);
    return entry;
  }

  close(): Promise<void> {
    return this.index.close();
  }
}

/** "sha256:<hex>" -> the SRI string cacache keys content by. Only sha256 digests are cached. */
export function integrityOf(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return 'sha256-' + Buffer.from(hex, 'hex').toString('base64');
}
