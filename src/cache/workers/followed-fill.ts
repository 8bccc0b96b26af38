// A fill that another process of the same store (a worker) is writing, followed here: its spool file is
// read by name, and what the writer reports (bytes written, verified, committed or failed), relayed by the
// primary, moves it on. Readers are the same FillReaders as for a local fill, under the same rule: the
// last byte waits for 'verified', and a failure before it cuts them.
import { Fill, FillError, type FillBytes } from '../fill.js';
import type { FollowInfo } from './store-protocol.js';

export class FollowedFill extends Fill {
  constructor(info: FollowInfo, spool: FillBytes) {
    super(info.kind, info.digest, info.mediaType, info.expectedSize, spool);
    this.written = info.written;
    this.verified = info.verified;
  }

  /** The writer reports more bytes in the spool (written only grows), or that they are verified. */
  advance(written: number, verified: boolean): void {
    if (this.settled) return;
    this.written = Math.max(this.written, written);
    this.verified ||= verified;
    this.emit('progress');
  }

  /** The writer committed the content (error null: every byte verified) or failed. */
  settle(written: number, error: FillError | null): void {
    if (this.settled) return;
    if (error) {
      this.state = 'failed';
      this.error = error;
    } else {
      this.advance(written, true);
      this.state = 'committed';
    }
    this.emit('settled');
    this.closeIfIdle();
  }
}

/** The FillError a follower sees for a report of failure. */
export function reportedError(error: { reason: FillError['reason']; message: string }): FillError {
  return new FillError(error.message, error.reason);
}
