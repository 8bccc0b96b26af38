// The primary's side of the store (WORKERS > 1): over the primary's backend for CACHE_DIR (its store with
// the index and its journal; its room, where CACHE_MAX_SIZE is enforced once for every worker) it keeps
// the FillArbiter and answers the workers' stores (worker-store.ts, shared-fill-table.ts) over their
// process channels. Every change to the index is reported to every worker as it is made, so their
// replicas answer as the index does; a commit is the primary's (rename into place, then the index), so a
// worker that dies never leaves half of one behind, and its spool files are removed when it is gone.
import type { Logger } from '../../telemetry/log.js';
import type { ProcessChannel } from '../../ipc/process-channel.js';
import type { Committed, ContentKind, ContentStore, Provenance, StoredContent } from '../content-store.js';
import type { Access, EntryIndex } from '../entry-index.js';
import type { Room } from '../room.js';
import { FillArbiter } from './fill-arbiter.js';
import { STORE, type CommitRequest, type IndexCall, type Use } from './store-protocol.js';

/** What a worker's spool files are named with (content-files.ts: fill-<prefix><uuid>). */
export function spoolPrefixOf(worker: number): string {
  return `w${worker}-`;
}

/**
 * The primary's store as the host needs it: a directory store that takes spool files by name, and whose
 * lookups wait for such a commit in progress (local/local-store.ts).
 */
export interface HostedStore extends Omit<ContentStore, 'index' | 'use'> {
  readonly index: EntryIndex;
  use(kind: ContentKind, digest: string, from: Provenance, at?: number): void;
  commitSpooled(name: string, content: StoredContent, from: Provenance): Promise<Committed | null>;
  discardSpooled(prefix: string): Promise<void>;
}

export class StoreHost {
  readonly fills: FillArbiter;
  private readonly subscribed = new Map<number, ProcessChannel>(); // workers following the index
  private readonly store: HostedStore;
  private readonly room: Room;

  constructor(
    backend: { store: HostedStore; room: Room }, // the primary's (local/local-backend.ts)
    private readonly log: Logger,
  ) {
    const store = (this.store = backend.store);
    this.room = backend.room;
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
    channel.handle<{ kind: ContentKind; digest: string }>(STORE.lookup, ({ kind, digest }) => store.lookup(kind, digest));
    channel.handle<CommitRequest>(STORE.commit, (request) => this.commit(request));
    channel.handle<{ kind: ContentKind; digest: string }>(STORE.remove, async ({ kind, digest }) => (await store.remove(kind, digest)) ?? null);
    channel.handle<IndexCall>(STORE.index, (call) => this.callIndex(call));
    channel.handle<{ bytes: number }>(STORE.makeRoom, ({ bytes }) => this.room.makeRoom(bytes));
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

  /** A worker's verified, synced spool file committed; the bound enforced after it, whatever became of it. */
  private async commit({ spool, content, from }: CommitRequest): Promise<Committed | null> {
    try {
      return await this.store.commitSpooled(spool, content, from);
    } finally {
      this.room.afterCommit();
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
