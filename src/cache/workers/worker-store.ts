// A worker's ContentStore (WORKERS > 1): the same directory as the primary's LocalStore, without owning it.
// Content and spool files are read and written here, by path (the bytes never cross the process channel);
// everything the index says is the primary's (store-host.ts): a replica of its index answers reads at
// once and is kept up to date by the changes it reports; writes, commits, removals and room on disk are
// asked of it. Reads of stored content (access times, repositories) go to it in batches.
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import type { ProcessChannel } from '../../ipc/process-channel.js';
import { CommitsInProgress } from '../commits-in-progress.js';
import { commitSmall, contentPath, createSpool, diskSpace, followSpool, newSpoolName, openContent, spoolPath } from '../content-files.js';
import type { Committed, ContentFile, ContentIndex, ContentKind, ContentStore, DiskSpace, Provenance, Spool, StoredContent } from '../content-store.js';
import { EntryIndex, entryKey, type Access, type Entry, type TagPointer } from '../entry-index.js';
import type { FillBytes } from '../fill.js';
import { ReplicaIndex } from '../replica-index.js';
import { STORE, type CommitRequest, type IndexCall, type IndexOp, type Use } from './store-protocol.js';

// Access times matter only to eviction, in the primary: a second late is fine, a message per HIT is not.
const USE_FLUSH_MS = 1000;

export interface WorkerStoreOptions {
  dir: string; // CACHE_DIR
  spoolPrefix: string; // marks this worker's spool files (removed by the primary if it dies)
}

export class WorkerStore extends EventEmitter implements ContentStore {
  readonly index: ContentIndex;
  private readonly commits = new CommitsInProgress(); // this worker's small writes
  private readonly uses = new Map<string, Use>();
  private flushTimer: NodeJS.Timeout | null = null;

  private constructor(
    private readonly channel: ProcessChannel,
    /** The primary's index as last reported: for mirror and admin listings too. */
    readonly replica: EntryIndex,
    private readonly options: WorkerStoreOptions,
  ) {
    super();
    this.index = new WorkerIndex(replica, channel);
  }

  /** Gets the primary's index and follows its changes from then on. */
  static connect(channel: ProcessChannel, options: WorkerStoreOptions): Promise<WorkerStore> {
    let store: WorkerStore | null = null;
    // Registered first: changes reported right after the snapshot must not be missed.
    channel.on<IndexOp[]>(STORE.ops, (ops) => store?.replica.applyOps(ops));
    return new Promise((resolve, reject) => {
      channel.call<IndexOp[]>(STORE.snapshot, null, (err, ops) => {
        if (err || !ops) return reject(err ?? new Error('no index snapshot'));
        store = new WorkerStore(channel, EntryIndex.replica(ops), options);
        resolve(store);
      });
    });
  }

  /** The replica first; else the primary, which waits for a commit of it in progress (another worker's fill). */
  async lookup(kind: ContentKind, digest: string): Promise<Entry | null> {
    if (this.commits.pending.size > 0) await this.commits.settled(kind, digest);
    // Not here yet: the primary's, once a commit of it there is over (its op reaches the replica first).
    return this.replica.get(kind, digest) ?? (await this.channel.request<Entry | null>(STORE.lookup, { kind, digest }));
  }

  /** The replica's: every pointer set in the tree reaches it with the index's ops. */
  lookupPointer(key: string): Promise<TagPointer | undefined> {
    return Promise.resolve(this.replica.pointer(key));
  }

  open(content: StoredContent): Promise<ContentFile | null> {
    return openContent(this.options.dir, content.digest);
  }

  readAll(content: StoredContent): Promise<Buffer | null> {
    // gone (evicted, removed): null is the answer, the caller refetches.
    return fs.readFile(this.where(content.digest)).catch(() => null);
  }

  where(digest: string): string {
    return contentPath(this.options.dir, digest);
  }

  beginSpool(): Promise<Spool> {
    // the content does not matter: a file is named by its fill
    return createSpool(this.options.dir, newSpoolName(this.options.spoolPrefix));
  }

  /** Opens another worker's spool file to follow its fill; null when it is gone. */
  followSpool(name: string): Promise<FillBytes | null> {
    return followSpool(this.options.dir, name);
  }

  /** The primary moves the verified, synced spool file into place and records it; this worker tells its listeners. */
  async commit(spool: Spool, content: StoredContent, from: Provenance): Promise<void> {
    await this.commitSpooled(spool.name, content, from);
  }

  async discard(spool: Spool): Promise<void> {
    await fs.rm(spoolPath(this.options.dir, spool.name), { force: true });
  }

  putVerified(content: StoredContent, data: Buffer, from: Provenance): Promise<void> {
    const name = newSpoolName(this.options.spoolPrefix);
    return this.commits.run(content.kind, content.digest, () =>
      commitSmall(this.options.dir, name, data, () => this.commitSpooled(name, { ...content, size: data.length }, from)),
    );
  }

  async remove(kind: ContentKind, digest: string): Promise<Entry | undefined> {
    return (await this.channel.request<Entry | null>(STORE.remove, { kind, digest })) ?? undefined;
  }

  /** Sent in batches; at once when it names a repository or tag the entry does not list yet. */
  use(kind: ContentKind, digest: string, from: Provenance): void {
    this.uses.set(`${entryKey(kind, digest)}|${from.ref}|${from.tag}`, { kind, digest, at: Date.now(), from });
    const entry = this.replica.get(kind, digest);
    const news = entry !== undefined && ((from.ref !== null && !entry.refs.includes(from.ref)) || (from.tag !== null && !entry.tags.includes(from.tag)));
    if (news) this.flushUses();
    else this.flushTimer ??= setTimeout(() => this.flushUses(), USE_FLUSH_MS).unref();
  }

  space(): Promise<DiskSpace> {
    return diskSpace(this.options.dir);
  }

  /** Eviction is the primary's: asks it to make `bytes` of room on the disk (false: it could not, or is gone). */
  evictFor(bytes: number): Promise<boolean> {
    return this.channel.request<boolean>(STORE.makeRoom, { bytes }).catch(() => false); // no primary: no room
  }

  /** The stored bytes are the only ones: the caller drops the entry. */
  dropCorruptCopy(): Promise<boolean> {
    return Promise.resolve(false);
  }

  /** The primary's index is the directory's record, and every change to it reaches this replica as it is made. */
  syncIndex(): Promise<void> {
    return Promise.resolve();
  }

  removeUnreferenced(): Promise<{ files: number; bytes: number }> {
    return this.channel.request(STORE.removeUnreferenced);
  }

  async close(): Promise<void> {
    this.flushUses();
  }

  private async commitSpooled(spool: string, content: StoredContent, from: Provenance): Promise<void> {
    const committed = await this.channel.request<Committed | null>(STORE.commit, { spool, content, from } satisfies CommitRequest);
    if (committed) this.emit('committed', committed.entry, committed.ref);
  }

  private flushUses(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.uses.size === 0) return;
    this.channel.notify(STORE.use, [...this.uses.values()]);
    this.uses.clear();
  }
}

/** The index as a worker sees it: reads from the replica, changes made by the primary (and reported back). */
class WorkerIndex extends ReplicaIndex {
  constructor(
    replica: EntryIndex,
    private readonly channel: ProcessChannel,
  ) {
    super(replica);
  }

  async untag(tag: string): Promise<void> {
    await this.call({ method: 'untag', args: [tag] });
  }

  async setAccess(kind: ContentKind, digest: string, access: Access): Promise<void> {
    await this.call({ method: 'setAccess', args: [kind, digest, access] });
  }

  async setPointer(key: string, digest: string, checkedAt = Date.now()): Promise<void> {
    await this.call({ method: 'setPointer', args: [key, digest, checkedAt] });
  }

  async delete(kind: ContentKind, digest: string): Promise<Entry | undefined> {
    return ((await this.call({ method: 'delete', args: [kind, digest] })) as Entry | null) ?? undefined;
  }

  private call(call: IndexCall): Promise<unknown> {
    return this.channel.request(STORE.index, call);
  }
}
