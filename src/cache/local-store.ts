// The first ContentStore: a directory. Content files in cacache's layout under CACHE_DIR (one file per
// digest, whatever the repository or registry), described by regcache's own EntryIndex. Fills are spooled
// to CACHE_DIR/spool and renamed into place once their digest is verified (docs/decisions.md: one disk
// write per byte, and cacache's index cannot keep LRU order or sizes).
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { Readable } from 'node:stream';
import type { ContentFile, ContentKind, ContentStore, DiskSpace, Provenance, Spool, StoredContent } from './content-store.js';
import { EntryIndex, entryKey, type Entry } from './entry-index.js';

const require = createRequire(import.meta.url);
// cacache's own content-path function, so that content lands exactly where cacache's tools look.
const cacachePath = require('cacache/lib/content/path.js') as (cache: string, integrity: string) => string;

// Every directory regcache creates under CACHE_DIR; files are created 0600. Cached layers of private
// images are no business of other local users.
const PRIVATE_DIR = 0o700;
// The index and the OS need some room too: 64 MiB, or 2% of a small filesystem.
const DISK_RESERVE_BYTES = 64 * 1024 * 1024;
const DISK_RESERVE_SHARE = 0.02;

export class LocalStore extends EventEmitter implements ContentStore {
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
  static async open(dir: string): Promise<LocalStore> {
    await fs.mkdir(dir, { recursive: true, mode: PRIVATE_DIR });
    await restrictToOwner(dir);
    const spoolDir = path.join(dir, 'spool');
    await fs.rm(spoolDir, { recursive: true, force: true });
    await fs.mkdir(spoolDir, { mode: PRIVATE_DIR });
    await fs.chmod(spoolDir, PRIVATE_DIR); // ours: a umask may have narrowed the mode (never widened it)
    return new LocalStore(dir, await EntryIndex.open(dir));
  }

  /** O(1): the index says what is there; a file that vanished shows up when it is opened. */
  async lookup(kind: ContentKind, digest: string): Promise<StoredContent | null> {
    await this.pending.get(entryKey(kind, digest))?.catch(() => undefined);
    const entry = this.index.get(kind, digest);
    if (!entry) return null;
    return { kind, digest, size: entry.size, mediaType: entry.mediaType };
  }

  async open(content: StoredContent): Promise<ContentFile | null> {
    let handle: fs.FileHandle;
    try {
      handle = await fs.open(this.contentPath(content.digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      return new LocalFile(handle, (await handle.stat()).size);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  async readAll(content: StoredContent): Promise<Buffer | null> {
    return fs.readFile(this.contentPath(content.digest)).catch(() => null);
  }

  where(digest: string): string {
    return this.contentPath(digest);
  }

  /** A HIT: most recently used now, and the repository/tag noted. */
  use(kind: ContentKind, digest: string, from: Provenance): void {
    this.index.touch(kind, digest);
    void this.index.reference(kind, digest, from.ref, from.tag).catch(() => undefined);
  }

  contentPath(digest: string): string {
    return cacachePath(this.dir, integrityOf(digest));
  }

  async beginSpool(): Promise<Spool> {
    const file = path.join(this.spoolDir, `fill-${crypto.randomUUID()}`);
    return new SpoolFile(file, await fs.open(file, 'wx+', 0o600));
  }

  /** Moves a verified, synced spool file into place and records the entry. */
  async commit(spool: Spool, content: StoredContent, from: Provenance): Promise<void> {
    await this.commitFile(spoolFileOf(spool).file, content, from);
  }

  async discard(spool: Spool): Promise<void> {
    await fs.rm(spoolFileOf(spool).file, { force: true });
  }

  private async commitFile(spoolFile: string, content: StoredContent, from: Provenance): Promise<void> {
    const { kind, digest, size, mediaType } = content;
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

  putVerified(content: StoredContent, data: Buffer, from: Provenance): Promise<void> {
    const { kind, digest } = content;
    const key = entryKey(kind, digest);
    if (this.index.get(kind, digest)) return this.noteAnotherSource(kind, digest, from); // already stored
    const write = (async () => {
      const spool = path.join(this.spoolDir, `fill-${crypto.randomUUID()}`);
      const handle = await fs.open(spool, 'wx', 0o600);
      try {
        await handle.writeFile(data);
        await handle.datasync();
      } finally {
        await handle.close();
      }
      try {
        await this.commitFile(spool, { ...content, size: data.length }, from);
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

  /** One statfs: bytes available to regcache, and the reserve (64 MiB, or 2% of a small filesystem). */
  async space(): Promise<DiskSpace> {
    const s = await fs.statfs(this.dir);
    return { free: s.bavail * s.bsize, reserve: Math.min(DISK_RESERVE_BYTES, Math.floor(s.blocks * s.bsize * DISK_RESERVE_SHARE)) };
  }

  /** Deletes files under content-v2/ that no entry refers to. */
  async removeUnreferenced(): Promise<{ files: number; bytes: number }> {
    const known = new Set<string>();
    for (const e of this.index.oldestFirst()) known.add(this.contentPath(e.digest));
    let files = 0;
    let bytes = 0;
    for (const file of await listFiles(path.join(this.dir, 'content-v2'))) {
      if (known.has(file)) continue;
      files++;
      bytes += (await fs.stat(file).catch(() => null))?.size ?? 0;
      await fs.rm(file, { force: true });
    }
    return { files, bytes };
  }

  close(): Promise<void> {
    return this.index.close();
  }
}

/** A content file opened for reading. */
class LocalFile implements ContentFile {
  constructor(
    private readonly handle: fs.FileHandle,
    readonly size: number,
  ) {}

  read(buffer: Buffer, length: number, position: number): Promise<number> {
    return this.handle.read(buffer, 0, length, position).then((r) => r.bytesRead);
  }

  stream(start: number, end: number, chunk: number): Readable {
    return this.handle.createReadStream({ start, end, highWaterMark: chunk });
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

/** A fill's spool file: written and read by position through one descriptor. */
class SpoolFile implements Spool {
  constructor(
    readonly file: string,
    private readonly handle: fs.FileHandle,
  ) {}

  write(chunks: Buffer[], position: number): Promise<number> {
    return this.handle.writev(chunks, position).then((r) => r.bytesWritten);
  }

  read(buffer: Buffer, length: number, position: number): Promise<number> {
    return this.handle.read(buffer, 0, length, position).then((r) => r.bytesRead);
  }

  sync(): Promise<void> {
    return this.handle.datasync();
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}

function spoolFileOf(spool: Spool): SpoolFile {
  if (!(spool instanceof SpoolFile)) throw new Error('a spool of another store');
  return spool;
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

async function listFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((d) => d.isFile()).map((d) => path.join(d.parentPath ?? (d as unknown as { path: string }).path, d.name));
}

/** "sha256:<hex>" -> the SRI string cacache keys content by. Only sha256 digests are cached. */
export function integrityOf(digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return 'sha256-' + Buffer.from(hex, 'hex').toString('base64');
}
