// Keeps the store inside CACHE_MAX_SIZE and CACHE_INACTIVE: least-recently-used entries go first, down
// to a low-water mark so that eviction does not run on every commit; a periodic sweep removes entries
// unused for CACHE_INACTIVE; before a fill, room is made on the disk itself when it is short.
// Content being filled is not in the index yet, so it is never evicted; a read in progress keeps its
// open file after the name is gone.
import { EventEmitter } from 'node:events';
import type { Logger } from '../telemetry/log.js';
import type { ContentStore } from './content-store.js';
import type { Entry } from './entry-index.js';

export interface CacheBudget {
  maxBytes: number;
  inactiveMs: number;
}

const LOW_WATER = 0.9;
const MAX_SWEEP_INTERVAL_MS = 60 * 60 * 1000;

export type EvictionReason = 'size' | 'inactive' | 'disk';

/** What a fill coordinator needs of eviction: the bound, room on disk before a fill, the bound enforced after a commit. */
export type Room = Pick<Evictor, 'fits' | 'makeRoom' | 'afterCommit'>;

/** Emits 'evicted' (reason, entries, bytes) after each run that removed something. */
export class Evictor extends EventEmitter {
  private running: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: ContentStore,
    private readonly budget: CacheBudget,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Whether a blob of this size can be cached at all. */
  fits(size: number): boolean {
    return size <= this.budget.maxBytes;
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

  /** After a commit (the fill coordinator calls it): evicts when the store has passed the bound. */
  afterCommit(): void {
    if (this.store.index.totalBytes > this.budget.maxBytes) void this.enforce();
  }

  /** Least recently used first, down to the low-water mark, once the total passes the bound. */
  enforce(): Promise<void> {
    return this.serialised(async () => {
      const index = this.store.index;
      if (index.totalBytes <= this.budget.maxBytes) return;
      const target = Math.floor(this.budget.maxBytes * LOW_WATER);
      await this.evictWhile(
        () => index.totalBytes > target,
        () => true,
        'size',
      );
    });
  }

  /** Removes entries not used for CACHE_INACTIVE. */
  sweep(now = Date.now()): Promise<void> {
    return this.serialised(async () => {
      const cutoff = now - this.budget.inactiveMs;
      await this.evictWhile(
        () => true,
        (e) => e.lastAccess < cutoff,
        'inactive',
      );
    });
  }

  /**
   * Before a fill of `bytes`: if the disk itself is short (it may hold more than the cache, or the bound
   * may be larger than the disk), evict until there is room. False when there still is not; when even
   * evicting everything the index holds could not make room, nothing is evicted at all.
   */
  async makeRoom(bytes: number): Promise<boolean> {
    const space = await this.store.space();
    const needed = bytes + space.reserve;
    if (space.free >= needed) return true;
    let enough = false;
    await this.serialised(async () => {
      const index = this.store.index;
      let available = (await this.store.space()).free; // again: an eviction queued before this one may have run
      // The index's total is the most eviction can free (less where a blob and a manifest share a file).
      if (available + index.totalBytes < needed) {
        this.log.info(
          { bytes, freeBytes: available, storedBytes: index.totalBytes, reserveBytes: needed - bytes },
          'no room on disk even after evicting everything; nothing evicted',
        );
        return;
      }
      await this.evictWhile(
        () => available < needed && index.size > 0,
        () => true,
        'disk',
        async () => {
          available = (await this.store.space()).free;
        },
      );
      enough = available >= needed;
    });
    return enough;
  }

  /** For /readyz: the disk has less free space than the reserve kept for the index and the OS. */
  diskFull(): Promise<boolean> {
    return diskFull(this.store);
  }

  private async evictWhile(more: () => boolean, eligible: (e: Entry) => boolean, reason: EvictionReason, after?: () => Promise<void>): Promise<void> {
    let count = 0;
    let bytes = 0;
    // Snapshot: removing while iterating the live Map would skip entries.
    for (const entry of [...this.store.index.oldestFirst()]) {
      if (!more()) break;
      if (!eligible(entry)) {
        if (reason === 'inactive') break; // oldest first: the rest are newer still
        continue;
      }
      try {
        await this.store.remove(entry.kind, entry.digest);
      } catch (err) {
        this.log.warn({ digest: entry.digest, error: (err as Error).message }, 'eviction failed');
        continue;
      }
      count++;
      bytes += entry.size;
      this.log.debug({ digest: entry.digest, kind: entry.kind, size: entry.size, reason }, 'evicted');
      await after?.();
    }
    if (count > 0) {
      this.emit('evicted', reason, count, bytes);
      this.log.info({ reason, entries: count, bytes, totalBytes: this.store.index.totalBytes, maxBytes: this.budget.maxBytes }, 'evicted');
    }
  }

  private serialised(task: () => Promise<void>): Promise<void> {
    const run = this.running.catch(() => undefined).then(task);
    this.running = run.catch((err: Error) => this.log.warn({ error: err.message }, 'eviction failed'));
    return this.running;
  }
}

/** The disk has less free space than the reserve the store keeps for its index and the OS. */
export async function diskFull(store: Pick<ContentStore, 'space'>): Promise<boolean> {
  const { free, reserve } = await store.space();
  return free < reserve;
}
