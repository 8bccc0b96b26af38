// The first ContentStore: a directory. Content files in cacache's layout under CACHE_DIR (one file per
// digest, whatever the repository or registry), described by regcache's own EntryIndex. Fills are spooled
// to CACHE_DIR/spool and renamed into place once their digest is verified (docs/decisions.md: one disk
// write per byte, and cacache's index cannot keep LRU order or sizes).
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import { CommitsInProgress } from '../commits-in-progress.js';
import {
  commitSmall,
  contentPath,
  createSpool,
  diskSpace,
  newSpoolName,
  openContent,
  openSpoolDir,
  PRIVATE_DIR,
  SpoolFile,
  spoolDirOf,
  spoolPath,
} from '../content-files.js';
import { storedAgain } from '../content-store.js';
import type { Committed, ContentFile, ContentKind, ContentStore, DiskSpace, Provenance, Spool, StoredContent } from '../content-store.js';
import { EntryIndex, type Entry, type TagPointer } from '../entry-index.js';
import { eachAtOnce } from '../each-at-once.js';
import { errorCode } from '../../telemetry/error-message.js';

export class LocalStore extends EventEmitter implements ContentStore {
  readonly spoolDir: string;
  private readonly commits = new CommitsInProgress(); // small writes, and the commits workers ask for
  /** Entries the journal named whose content file was gone at open (dropped then). */
  lostAtOpen: Entry[] = [];

  private constructor(
    readonly dir: string,
    readonly index: EntryIndex,
  ) {
    super();
    this.spoolDir = spoolDirOf(dir);
  }

  /**
   * Creates the directories (owner only, whatever the umask), removes spool files left by a crash (never
   * committed), loads the index.
   */
  static async open(dir: string): Promise<LocalStore> {
    await openSpoolDir(dir);
    const store = new LocalStore(dir, await EntryIndex.open(dir));
    store.lostAtOpen = await store.dropEntriesWithoutFiles();
    return store;
  }

  /**
   * The journal can name content whose file is gone: a process killed between a removal's unlink and its
   * journal line (issued together, see remove), or a removal the full disk did not let it journal. Checked
   * once at open (a stat per entry, a few at a time), so that what the index says is there, is.
   */
  private async dropEntriesWithoutFiles(): Promise<Entry[]> {
    const lost: Entry[] = [];
    await eachAtOnce([...this.index.oldestFirst()], 16, async (e) => {
      if (!(await fileExists(this.contentPath(e.digest)))) lost.push(e);
    });
    // a deletion the disk cannot take now stays in memory and is journalled with the next write (entry-index.ts)
    for (const e of lost) await this.index.delete(e.kind, e.digest).catch(() => undefined);
    return lost;
  }

  /**
   * O(1): the index says what is there, once a commit of it in progress settled; a file that vanished
   * shows up when it is opened.
   */
  async lookup(kind: ContentKind, digest: string): Promise<Entry | null> {
    if (this.commits.pending.size > 0) await this.commits.settled(kind, digest);
    return this.index.get(kind, digest) ?? null;
  }

  /** The directory's index is the whole truth: this process writes every pointer. */
  lookupPointer(key: string): Promise<TagPointer | undefined> {
    return Promise.resolve(this.index.pointer(key));
  }

  open(content: StoredContent): Promise<ContentFile | null> {
    return openContent(this.dir, content.digest);
  }

  async readAll(content: StoredContent): Promise<Buffer | null> {
    // gone (evicted, removed): null is the answer, the caller refetches.
    return fs.readFile(this.contentPath(content.digest)).catch(() => null);
  }

  where(digest: string): string {
    return this.contentPath(digest);
  }

  /** A HIT: most recently used now, and the repository/tag noted. */
  use(kind: ContentKind, digest: string, from: Provenance, now = Date.now()): void {
    this.index.touch(kind, digest, now);
    // where content was read from is listing data only; a failed write loses one reference.
    void this.index.reference(kind, digest, from.ref, from.tag).catch(() => undefined);
  }

  contentPath(digest: string): string {
    return contentPath(this.dir, digest);
  }

  beginSpool(): Promise<Spool> {
    // the content does not matter: a file is named by its fill
    return createSpool(this.dir, newSpoolName());
  }

  /** Moves a verified, synced spool file into place and records the entry. */
  async commit(spool: Spool, content: StoredContent, from: Provenance): Promise<void> {
    await this.commitFile(spoolFileOf(spool).file, content, from);
  }

  /**
   * Commits a verified, synced spool file that another process (a worker) wrote in the spool directory,
   * by its name; what was committed (also emitted as 'committed'), or null when nothing new was learned.
   * Lookups meanwhile wait for it (another worker's GET right after the fill must be a HIT).
   */
  commitSpooled(name: string, content: StoredContent, from: Provenance): Promise<Committed | null> {
    return this.commits.run(content.kind, content.digest, () => this.commitFile(spoolPath(this.dir, name), content, from));
  }

  async discard(spool: Spool): Promise<void> {
    await fs.rm(spoolFileOf(spool).file, { force: true });
  }

  /** Removes the spool files whose names start with `fill-<prefix>` (a worker's, after it died). */
  async discardSpooled(prefix: string): Promise<void> {
    // no spool directory: no spool files to list.
    const names = await fs.readdir(this.spoolDir).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => n.startsWith(`fill-${prefix}`)).map((n) => fs.rm(spoolPath(this.dir, n), { force: true })));
  }

  private async commitFile(spoolFile: string, content: StoredContent, from: Provenance): Promise<Committed | null> {
    const { kind, digest, size, mediaType } = content;
    const target = this.contentPath(digest);
    await fs.mkdir(path.dirname(target), { recursive: true, mode: PRIVATE_DIR });
    await fs.rename(spoolFile, target); // same filesystem; replaces identical bytes if already present
    if (this.index.get(kind, digest)) return this.noteSource(kind, digest, from); // a second fill of the same bytes (another origin)
    const now = Date.now();
    const origin = from.ref ? [from.ref] : [];
    const entry: Entry = { kind, digest, size, mediaType, created: now, lastAccess: now, refs: origin, sources: [...origin], tags: from.tag ? [from.tag] : [] };
    await this.index.put(entry);
    this.emit('committed', entry, from.ref);
    return { entry, ref: from.ref };
  }

  /**
   * Content already stored arrived again, from `from`: the entry keeps what it knows (its origins, tags
   * and whether it is public) and learns the new origin, which is then asked about as a commit would be.
   */
  async noteSource(kind: ContentKind, digest: string, from: Provenance): Promise<Committed | null> {
    const entry = this.index.get(kind, digest);
    const learn = async () => {
      await this.index.reference(kind, digest, from.ref, from.tag);
      if (from.ref !== null) await this.index.addSource(kind, digest, from.ref);
    };
    return entry ? storedAgain(this, entry, from, learn) : null;
  }

  putVerified(content: StoredContent, data: Buffer, from: Provenance): Promise<void> {
    const { kind, digest } = content;
    if (this.index.get(kind, digest)) return this.noteSource(kind, digest, from).then(() => undefined); // already stored
    return this.commits.run(kind, digest, () =>
      commitSmall(this.dir, newSpoolName(), data, (file) => this.commitFile(file, { ...content, size: data.length }, from)),
    );
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

  space(): Promise<DiskSpace> {
    return diskSpace(this.dir);
  }

  /** The stored bytes are the only ones: the caller drops the entry. */
  dropCorruptCopy(): Promise<boolean> {
    return Promise.resolve(false);
  }

  /** The index is this directory's own record: nothing to catch up with. */
  syncIndex(): Promise<void> {
    return Promise.resolve();
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
      // removed while counting: it counts nothing.
      bytes += (await fs.stat(file).catch(() => null))?.size ?? 0;
      await fs.rm(file, { force: true });
    }
    return { files, bytes };
  }

  close(): Promise<void> {
    return this.index.close();
  }
}

async function fileExists(file: string): Promise<boolean> {
  try {
    await fs.stat(file);
    return true;
  } catch (err) {
    if (errorCode(err) === 'ENOENT') return false;
    throw err;
  }
}

function spoolFileOf(spool: Spool): SpoolFile {
  if (!(spool instanceof SpoolFile)) throw new Error('a spool of another store');
  return spool;
}

async function listFiles(dir: string): Promise<string[]> {
  // no such directory: nothing stored there.
  const entries = await fs.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  return entries.filter((d) => d.isFile()).map((d) => path.join(d.parentPath ?? (d as unknown as { path: string }).path, d.name));
}
