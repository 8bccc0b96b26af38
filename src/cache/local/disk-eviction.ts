// Keeps a directory store inside CACHE_MAX_SIZE and CACHE_INACTIVE: least-recently-used entries go first
// (lru-eviction.ts), down to the low-water mark once the bound is passed; a periodic sweep removes entries
// unused for CACHE_INACTIVE; before a fill, room is made on the disk itself when it is short (room.ts
// asks). Content being filled is not in the index yet, so it is never evicted; a read in progress keeps
// its open file after the name is gone.
import { EventEmitter } from 'node:events';
import type { Logger } from '../../telemetry/log.js';
import type { ContentStore } from '../content-store.js';
import type { Entry } from '../entry-index.js';
import { evictOldestFirst, lowWater, type EvictionReason } from '../lru-eviction.js';

export interface CacheBudget {
  maxBytes: number;
  inactiveMs: number;
}

const MAX_SWEEP_INTERVAL_MS = 60 * 60 * 1000;

/** Emits 'evicted' (reason, entries, bytes) after each run that removed something. */
export class DiskEvictor extends EventEmitter {
  private running: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: ContentStore,
    private readonly budget: CacheBudget,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Sweeps on a timer (and enforces the bound once: CACHE_MAX_SIZE may have shrunk since the last run). */
  start(): void {
    const every = Math.min(MAX_SWEEP_INTERVAL_MS, Math.max(1000, Math.floor(this.budget.inactiveMs / 10)));
    this.timer = setInterval(() => void this.sweep(), every).unref();
    void this.enforce();
    void this.sweep();
  }

  stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    return this.running;
  }

  /** After a commit (the fill coordinator calls it, through the store's Room): evicts when the store has passed the bound. */
  afterCommit(): void {
    if (this.store.index.totalBytes > this.budget.maxBytes) void this.enforce();
  }

  /** Least recently used first, down to the low-water mark, once the total passes the bound. */
  enforce(): Promise<void> {
    return this.serialised(async () => {
      const index = this.store.index;
      if (index.totalBytes <= this.budget.maxBytes) return;
      const target = lowWater(this.budget.maxBytes);
      await this.evict(() => (index.totalBytes > target ? 'size' : null));
    });
  }

  /** Removes entries not used for CACHE_INACTIVE. */
  sweep(now = Date.now()): Promise<void> {
    return this.serialised(async () => {
      const cutoff = now - this.budget.inactiveMs;
      await this.evict((e) => (e.lastAccess < cutoff ? 'inactive' : null));
    });
  }

  /**
   * The disk is short of `bytes` beyond its reserve (it may hold more than the cache, or the bound may be
   * larger than the disk): evicts until there is room. False when there still is not; when even evicting
   * everything the index holds could not make room, nothing is evicted at all.
   */
  async evictFor(bytes: number): Promise<boolean> {
    let enough = false;
    await this.serialised(async () => {
      const index = this.store.index;
      const space = await this.store.space(); // again: an eviction queued before this one may have run
      const needed = bytes + space.reserve;
      let available = space.free;
      // The index's total is the most eviction can free (less where a blob and a manifest share a file).
      if (available + index.totalBytes < needed) {
        this.log.info(
          { bytes, freeBytes: available, storedBytes: index.totalBytes, reserveBytes: needed - bytes },
          'no room on disk even after evicting everything; nothing evicted',
        );
        return;
      }
      await this.evict(
        () => (available < needed && index.size > 0 ? 'disk' : null),
        async () => {
          available = (await this.store.space()).free;
        },
      );
      enough = available >= needed;
    });
    return enough;
  }

  /** Oldest first while `reasonOf` gives a reason (a run has one); `after` each removal. */
  private async evict(reasonOf: (e: Entry) => EvictionReason | null, after?: () => Promise<void>): Promise<void> {
    // Snapshot: removing while iterating the live Map would skip entries.
    const tally = await evictOldestFirst(
      [...this.store.index.oldestFirst()],
      reasonOf,
      (e) => this.store.remove(e.kind, e.digest).then(() => undefined),
      this.log,
      {
        after,
      },
    );
    for (const [reason, { entries, bytes }] of Object.entries(tally)) {
      this.emit('evicted', reason, entries, bytes);
      this.log.info({ reason, entries, bytes, totalBytes: this.store.index.totalBytes, maxBytes: this.budget.maxBytes }, 'evicted');
    }
  }

  private serialised(task: () => Promise<void>): Promise<void> {
    // the previous run's failure was logged by it; this task still runs.
    const run = this.running.catch(() => undefined).then(task);
    this.running = run.catch((err: Error) => this.log.warn({ error: err.message }, 'eviction failed'));
    return this.running;
  }
}
