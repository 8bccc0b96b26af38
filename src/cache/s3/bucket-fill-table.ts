// The FillTable of a replica in a fleet on one bucket: one upstream fetch per origin and content across
// every replica. This replica's own requests share a map as in one process (fill-table.ts); the first
// one asks the bucket for the fill's lock (fill-lock.ts). Holding it, it leads: the lease is renewed while
// the fill runs and released once it settled (after the commit). Another replica holding it: the request
// waits, polling the bucket, until the content is stored (then it is a HIT) or the lock is released or
// lapses, and then claims it again: the first to create the next generation leads (unless the content
// was stored meanwhile), the others go on waiting. Followers in other replicas wait for the commit rather than stream the leader's bytes: the
// bucket shows nothing of an upload before it is completed (docs/scale-out.md: what that costs).
import type { Fill } from '../fill.js';
import { fillKeyId, registerPending, type FillClaim, type FillKey, type FillLead, type FillTable, type PendingFill } from '../fill-table.js';
import type { FillLocks, Lease } from './fill-lock.js';

export interface BucketFillTableOptions {
  /** Whether the content is stored now (asks the bucket when this replica does not know it). */
  stored: (key: FillKey) => Promise<boolean>;
  /** How often a waiting request looks at the bucket again. */
  pollMs: number;
}

export class BucketFillTable implements FillTable {
  private readonly local = new Map<string, Promise<Fill | null>>();

  constructor(
    private readonly locks: FillLocks,
    private readonly options: BucketFillTableOptions,
  ) {}

  get size(): number {
    return this.local.size;
  }

  /** This replica's fills only: another replica's bytes are not readable before its commit. */
  async running(key: FillKey): Promise<Fill | null> {
    return (await this.local.get(fillKeyId(key))) ?? null;
  }

  async claim(key: FillKey, join: boolean): Promise<FillClaim> {
    const id = fillKeyId(key);
    const local = this.local.get(id);
    if (local && join) return { join: local };
    if (local) return { lead: { started: () => undefined, ended: () => undefined } }; // alone, known to nobody
    // This replica's other requests for it wait on this entry while the bucket is asked.
    const pending = registerPending(this.local, id);
    try {
      for (;;) {
        const claimed = await this.locks.acquire(key);
        if ('lease' in claimed) {
          // A generation after the first: an earlier fill may have committed since the caller looked in
          // the store (a request that waited here on this replica's own wait for another replica). Only
          // for a claim that would join: one that would not found the store no answer for it (content not
          // its to have, content-gate.ts) and must fetch, or it would be sent to look there again forever.
          if (join && claimed.lease.generation > 0 && (await this.storedOrLetGo(key, claimed.lease))) {
            // an unreleased lease lapses: the others wait a lease longer.
            await claimed.lease.release().catch(() => undefined);
            pending.done(null);
            return { stored: true };
          }
          return { lead: this.lead(pending, claimed.lease) };
        }
        // Not joining (its caller may not have the running fill's bytes): fetch alone, as in one process.
        if (!join) return { lead: { started: (fill) => pending.done(fill), ended: () => pending.done(null) } };
        if (await this.waitForOtherReplica(key)) {
          pending.done(null);
          return { stored: true };
        }
      }
    } catch (err) {
      pending.done(null); // the bucket failed: this replica's joiners look again, as does the caller
      throw err;
    }
  }

  /**
   * Whether the content is stored, asked while holding a lease nobody else knows of yet: when the bucket
   * fails to answer, the lease is let go before the error goes up, or it would be renewed for ever with no
   * fill behind it and every replica would wait on it (the soak found one live lock at rest).
   */
  private async storedOrLetGo(key: FillKey, lease: Lease): Promise<boolean> {
    try {
      return await this.options.stored(key);
    } catch (err) {
      void lease.release().catch(() => undefined); // unwritten (the bucket is failing), it lapses
      throw err;
    }
  }

  /** Until the content is stored (true) or the other replica's lock is released or lapsed (false). */
  private async waitForOtherReplica(key: FillKey): Promise<boolean> {
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, this.options.pollMs));
      if (await this.options.stored(key)) return true;
      if ((await this.locks.holder(key)) === null) return this.options.stored(key); // released after its commit, or lapsed
    }
  }

  /** Leads with the lease: renewed while the fill runs, released once it settled (committed or failed). */
  private lead(pending: PendingFill, lease: Lease): FillLead {
    const release = () => void lease.release().catch(() => undefined); // unreleased, it lapses: the others wait a lease longer
    return {
      started: (fill) => {
        pending.done(fill);
        if (fill.settled) release();
        else fill.once('settled', release);
      },
      ended: () => {
        pending.done(null);
        release();
      },
    };
  }
}
