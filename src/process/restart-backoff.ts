// How long the primary waits before replacing a worker that exited (WORKERS > 1): 100 ms, doubling with
// every exit in a row of the same worker slot up to 10 s, back to 100 ms once a worker has run 30 s. A
// worker that cannot start (a broken disk, a bug at startup) then costs a log line every 10 s, not a
// fork loop; one that crashed after a while is replaced at once.
export interface BackoffPolicy {
  firstMs: number;
  maxMs: number;
  resetAfterMs: number; // a worker that ran this long starts the count again
}

export const RESTART_BACKOFF: BackoffPolicy = { firstMs: 100, maxMs: 10_000, resetAfterMs: 30_000 };

export class RestartBackoff {
  private readonly exits = new Map<number, number>(); // slot -> exits in a row

  constructor(private readonly policy: BackoffPolicy = RESTART_BACKOFF) {}

  /** The delay before replacing the worker of `slot`, which ran for `ranMs`. */
  next(slot: number, ranMs: number): number {
    const inARow = ranMs >= this.policy.resetAfterMs ? 0 : (this.exits.get(slot) ?? 0);
    this.exits.set(slot, inARow + 1);
    return Math.min(this.policy.maxMs, this.policy.firstMs * 2 ** inARow);
  }
}
