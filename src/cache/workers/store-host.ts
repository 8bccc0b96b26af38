// The primary's side of the store (WORKERS > 1): it owns CACHE_DIR's LocalStore (the index and its
// journal), the Evictor (CACHE_MAX_SIZE enforced once, for every worker) and the FillArbiter, and answers
// the workers' stores (worker-store.ts, shared-fill-table.ts) over their process channels. Every change to
// the index is reported to every worker as it is made, so their replicas answer as the index does; a
// commit is the primary's (rename into place, then the index), so a worker that dies never leaves half of
// one behind, and its spool files are removed when it is gone.
import type { Logger } from '../../telemetry/log.js';
import type { ProcessChannel } from '../../ipc/process-channel.js';
import type { ContentKind, ContentStore, Provenance, StoredContent } from '../content-store.js';
import { entryKey, type Access, type Entry, type EntryIndex } from '../entry-index.js';
import type { Evictor } from '../eviction.js';
import { FillArbiter } from './fill-arbiter.js';
import { STORE, type CommitRequest, type IndexCall, type Use } from './store-protocol.js';

/** What a worker's spool files are named with (content-files.ts: fill-<prefix><uuid>). */
export function spoolPrefixOf(worker: number): string {
  return `w${worker}-`;
}

/** The primary's store as the host needs it: a directory store that takes spool files by name (local/local-store.ts). */
export interface HostedStore extends Omit<ContentStore, 'index' | 'use'> {
  readonly index: EntryIndex;
  use(kind: ContentKind, digest: string, from: Provenance, at?: number): void;
  commitSpooled(name: string, content: StoredContent, from: Provenance): Promise<{ entry: Entry; ref: string | null } | null>;
  discardSpooled(prefix: string): Promise<void>;
}

export class StoreHost {
  readonly fills: FillArbiter;
  private readonly subscribed = new Map<number, ProcessChannel>(); // workers following the index
  private readonly committing = new Map<string, Promise<unknown>>(); // kind/digest -> commit in progress

  constructor(
    private readonly store: HostedStore,
    private readonly evictor: Evictor,
    private readonly log: Logger,
  ) {
    this.fills = new FillArbiter((kind, digest) => store.index.get(kind, digest) !== undefined);
    store.index.observe((ops) => {
      for (const channel of this.subscribed.values()) channel.notify(STORE.ops, ops);
    });
  }

  /** Answers a worker's store on its channel. */
  attach(worker: number, channel: ProcessChannel): void {
    const { store } = this;
    // Answered in the same tick as it is taken: every later change reaches the worker after it.
    channel.handle(STORE.snapshot, () => {
      this.subscribed.set(worker, channel);
      return store.index.snapshot();
    });
    channel.handle<{ kind: ContentKind; digest: string }>(STORE.lookup, ({ kind, digest }) => this.lookup(kind, digest));
    channel.handle<CommitRequest>(STORE.commit, (request) => this.commit(request));
    channel.handle<{ kind: ContentKind; digest: string }>(STORE.remove, async ({ kind, digest }) => (await store.remove(kind, digest)) ?? null);
    channel.handle<IndexCall>(STORE.index, (call) => this.callIndex(call));
    channel.handle<{ bytes: number }>(STORE.makeRoom, ({ bytes }) => this.evictor.makeRoom(bytes));
    channel.handle(STORE.removeUnreferenced, () => store.removeUnreferenced());
    channel.on<Use[]>(STORE.use, (uses) => {
      for (const use of uses) store.use(use.kind, use.digest, use.from, use.at);
    });
    this.fills.attach(worker, channel);
  }

  /** A worker exited: its fills fail, its spool files go (its readers elsewhere keep theirs open). */
  async detach(worker: number): Promise<void> {
    this.subscribed.delete(worker);
    this.fills.workerGone(worker);
    await this.store
      .discardSpooled(spoolPrefixOf(worker))
      .catch((err: Error) => this.log.warn({ error: err.message }, "removing a dead worker's spool files failed"));
  }

  private async lookup(kind: ContentKind, digest: string): Promise<StoredContent | null> {
    await this.committing.get(entryKey(kind, digest))?.catch(() => undefined);
    return this.store.lookup(kind, digest);
  }

  private async commit({ spool, content, from }: CommitRequest): Promise<{ entry: Entry; ref: string | null } | null> {
    const key = entryKey(content.kind, content.digest);
    const committing = this.store.commitSpooled(spool, content, from);
    this.committing.set(key, committing);
    try {
      return await committing;
    } finally {
      if (this.committing.get(key) === committing) this.committing.delete(key);
      this.evictor.afterCommit();
    }
  }

  private callIndex({ method, args }: IndexCall): Promise<unknown> {
    const index = this.store.index;
    switch (method) {
      case 'untag':
        return index.untag(args[0] as string);
      case 'setAccess':
        return index.setAccess(args[0] as ContentKind, args[1] as string, args[2] as Access);
      case 'setPointer':
        return index.setPointer(args[0] as string, args[1] as string, args[2] as number);
      case 'delete':
        return index.delete(args[0] as ContentKind, args[1] as string).then((entry) => entry ?? null);
    }
  }
}
