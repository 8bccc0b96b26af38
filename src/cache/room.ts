// Room for content, one way for every store: content larger than CACHE_MAX_SIZE is never stored; before a
// fill, the disk its spool goes to needs the fill's size free beyond the store's reserve (one statfs), and
// when it is short the store's eviction may make more (the directory's evictor; a worker asks its
// primary's; a bucket's replica has nothing of its own to evict there); after a commit the bound is
// enforced by whoever enforces it (the directory's evictor, the fleet's sweeper; a worker's primary does
// it after every commit it makes). The fill coordinator asks this before and after each fill.
import type { ContentStore } from './content-store.js';

/** What differs between stores: who makes room when the disk is short, and who hears of a commit. */
export interface RoomKeeper {
  /** The disk has less than `bytes` free beyond its reserve: evict until it has; false when that cannot be done. */
  evictFor?(bytes: number): Promise<boolean>;
  /** After a commit: enforce the bound when the store is past it. */
  afterCommit?(): void;
}

export class Room {
  constructor(
    private readonly store: Pick<ContentStore, 'space'>,
    /** CACHE_MAX_SIZE: the bound on what the store holds, and so on any one blob. */
    readonly maxBytes: number,
    private readonly keeper: RoomKeeper = {},
  ) {}

  /** Whether content of this size can be stored at all. */
  fits(size: number): boolean {
    return size <= this.maxBytes;
  }

  /** Before a fill of `bytes`: whether the disk has room for it (made by eviction when it is short). */
  async makeRoom(bytes: number): Promise<boolean> {
    const { free, reserve } = await this.store.space();
    if (free >= bytes + reserve) return true;
    return this.keeper.evictFor ? this.keeper.evictFor(bytes) : false;
  }

  /**
   * Free bytes beyond the reserve on the disk a spool goes to, evicting nothing: what a fill of unknown
   * length may still write (fill-bound.ts).
   */
  async headroom(): Promise<number> {
    const { free, reserve } = await this.store.space();
    return free - reserve;
  }

  /** After a commit (the fill coordinator says so): the bound is enforced where the store is past it. */
  afterCommit(): void {
    this.keeper.afterCommit?.();
  }

  /** For /readyz: the disk has at least the reserve free (false too when it cannot be asked). */
  async hasSpace(): Promise<boolean> {
    try {
      const { free, reserve } = await this.store.space();
      return free >= reserve;
    } catch {
      return false; // statfs failed: nothing can be stored there either
    }
  }
}
