// The optional local tier of a fleet replica (LOCAL_TIER_MAX_SIZE with CACHE_STORE, decision #89): copies
// of hot content on local disk (CACHE_DIR/tier, in cacache's content layout), so that a warm replica
// serves them without reading the bucket again. The bucket stays the truth: a copy is only served while
// the replica's index has an entry for its digest, and the store drops copies whose entry is gone (a
// removal here, the fleet's sweep seen at a refresh). A copy becomes one only verified: a fill's spool
// (whose digest the fill verified) is renamed in after the commit, and a first read from the bucket that
// runs from the first byte to the last is written beside it, hashed on the way, and renamed in only when
// it hashed to its digest. Bounded by its own size, least recently used first. Wiped at start (its index
// is in memory): a replica that restarts starts cold here and warms from the bucket.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../telemetry/log.js';
import { contentPath, openContent, PRIVATE_DIR } from '../content-files.js';
import type { ContentFile } from '../content-store.js';
import { evictOldestFirst } from '../lru-eviction.js';

export class LocalTier {
  // digest -> size; Map order is recency (oldest first): a use moves the digest to the end.
  private readonly copies = new Map<string, number>();
  private bytes = 0;

  private constructor(
    readonly dir: string,
    readonly maxBytes: number,
    private readonly log: Logger,
  ) {}

  /** Empties `dir` (copies of an earlier run are not trusted: there is no index of them) and opens it. */
  static async open(dir: string, maxBytes: number, log: Logger): Promise<LocalTier> {
    await fs.rm(dir, { recursive: true, force: true });
    await fs.mkdir(path.join(dir, 'incoming'), { recursive: true, mode: PRIVATE_DIR });
    return new LocalTier(dir, maxBytes, log);
  }

  get totalBytes(): number {
    return this.bytes;
  }

  has(digest: string): boolean {
    return this.copies.has(digest);
  }

  digests(): string[] {
    return [...this.copies.keys()];
  }

  /** The local copy opened for reading (most recently used now); null when there is none. */
  async open(digest: string): Promise<ContentFile | null> {
    const size = this.copies.get(digest);
    if (size === undefined) return null;
    // no local copy (evicted, never kept): the bucket answers.
    const file = await openContent(this.dir, digest).catch(() => null);
    if (!file || file.size !== size) {
      await file?.close();
      await this.drop(digest); // gone or changed behind our back: the bucket answers
      return null;
    }
    this.copies.delete(digest);
    this.copies.set(digest, size);
    return file;
  }

  /**
   * Takes a verified file (a committed fill's spool, or a verified incoming copy) as the copy of `digest`,
   * by rename (same filesystem); removes it instead when it does not fit the bound.
   */
  async adopt(file: string, digest: string, size: number): Promise<void> {
    if (size > this.maxBytes || this.copies.has(digest)) {
      await fs.rm(file, { force: true });
      return;
    }
    await this.makeRoom(size);
    const target = contentPath(this.dir, digest);
    try {
      await fs.mkdir(path.dirname(target), { recursive: true, mode: PRIVATE_DIR });
      await fs.rename(file, target);
    } catch {
      await fs.rm(file, { force: true }); // no copy: reads go to the bucket
      return;
    }
    this.copies.set(digest, size);
    this.bytes += size;
  }

  /** Writes a small verified body (a manifest) as a copy. */
  async keep(digest: string, data: Buffer): Promise<void> {
    if (data.length > this.maxBytes || this.copies.has(digest)) return;
    const file = this.incomingPath();
    await fs.writeFile(file, data, { mode: 0o600 });
    await this.adopt(file, digest, data.length);
  }

  /** Drops the copy of `digest` (a reader that has it open reads on to the end). */
  async drop(digest: string): Promise<void> {
    const size = this.copies.get(digest);
    if (size === undefined) return;
    this.copies.delete(digest);
    this.bytes -= size;
    await fs.rm(contentPath(this.dir, digest), { force: true });
  }

  /** Drops every copy `keep` says no: the store's index no longer has an entry for it. */
  async prune(keep: (digest: string) => boolean): Promise<number> {
    let dropped = 0;
    for (const digest of this.digests()) {
      if (keep(digest)) continue;
      await this.drop(digest);
      dropped++;
    }
    return dropped;
  }

  /**
   * Wraps a read of the content from the bucket: reads that run in order from the first byte (as a HIT
   * makes them) are written to an incoming file and hashed; when the last byte was read and the bytes
   * hashed to `digest`, the file becomes the copy (at close). Any other read pattern leaves no copy.
   */
  filling(source: ContentFile, digest: string): ContentFile {
    if (this.copies.has(digest) || source.size > this.maxBytes) return source;
    return new TeeFile(source, digest, this.incomingPath(), this);
  }

  private incomingPath(): string {
    return path.join(this.dir, 'incoming', crypto.randomUUID());
  }

  /** Least recently used copies go until `size` more fits the bound. */
  private async makeRoom(size: number): Promise<void> {
    const copies = [...this.copies].map(([digest, bytes]) => ({ digest, size: bytes }));
    await evictOldestFirst(
      copies,
      () => (this.bytes + size > this.maxBytes ? 'size' : null),
      (c) => this.drop(c.digest),
      this.log,
      {
        what: 'local copy dropped',
      },
    );
  }
}

/** A bucket read that leaves a verified local copy behind when it read the whole content in order. */
class TeeFile implements ContentFile {
  private readonly hash = crypto.createHash('sha256');
  private handle: fs.FileHandle | null = null;
  private next = 0; // the next byte the copy needs; -1: given up
  private closed = false;

  constructor(
    private readonly source: ContentFile,
    private readonly digest: string,
    private readonly file: string,
    private readonly tier: LocalTier,
  ) {}

  get size(): number {
    return this.source.size;
  }

  async read(buffer: Buffer, length: number, position: number): Promise<number> {
    const n = await this.source.read(buffer, length, position);
    if (this.next < 0) return n;
    if (position !== this.next) {
      await this.giveUp();
      return n;
    }
    try {
      this.handle ??= await fs.open(this.file, 'wx', 0o600);
      const chunk = buffer.subarray(0, n);
      let written = 0;
      while (written < n) written += (await this.handle.write(chunk, written, n - written, position + written)).bytesWritten;
      this.hash.update(chunk);
      this.next += n;
    } catch {
      await this.giveUp(); // the local disk refused: the read goes on from the bucket
    }
    return n;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.source.close();
    if (this.next !== this.size || this.next < 0) return this.giveUp();
    const actual = 'sha256:' + this.hash.digest('hex');
    if (actual !== this.digest) return this.giveUp();
    try {
      await this.handle?.datasync();
      await this.handle?.close();
      this.handle = null;
      if (this.size === 0) return this.giveUp();
      await this.tier.adopt(this.file, this.digest, this.size);
    } catch {
      // the copy could not be kept: it is given up and the bucket stays the answer.
      await this.giveUp();
    }
  }

  private async giveUp(): Promise<void> {
    this.next = -1;
    const handle = this.handle;
    this.handle = null;
    // the copy is given up; a close error adds nothing.
    await handle?.close().catch(() => undefined);
    await fs.rm(this.file, { force: true });
  }
}
