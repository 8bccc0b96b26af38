// Least-recently-used eviction, the one loop every bound runs: the directory's (local/disk-eviction.ts),
// the fleet's sweeper (s3/bucket-eviction.ts) and a replica's local tier (s3/local-tier.ts). Candidates
// come oldest first; each goes for the reason `reasonOf` gives, and the walk stops at the first it gives
// none (the rest are newer still, or the target is reached). A bound once passed is enforced down to a
// low-water mark, so that eviction does not run again on every commit.
import type { Logger } from '../telemetry/log.js';
import { errorMessage } from '../telemetry/error-message.js';

export type EvictionReason = 'size' | 'inactive' | 'disk';

/** What a bound that was passed is enforced down to. */
export function lowWater(maxBytes: number): number {
  return Math.floor(maxBytes * 0.9);
}

/** What is evicted: an entry, or a local copy of content. */
export interface EvictionCandidate {
  digest: string;
  size: number;
  kind?: string;
  lastUse?: number; // where it is not the entry's own lastAccess (the fleet's merged access times)
}

/** Entries and bytes evicted, by reason (a reason with none is absent). */
export type EvictionTally = Partial<Record<EvictionReason, { entries: number; bytes: number }>>;

export interface EvictionRun {
  /** After each candidate evicted (e.g. the disk's free space read again); a throw ends the run. */
  after?: () => Promise<void>;
  /** What each debug line says was done. */
  what?: string;
}

/**
 * Evicts `candidates` (oldest first; a snapshot, not a live view) while `reasonOf` gives a reason. A
 * candidate that cannot be evicted is logged and passed over.
 */
export async function evictOldestFirst<C extends EvictionCandidate>(
  candidates: Iterable<C>,
  reasonOf: (candidate: C) => EvictionReason | null,
  evict: (candidate: C) => Promise<void>,
  log: Logger,
  { after, what = 'evicted' }: EvictionRun = {},
): Promise<EvictionTally> {
  const tally: EvictionTally = {};
  for (const candidate of candidates) {
    const reason = reasonOf(candidate);
    if (reason === null) break;
    const { digest, kind, size, lastUse } = candidate;
    try {
      await evict(candidate);
    } catch (err) {
      log.warn({ digest, error: errorMessage(err) }, 'eviction failed');
      continue;
    }
    const counted = (tally[reason] ??= { entries: 0, bytes: 0 });
    counted.entries++;
    counted.bytes += size;
    log.debug({ digest, kind, size, lastUse, reason }, what);
    await after?.();
  }
  return tally;
}
