// Keeps the store inside CACHE_MAX_SIZE and CACHE_INACTIVE: least-recently-used entries go first, down
// to a low-water mark so that eviction does not run on every commit; a periodic sweep removes entries
// unused for CACHE_INACTIVE; before a fill, room is made on the disk itself when it is short.
// Content being filled is not in the index yet, so it is never evicted; a read in progress keeps its
// open file after the name is gone.
import fs from 'node:fs/promises';
import { metrics } from '../admin/metrics.js';
import type { Logger } from '../log.js';
import type { ContentStore } from './content-store.js';
import type { Entry } from './entry-index.js';

export interface CacheBudget {
  maxBytes: number;
  inactiveMs: number;
}

const LOW_WATER = 0.9;
const MAX_SWEEP_INTERVAL_MS = 60 * 60 * 1000;
// The index and the OS need some room too: 64 MiB, or 2% of a small filesystem.
const DISK_RESERVE_BYTES = 64 * 1024 * 1024;
const DISK_RESERVE_SHARE = 0.02;

type Reason = 'size' | 'inactive' | 'disk';

export class Evictor {
  private running: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly store: ContentStore,
    private readonly budget: CacheBudget,
    private readonly log: Logger,
  ) {}

  /** Whether a blob of this size can be cached at all. */
  fits(size: number): boolean {
    return size <= this.budget.maxBytes;
  }

  /** Evicts after every commit that pushed the store past the bound; sweeps on a timer. */
  start(): void {
    this.store.on('committed', () => {
      if (this.store.index.totalBytes > this.budget.maxBytes) void this.enforce();
    });
    const every = Math.min(MAX_SWEEP_INTERVAL_MS, Math.max(1000, Math.floor(this.budget.inactiveMs / 10)));
    this.timer = setInterval(() => void this.sweep(), every).unref();
    void this.enforce(); // CACHE_MAX_SIZE may have shrunk since the last run
    void this.sweep();
  }

  stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    return this.running;
  }

  /** Least recently used first, down to the low-water mark, once the total passes the bound. */
  enforce(): Promise<void> {
    return this.serialised(async () => {
      const index = this.store.index;
      if (index.totalBytes <= this.budget.maxBytes) return;
      const target = Math.floor(this.budget.maxBytes * LOW_WATER);
      await this.evictWhile(() => index.totalBytes > target, () => true, 'size');
    });
  }

  /** Removes entries not used for CACHE_INACTIVE. */
  sweep(now = Date.now()): Promise<void> {
    return this.serialised(async () => {
      const cutoff = now - this.budget.inactiveMs;
      await this.evictWhile(() => true, (e) => e.lastAccess < cutoff, 'inactive');
    });
  }

  /**
   * Before a fill of `bytes`: if the disk itself is short (it may hold more than the cache, or the bound
   * may be larger than the disk), evict until there is room. False when there still is not.
   */
  async makeRoom(bytes: number): Promise<boolean> {
    const stats = await fs.statfs(this.store.dir);
    const free = async (): Promise<number> => {
      const s = await fs.statfs(this.store.dir);
      return s.bavail * s.bsize;
    };
    const needed = bytes + Math.min(DISK_RESERVE_BYTES, Math.floor(stats.blocks * stats.bsize * DISK_RESERVE_SHARE));
    if ((await free()) >= needed) return true;
    await this.serialised(async () => {
      let available = await free();
      const index = this.store.index;
      await this.evictWhile(
        () => available < needed && index.size > 0,
        () => true,
        'disk',
        async () => {
          available = await free();
        },
      );
    });
    return (await free()) >= needed;
  }

  private async evictWhile(more: () => boolean, eligible: (e: Entry) => boolean, reason: Reason, after?: () => Promise<void>): Promise<void> {
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
      metrics.evicted(reason, count);
      this.log.info({ reason, entries: count, bytes, totalBytes: this.store.index.totalBytes, maxBytes: this.budget.maxBytes }, 'evicted');
    }
  }

  private serialised(task: () => Promise<void>): Promise<void> {
    const run = this.running.catch(() => undefined).then(task);
    this.running = run.catch((err: Error) => this.log.warn({ error: err.message }, 'eviction failed'));
    return this.running;
  }
}
