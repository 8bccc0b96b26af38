// How many bytes one fill may put in its spool, checked on every write (fill.ts), not once before the
// fill: an upstream that sends no Content-Length (chunked) could otherwise write until the disk is full.
// A fill of known size may hold that size (room was made for it before it started); one of unknown
// length may hold what the disk has free beyond the store's reserve, asked again (one statfs) each time
// it reaches what it was last allowed, and never more than its hard bound (CACHE_MAX_SIZE, or
// MANIFEST_MAX_SIZE for a manifest). Nothing is ever evicted for a fill of unknown length: a fill that
// would need it is dropped and its clients served from upstream (BYPASS).

export class FillBound {
  private constructor(
    private allowed: number,
    private readonly hard: number,
    private readonly hardReason: string,
    /** Free bytes beyond the reserve on the spool's disk now; null for a fill of known size. */
    private readonly headroom: (() => Promise<number>) | null,
  ) {}

  /** A fill whose size upstream announced: exactly that many bytes, no more. */
  static known(size: number): FillBound {
    return new FillBound(size, size, 'upstream sent more than its Content-Length', null);
  }

  /** A fill of unknown length: at most `hard` bytes, and at most what the disk has room for as it grows. */
  static growing(hard: number, hardReason: string, firstHeadroom: number, headroom: () => Promise<number>): FillBound {
    return new FillBound(Math.min(hard, Math.max(0, firstHeadroom)), hard, hardReason, headroom);
  }

  /** null when the spool may hold `written + more` bytes; otherwise why not. */
  async admit(written: number, more: number): Promise<string | null> {
    const total = written + more;
    if (total <= this.allowed) return null;
    if (total > this.hard) return this.hardReason;
    if (!this.headroom) return this.hardReason;
    // What is in the spool is on the disk already: the allowance is that plus what is free now.
    const free = await this.headroom().catch(() => 0);
    this.allowed = Math.min(this.hard, written + Math.max(0, free));
    return total <= this.allowed ? null : 'not enough free disk space';
  }
}
