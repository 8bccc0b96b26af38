// A worker's FillTable (WORKERS > 1): one fill per origin and content across every worker. This worker's
// own requests share a map as in one process; the first request for a content asks the primary
// (fill-arbiter.ts), which answers lead (fetch, and report how the fill goes), follow (another worker's
// fill runs: read its spool file as it grows, moved on by the reports the primary relays), or look in the
// store. A leader reports its progress only while another worker follows (FILL.watch), and always once
// verified and once settled.
import type { ProcessChannel } from '../../ipc/process-channel.js';
import type { Fill, FillBytes } from '../fill.js';
import { fillKeyId, registerPending, type FillClaim, type FillKey, type FillLead, type FillTable, type PendingFill } from '../fill-table.js';
import { FollowedFill, reportedError } from './followed-fill.js';
import { FILL, type ClaimAnswer, type ClaimRequest, type FillProgress, type FillReading, type FillSettled, type FollowInfo } from './store-protocol.js';

/** A fill another worker writes, from the moment the primary named it until it settles. */
interface Followed {
  info: FollowInfo; // kept up to date by the reports, also while the spool is being opened
  settled: FillSettled | null;
  fill: FollowedFill | null;
  opened: Promise<Fill | null>;
}

// A request that fetches without being known to anyone (it may not join the fill that runs).
const UNREGISTERED: FillLead = { started: () => undefined, ended: () => undefined };

export class SharedFillTable implements FillTable {
  private readonly local = new Map<string, Promise<Fill | null>>();
  private readonly followed = new Map<number, Followed>(); // by the primary's fill id
  private readonly led = new Map<number, LeadReporter>();

  constructor(
    private readonly channel: ProcessChannel,
    /** Opens another worker's spool file by name; null when it is gone. */
    private readonly openSpool: (name: string) => Promise<FillBytes | null>,
  ) {
    channel.on<FillProgress>(FILL.progress, (p) => this.progressed(p));
    channel.on<FillSettled>(FILL.settled, (p) => this.settledElsewhere(p));
    channel.on<{ fill: number }>(FILL.watch, ({ fill }) => this.led.get(fill)?.watch());
    channel.on<FillReading>(FILL.readers, ({ fill, reading }) => this.led.get(fill)?.readElsewhere(reading));
  }

  get size(): number {
    return this.local.size;
  }

  /**
   * This worker's fills only (its own, and those it follows): another worker's is found by `claim`, which a
   * GET that misses makes anyway, so the primary is asked once per miss, not twice. (A HEAD then goes
   * upstream instead of being answered from another worker's verified, not yet committed fill.)
   */
  async running(key: FillKey): Promise<Fill | null> {
    return (await this.local.get(fillKeyId(key))) ?? null;
  }

  claim(key: FillKey, join: boolean): Promise<FillClaim> {
    const id = fillKeyId(key);
    const local = this.local.get(id);
    if (local && join) return Promise.resolve({ join: local });
    if (local) return Promise.resolve({ lead: UNREGISTERED });
    // This worker's other requests for it wait on this entry while the primary is asked.
    const pending = registerPending(this.local, id);
    return new Promise<FillClaim>((resolve) => {
      this.channel.call<ClaimAnswer>(FILL.claim, { key, join } satisfies ClaimRequest, (err, answer) => {
        if (err || !answer) {
          // No primary (it is gone, and this worker with it): serve the request on its own.
          pending.done(null);
          return resolve({ lead: UNREGISTERED });
        }
        switch (answer.kind) {
          case 'lead':
            return resolve({ lead: this.lead(pending, answer.fill) });
          case 'alone':
            return resolve({ lead: localLead(pending) }); // unknown to the primary; this worker's requests may join it
          case 'follow':
            void this.follow(answer.info).then(pending.done);
            return resolve({ join: pending.promise });
          case 'ended':
            pending.done(null);
            return resolve({ join: Promise.resolve(null) });
          case 'stored':
            pending.done(null);
            return resolve({ stored: true });
        }
      });
    });
  }

  /** Leads a fill the primary registered: reports it started (or not), its progress, how it settled. */
  private lead(pending: PendingFill, fillId: number): FillLead {
    return {
      started: (fill) => {
        pending.done(fill);
        const reporter = new LeadReporter(this.channel, fillId, fill);
        this.led.set(fillId, reporter);
        fill.once('settled', () => this.led.delete(fillId));
        this.channel.notify(FILL.started, { fill: fillId, spool: fill.spoolName, mediaType: fill.mediaType, expectedSize: fill.expectedSize });
      },
      ended: () => {
        pending.done(null);
        this.channel.notify(FILL.ended, { fill: fillId });
      },
    };
  }

  /**
   * Follows another worker's fill: known at once (the reports that come next are kept), readable once its
   * spool is open; null when the spool is gone already (committed or failed: look in the store).
   */
  private follow(info: FollowInfo): Promise<Fill | null> {
    const known = this.followed.get(info.fill);
    if (known) return known.opened;
    const followed: Followed = { info: { ...info }, settled: null, fill: null, opened: Promise.resolve(null) };
    this.followed.set(info.fill, followed);
    followed.opened = this.openSpool(info.spool).then(
      (bytes) => {
        if (!bytes || followed.settled?.error) {
          this.followed.delete(info.fill);
          // the followed fill is over; a close error adds nothing.
          void bytes?.close().catch(() => undefined);
          return null;
        }
        const fill = new FollowedFill(followed.info, bytes);
        followed.fill = fill;
        // The leader goes on for readers here too (an unread fill of unknown length is given up: fill.ts).
        fill.on('reading', (reading: boolean) => this.channel.notify(FILL.reading, { fill: info.fill, reading } satisfies FillReading));
        if (followed.settled) this.settle(fill, followed.settled);
        return fill;
      },
      () => {
        this.followed.delete(info.fill);
        return null;
      },
    );
    return followed.opened;
  }

  private progressed(p: FillProgress): void {
    const followed = this.followed.get(p.fill);
    if (!followed) return;
    if (followed.fill) followed.fill.advance(p.written, p.verified);
    else {
      followed.info.written = Math.max(followed.info.written, p.written);
      followed.info.verified ||= p.verified;
    }
  }

  private settledElsewhere(p: FillSettled): void {
    const followed = this.followed.get(p.fill);
    if (!followed) return;
    followed.settled = p;
    if (followed.fill) this.settle(followed.fill, p);
  }

  private settle(fill: FollowedFill, p: FillSettled): void {
    this.followed.delete(p.fill);
    fill.settle(p.written, p.error ? reportedError(p.error) : null);
  }
}

/** A lead that only this worker's requests know of. */
function localLead(pending: PendingFill): FillLead {
  return { started: (fill) => pending.done(fill), ended: () => pending.done(null) };
}

/**
 * Reports a led fill to the primary: its progress while another worker follows it (at most once per turn
 * of the event loop), the moment it is verified, and how it settled.
 */
class LeadReporter {
  private watched = false;
  private verifiedSent = false;
  private scheduled = false;

  constructor(
    private readonly channel: ProcessChannel,
    private readonly id: number,
    private readonly fill: Fill,
  ) {
    fill.on('progress', this.progressed);
    fill.once('settled', () => {
      fill.off('progress', this.progressed);
      const error = fill.error ? { reason: fill.error.reason, message: fill.error.message } : null;
      channel.notify(FILL.settled, { fill: id, written: fill.written, error } satisfies FillSettled);
    });
  }

  watch(): void {
    this.watched = true;
    this.fill.setReadElsewhere(true); // a follower's request is waiting for it
    this.report();
  }

  readElsewhere(reading: boolean): void {
    this.fill.setReadElsewhere(reading);
  }

  private readonly progressed = (): void => {
    if (this.fill.verified && !this.verifiedSent)
      this.report(); // followers may finish: at once
    else if (this.watched && !this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        if (!this.fill.settled) this.report();
      });
    }
  };

  private report(): void {
    this.verifiedSent ||= this.fill.verified;
    this.channel.notify(FILL.progress, { fill: this.id, written: this.fill.written, verified: this.fill.verified } satisfies FillProgress);
  }
}
