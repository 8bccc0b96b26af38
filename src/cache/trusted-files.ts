// VERIFY_ON_READ=once: the stored files this process hashed in full and found to be their digest, and what
// each file was then (ContentFile.identity: device, inode, size, mtime, ctime). A HIT of a file that is
// still what it was is served without hashing it; any change to the file (a write, a truncate, utimes,
// chmod, a link: each moves its ctime) makes the next read hash it in full again. What changes no
// timestamp (the disk's own bit rot, a write to the block device) is the scrubber's (scrubber.ts) and
// the client's digest check's to catch: decisions.md, "VERIFY_ON_READ=once". In memory, per process: a
// restart, or another worker, hashes a file once more.
import type { FileIdentity } from './content-store.js';

// Bounds memory (~200 B an entry); past it the oldest verifications are forgotten and hashed again.
const MAX_TRUSTED = 100_000;
// Timestamps may be as coarse as a scheduler tick: a change in the same tick as the file's last one would
// leave its ctime as it was. A file changed less than this before it was verified is not trusted yet
// (git's "racily clean" entries); the next read after that hashes it again and trusts it then.
const SETTLE_MS = 2_000;

export interface TrustedFilesOptions {
  max?: number;
  settleMs?: number;
}

export class TrustedFiles {
  private readonly verified = new Map<string, { key: string; at: number }>();
  private readonly max: number;
  private readonly settleMs: number;

  constructor(options: TrustedFilesOptions = {}) {
    this.max = options.max ?? MAX_TRUSTED;
    this.settleMs = options.settleMs ?? SETTLE_MS;
  }

  get size(): number {
    return this.verified.size;
  }

  /** Whether the file of digest, as it is now (identity), is the one that was verified. */
  trusts(digest: string, identity: FileIdentity | undefined): boolean {
    return identity !== undefined && this.verified.get(digest)?.key === identity.key;
  }

  /**
   * The file of digest hashed to its digest; identity is what it was before the hash began and still was
   * after it ended, and startedMs when the hash began.
   */
  record(digest: string, identity: FileIdentity, startedMs: number): void {
    if (identity.changedMs > startedMs - this.settleMs) return;
    this.verified.delete(digest);
    this.verified.set(digest, { key: identity.key, at: startedMs });
    if (this.verified.size > this.max) this.verified.delete(this.verified.keys().next().value!);
  }

  /** The file changed, or did not hash to its digest: the next read hashes it in full. */
  forget(digest: string): void {
    this.verified.delete(digest);
  }

  /** When the file of digest was last verified (ms), if it is trusted. */
  verifiedAt(digest: string): number | undefined {
    return this.verified.get(digest)?.at;
  }
}
