// regcache's own index of what the store holds: one entry per stored digest with its size, media type,
// the registry/repositories and tags it was requested under, and when it was created and last used.
// In memory it is a Map kept in least-recently-used order (O(1) lookups, touches and evictions); on
// disk an append-only journal (index.jsonl) that is replayed and compacted at startup, so a restart
// keeps LRU order. Commits are fsynced; access times are flushed lazily.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

export type EntryKind = 'blob' | 'manifest';

export interface Entry {
  kind: EntryKind;
  digest: string;
  size: number;
  mediaType: string;
  created: number; // ms since the epoch
  lastAccess: number;
  refs: string[]; // "registry/repository" it was requested under
  // "registry/repository" whose origin delivered bytes that hashed to the digest (a fill, a stored manifest):
  // only these origins' clients are served private content (registry/content-gate.ts). Naming the digest
  // (a HEAD's Docker-Content-Digest, a request by digest) never makes an origin a source.
  sources: string[];
  tags: string[]; // "registry/repository:tag" that pointed at it (manifests)
  access?: Access; // whether upstream serves it anonymously; absent until checked
}

export type Access = 'public' | 'private';

/** A journal line: what changed in the index. Workers' replicas of the index apply the same lines. */
export type IndexOp =
  | { op: 'put'; e: Entry }
  | { op: 'touch'; k: string; t: number }
  | { op: 'ref'; k: string; r: string }
  | { op: 'src'; k: string; s: string } // an origin delivered the bytes
  | { op: 'tag'; k: string; tag: string }
  | { op: 'untag'; tag: string } // the tag and its pointers forgotten (regcache cache rm)
  | { op: 'del'; k: string }
  | { op: 'acc'; k: string; a: Access }
  | { op: 'ptr'; p: string; d: string; t: number }; // tag pointer: "host/repo:tag|accept" -> manifest digest, checked at t
// (a referrers pointer, "host/repo@subject|referrers;artifactType=...", names a stored referrers list and tags nothing)

export interface TagPointer {
  digest: string;
  checkedAt: number; // when upstream last confirmed it
}

/** Journal lines written together (group commit). */
interface Batch {
  texts: string[];
  lines: number;
  durable: boolean; // some caller needs the lines on disk: datasync after the write
  written: Promise<void>;
}

const JOURNAL = 'index.jsonl';
const TOUCH_FLUSH_MS = 10_000;
// Touches and refs grow the journal while the process runs: rewrite it once it holds this many lines
// beyond one per live entry, so that months of uptime do not mean gigabytes of journal.
const COMPACT_SLACK_LINES = 100_000;

export function entryKey(kind: EntryKind, digest: string): string {
  return `${kind}/${digest}`;
}

/** "registry/repository:tag|<Accept set>" -> "registry/repository:tag"; null for a referrers pointer ("...@digest|..."). */
function tagOfPointer(key: string): string | null {
  const tag = key.slice(0, key.indexOf('|'));
  return tag.includes('@') ? null : tag;
}

export class EntryIndex {
  private readonly entries = new Map<string, Entry>(); // iteration order: least recently used first
  private readonly tagOwners = new Map<string, string>(); // tag -> entry key
  private readonly pointers = new Map<string, TagPointer>();
  // manifest digest -> keys of the pointers that name it: a manifest stored after its tag was resolved
  // (dockerd and containerd HEAD the tag, then GET the manifest by digest) learns its tags from them.
  private readonly pointedAt = new Map<string, Set<string>>();
  private readonly pendingTouches = new Map<string, number>();
  private bytes = 0;
  private journalLines = 0;
  private timer: NodeJS.Timeout | null = null;
  private appending: Promise<void> = Promise.resolve();
  private openBatch: Batch | null = null; // journal lines waiting for the write in flight to finish
  // A write failed (the disk full): memory went on without it, so the journal lacks lines (a removal
  // lost there would bring an entry back at the next start, its file gone) and may end in a torn line
  // that the next append would glue onto. The next write rewrites the journal from memory first.
  private behind = false;
  private observer: ((ops: IndexOp[]) => void) | null = null;

  private constructor(
    private readonly file: string,
    private handle: fs.FileHandle | null,
    private readonly compactSlack: number,
  ) {}

  /**
   * Replays the journal and opens it for appending. A journal that is not already one put per entry in
   * LRU order is rewritten compacted (atomically) in the background, ahead of any append.
   */
  static async open(dir: string, compactSlack = COMPACT_SLACK_LINES): Promise<EntryIndex> {
    const file = path.join(dir, JOURNAL);
    const index = new EntryIndex(file, null, compactSlack);
    for (const name of await fs.readdir(dir)) {
      if (name.startsWith(`${JOURNAL}.`) && name.endsWith('.tmp')) await fs.rm(path.join(dir, name), { force: true }); // a compaction cut short
    }
    const text = await fs.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    let lines = 0;
    let clean = text === '' || text.endsWith('\n'); // a torn last line must not glue onto the next append
    let ordered = true;
    let last = -Infinity;
    for (const line of text.split('\n')) {
      if (line === '') continue;
      lines++;
      let op: IndexOp;
      try {
        op = JSON.parse(line) as IndexOp;
      } catch {
        clean = false;
        continue; // a line torn by a crash mid-append: everything before it stands
      }
      index.apply(op);
      if (op.op === 'ptr') continue;
      if (op.op !== 'put' || op.e.lastAccess < last) ordered = false;
      else last = op.e.lastAccess;
    }
    if (!ordered) index.sortByLastAccess();
    index.journalLines = lines;
    index.handle = await fs.open(file, 'a', 0o600);
    // a failed compaction leaves the journal as it was (still valid); the next append retries it.
    if (!clean || !ordered || lines !== index.entries.size + index.pointers.size) index.appending = index.compact().catch(() => undefined);
    // A flush that cannot write (ENOSPC: the disk is full) keeps its touches for the next tick; a rejected
    // promise left to a timer would end the process (the soak's full disk did: a primary gone).
    index.timer = setInterval(() => void index.flushTouches().catch(() => undefined), TOUCH_FLUSH_MS).unref();
    return index;
  }

  /**
   * An index in memory only, built from another index's snapshot and kept up to date by applying the ops
   * it reports (a worker's view of the primary's index). Nothing is journalled.
   */
  static replica(snapshot: IndexOp[]): EntryIndex {
    const index = new EntryIndex('', null, COMPACT_SLACK_LINES);
    index.applyOps(snapshot);
    return index;
  }

  /** Applies ops another index reported (a replica following its primary). */
  applyOps(ops: IndexOp[]): void {
    for (const op of ops) this.apply(op);
  }

  /** Everything the index holds, as ops that rebuild it: one put per entry in LRU order, then the tag pointers. */
  snapshot(): IndexOp[] {
    const ops: IndexOp[] = [...this.entries.values()].map((e) => ({ op: 'put', e }));
    for (const [p, ptr] of this.pointers) ops.push({ op: 'ptr', p, d: ptr.digest, t: ptr.checkedAt });
    return ops;
  }

  /**
   * Tells `observer` every change made through this index's methods, synchronously as it is made
   * (before it is on disk), except access times: what replicas need to answer as this index would.
   */
  observe(observer: (ops: IndexOp[]) => void): void {
    this.observer = observer;
  }

  get size(): number {
    return this.entries.size;
  }

  /** Total bytes of stored content (each digest counted once per entry). */
  get totalBytes(): number {
    return this.bytes;
  }

  get(kind: EntryKind, digest: string): Entry | undefined {
    return this.entries.get(entryKey(kind, digest));
  }

  /** Entries from least to most recently used. */
  oldestFirst(): IterableIterator<Entry> {
    return this.entries.values();
  }

  /** Marks an entry used now: it moves to the most-recently-used end; the journal learns it lazily. */
  touch(kind: EntryKind, digest: string, now = Date.now()): void {
    const key = entryKey(kind, digest);
    const entry = this.entries.get(key);
    if (!entry) return;
    entry.lastAccess = now;
    this.entries.delete(key);
    this.entries.set(key, entry);
    this.pendingTouches.set(key, now);
  }

  /** Records a committed entry; resolves once the journal line is on disk. */
  async put(entry: Entry): Promise<void> {
    await this.record([{ op: 'put', e: entry }], true);
  }

  /** Notes that a repository (and optionally a tag) uses the entry; journals only what is new. */
  async reference(kind: EntryKind, digest: string, ref: string | null, tag: string | null): Promise<void> {
    const key = entryKey(kind, digest);
    const entry = this.entries.get(key);
    if (!entry) return;
    const ops: IndexOp[] = [];
    if (ref !== null && !entry.refs.includes(ref)) ops.push({ op: 'ref', k: key, r: ref });
    if (tag !== null && this.tagOwners.get(tag) !== key) ops.push({ op: 'tag', k: key, tag });
    if (ops.length === 0) return;
    await this.record(ops, false);
  }

  /** Notes that an origin ("registry/repository") delivered bytes that hashed to the digest; journals only what is new. */
  async addSource(kind: EntryKind, digest: string, source: string): Promise<void> {
    const key = entryKey(kind, digest);
    const entry = this.entries.get(key);
    if (!entry || entry.sources.includes(source)) return;
    await this.record([{ op: 'src', k: key, s: source }], true);
  }

  async delete(kind: EntryKind, digest: string): Promise<Entry | undefined> {
    const key = entryKey(kind, digest);
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    this.pendingTouches.delete(key);
    await this.record([{ op: 'del', k: key }], true);
    return entry;
  }

  /** Whether another entry (the other kind) holds the same content. */
  sharesContent(kind: EntryKind, digest: string): boolean {
    return this.entries.has(entryKey(kind === 'blob' ? 'manifest' : 'blob', digest));
  }

  /** The manifest a tag points at, if it is stored. */
  taggedManifest(tag: string): Entry | undefined {
    const key = this.tagOwners.get(tag);
    return key === undefined ? undefined : this.entries.get(key);
  }

  /**
   * Forgets a tag: no manifest carries it and what it pointed at (per Accept set) is dropped, so it is
   * neither listed nor served STALE. The manifest itself stays (another image may use it).
   */
  async untag(tag: string): Promise<void> {
    if (!this.tagOwners.has(tag) && !this.hasPointers(tag)) return;
    await this.record([{ op: 'untag', tag }], true);
  }

  /** Records whether upstream serves the entry to anyone (public) or only to some (private). */
  async setAccess(kind: EntryKind, digest: string, access: Access): Promise<void> {
    const key = entryKey(kind, digest);
    if (!this.entries.has(key)) return;
    await this.record([{ op: 'acc', k: key, a: access }], false);
  }

  /** What a tag (for one Accept set) pointed at when upstream last said so. */
  pointer(key: string): TagPointer | undefined {
    return this.pointers.get(key);
  }

  /** Every pointer of a tag ("registry/repository:tag"), whatever the Accept set it was resolved for. */
  pointersOf(tag: string): TagPointer[] {
    const prefix = `${tag}|`;
    return [...this.pointers].filter(([key]) => key.startsWith(prefix)).map(([, pointer]) => pointer);
  }

  async setPointer(key: string, digest: string, checkedAt = Date.now()): Promise<void> {
    await this.record([{ op: 'ptr', p: key, d: digest, t: checkedAt }], false);
  }

  async flushTouches(): Promise<void> {
    if (this.pendingTouches.size === 0) {
      if (this.behind) await this.append([], false); // nothing new, but a journal to catch up once the disk has room
      return;
    }
    const touches = [...this.pendingTouches];
    this.pendingTouches.clear();
    try {
      await this.append(
        touches.map(([k, t]) => ({ op: 'touch', k, t })),
        false,
      );
    } catch (err) {
      // Not journalled: kept for the next flush, unless touched again or removed since.
      for (const [k, t] of touches) if (!this.pendingTouches.has(k) && this.entries.has(k)) this.pendingTouches.set(k, t);
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    // closing: access times not flushed are only LRU order, rebuilt as content is used.
    await this.flushTouches().catch(() => undefined);
    // closing: a failed append was reported to its caller; nothing is left to do with it here.
    await this.appending.catch(() => undefined);
    await this.handle?.close();
    this.handle = null;
  }

  /** A change: applied in memory now (and reported to the observer), journalled (durable: synced) after. */
  private record(ops: IndexOp[], durable: boolean): Promise<void> {
    for (const op of ops) this.apply(op);
    this.observer?.(ops);
    return this.append(ops, durable);
  }

  private apply(op: IndexOp): void {
    switch (op.op) {
      case 'put': {
        const key = entryKey(op.e.kind, op.e.digest);
        const old = this.entries.get(key);
        if (old) this.bytes -= old.size;
        this.entries.delete(key);
        // A journal written before sources were recorded: the first repository is the origin whose fill
        // created the entry; later ones may only have named it, so they are not trusted as sources.
        const sources = op.e.sources ?? op.e.refs.slice(0, 1);
        this.entries.set(key, { ...op.e, refs: [...op.e.refs], sources: [...sources], tags: [] });
        this.bytes += op.e.size;
        for (const tag of op.e.tags) this.assignTag(key, tag);
        if (op.e.kind === 'manifest') {
          for (const p of this.pointedAt.get(op.e.digest) ?? []) {
            const tag = tagOfPointer(p);
            if (tag !== null) this.assignTag(key, tag);
          }
        }
        return;
      }
      case 'touch': {
        const entry = this.entries.get(op.k);
        if (entry && op.t > entry.lastAccess) entry.lastAccess = op.t;
        return;
      }
      case 'ref': {
        const entry = this.entries.get(op.k);
        if (entry && !entry.refs.includes(op.r)) entry.refs.push(op.r);
        return;
      }
      case 'src': {
        const entry = this.entries.get(op.k);
        if (entry && !entry.sources.includes(op.s)) entry.sources.push(op.s);
        return;
      }
      case 'tag':
        if (this.entries.has(op.k)) this.assignTag(op.k, op.tag);
        return;
      case 'untag': {
        const owner = this.entries.get(this.tagOwners.get(op.tag) ?? '');
        if (owner) owner.tags = owner.tags.filter((t) => t !== op.tag);
        this.tagOwners.delete(op.tag);
        for (const [p, pointer] of [...this.pointers]) {
          if (!p.startsWith(`${op.tag}|`)) continue;
          this.pointers.delete(p);
          this.pointedAt.get(pointer.digest)?.delete(p); // or the manifest, stored again, would take the tag back
        }
        return;
      }
      case 'acc': {
        // Public at any origin is never undone: a private learned later, or read from an older listing, does
        // not take it back (the entry goes public or stays unknown until it is removed and stored again).
        const entry = this.entries.get(op.k);
        if (entry && entry.access !== 'public') entry.access = op.a;
        return;
      }
      case 'ptr': {
        const previous = this.pointers.get(op.p);
        if (previous && previous.digest !== op.d) this.pointedAt.get(previous.digest)?.delete(op.p);
        this.pointers.set(op.p, { digest: op.d, checkedAt: op.t });
        const keys = this.pointedAt.get(op.d) ?? new Set<string>();
        this.pointedAt.set(op.d, keys.add(op.p));
        const stored = this.entries.get(entryKey('manifest', op.d));
        const tag = tagOfPointer(op.p);
        if (stored && tag !== null) this.assignTag(entryKey('manifest', op.d), tag);
        return;
      }
      case 'del': {
        const entry = this.entries.get(op.k);
        if (!entry) return;
        this.bytes -= entry.size;
        this.entries.delete(op.k);
        for (const tag of entry.tags) this.tagOwners.delete(tag);
        return;
      }
    }
  }

  private hasPointers(tag: string): boolean {
    for (const p of this.pointers.keys()) if (p.startsWith(`${tag}|`)) return true;
    return false;
  }

  /** A tag points at one manifest: moving it removes it from the previous one. */
  private assignTag(key: string, tag: string): void {
    const previous = this.tagOwners.get(tag);
    if (previous !== undefined && previous !== key) {
      const old = this.entries.get(previous);
      if (old) old.tags = old.tags.filter((t) => t !== tag);
    }
    this.tagOwners.set(tag, key);
    const entry = this.entries.get(key)!;
    if (!entry.tags.includes(tag)) entry.tags.push(tag);
  }

  private sortByLastAccess(): void {
    const sorted = [...this.entries].sort(([, a], [, b]) => a.lastAccess - b.lastAccess);
    this.entries.clear();
    for (const [key, entry] of sorted) this.entries.set(key, entry);
  }

  /** Rewrites the journal as one put per live entry, in LRU order, then renames it into place. */
  private async compact(): Promise<void> {
    const tmp = `${this.file}.${crypto.randomBytes(6).toString('hex')}.tmp`;
    const lines = [...this.entries.values()].map((e) => JSON.stringify({ op: 'put', e } satisfies IndexOp));
    for (const [p, ptr] of this.pointers) {
      if (!this.entries.has(entryKey('manifest', ptr.digest))) {
        this.pointers.delete(p); // its manifest is gone: nothing to serve from it
        this.pointedAt.get(ptr.digest)?.delete(p);
        continue;
      }
      lines.push(JSON.stringify({ op: 'ptr', p, d: ptr.digest, t: ptr.checkedAt } satisfies IndexOp));
    }
    const out = await fs.open(tmp, 'w', 0o600);
    try {
      await out.writeFile(lines.length > 0 ? lines.join('\n') + '\n' : '');
      await out.sync();
    } finally {
      await out.close();
    }
    await fs.rename(tmp, this.file);
    await this.handle?.close();
    this.handle = await fs.open(this.file, 'a', 0o600);
    this.journalLines = lines.length;
  }

  private append(ops: IndexOp[], durable: boolean): Promise<void> {
    const text = ops.length > 0 ? ops.map((op) => JSON.stringify(op)).join('\n') + '\n' : '';
    // Group commit: lines that arrive while an earlier write is in flight join one batch, written with
    // one appendFile and (if any of them must be durable) one datasync. Without it every commit waited
    // for its own sync behind all earlier ones, and under many concurrent MISSes commits fell seconds
    // behind, each pending fill holding its spool file open meanwhile.
    const open = this.openBatch;
    if (open) {
      open.texts.push(text);
      open.lines += ops.length;
      open.durable ||= durable;
      return open.written;
    }
    const batch: Batch = { texts: [text], lines: ops.length, durable, written: Promise.resolve() };
    // Serialised: batches never interleave, and each waits for those before it. A failed write (disk
    // full) fails only the callers whose lines were in its batch.
    batch.written = this.appending
      // the previous batch's failure was its caller's to hear; this batch still goes.
      .catch(() => undefined)
      .then(async () => {
        this.openBatch = null; // appends from now on form the next batch, which waits for this one
        if (!this.handle) return;
        try {
          if (this.behind) {
            await this.compact(); // memory already holds this batch's lines: the rewrite carries them
            this.behind = false;
            return;
          }
          await this.handle.appendFile(batch.texts.join(''));
          if (batch.durable) await this.handle.datasync();
        } catch (err) {
          this.behind = true;
          throw err;
        }
        this.journalLines += batch.lines;
        if (this.journalLines > this.entries.size + this.compactSlack) await this.compact().catch(() => undefined); // retried at the next append
      });
    this.openBatch = batch;
    this.appending = batch.written;
    return batch.written;
  }
}
