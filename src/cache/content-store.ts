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

// Every directory regcache creates under CACHE_DIR; files are created 0600. Cached layers of private
// images are no business of other local users.
const PRIVATE_DIR = 0o700;

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

  /**
   * Creates the directories (owner only, whatever the umask), removes spool files left by a crash (never
   * committed), loads the index.
   */
  static async open(dir: string): Promise<ContentStore> {
    await fs.mkdir(dir, { recursive: true, mode: PRIVATE_DIR });
    await restrictToOwner(dir);
    const spoolDir = path.join(dir, 'spool');
    await fs.rm(spoolDir, { recursive: true, force: true });
    await fs.mkdir(spoolDir, { mode: PRIVATE_DIR });
    await fs.chmod(spoolDir, PRIVATE_DIR); // ours: a umask may have narrowed the mode (never widened it)
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
    await fs.mkdir(path.dirname(target), { recursive: true, mode: PRIVATE_DIR });
    await fs.rename(spoolFile, target); // same filesystem; replaces identical bytes if already present
    if (this.index.get(kind, digest)) {
      await this.noteAnotherSource(kind, digest, from); // a second fill of the same bytes (another origin)
      return;
    }
    const now = Date.now();
    const entry: Entry = { kind, digest, size, mediaType, created: now, lastAccess: now, refs: from.ref ? [from.ref] : [], tags: from.tag ? [from.tag] : [] };
    await this.index.put(entry);
    this.emit('committed', entry, from.ref);
  }

  /**
   * The same content arrived again, from `from`: the entry keeps what it knows (its origins, tags and
   * whether it is public) and learns the new origin, which is then asked about as a commit would be.
   */
  private async noteAnotherSource(kind: ContentKind, digest: string, from: Provenance): Promise<void> {
    const entry = this.index.get(kind, digest)!;
    const newOrigin = from.ref !== null && !entry.refs.includes(from.ref);
    await this.index.reference(kind, digest, from.ref, from.tag);
    if (newOrigin) this.emit('committed', entry, from.ref);
  }

  /** Stores a small body (a manifest) whose digest the caller has verified. */
  putBuffer(kind: ContentKind, digest: string, data: Buffer, mediaType: string, from: Provenance): Promise<void> {
    const key = entryKey(kind, digest);
    if (this.index.get(kind, digest)) return this.noteAnotherSource(kind, digest, from); // already stored
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

/**
 * CACHE_DIR ends up 0700 even if it existed with a wider mode (e.g. created 0777 under umask 000 by an
 * earlier version). A directory owned by another user keeps the mode its owner chose (chmod: EPERM).
 */
async function restrictToOwner(dir: string): Promise<void> {
  try {
    await fs.chmod(dir, PRIVATE_DIR);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
  }
}

/** "sha256:<hex>" -> the SRI string cacache keys content by. Only sha256 digests are cached. */
export function integrityOf(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return 'sha256-' + Buffer.from(hex, 'hex').toString('base64');
}
