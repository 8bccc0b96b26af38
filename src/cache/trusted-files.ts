// VERIFY_ON_READ=once: the stored files this process hashed in full and found to be their digest, and what
// each file was then (ContentFile.identity: device, inode, size, mtime, ctime). A HIT of a file that is
// still what it was is served without hashing it; any change to the file (a write, a truncate, utimes,
// chmod, a link: each moves its ctime) makes the next read hash it in full again. What changes no
// timestamp (the disk's own bit rot, a write to the block device) is the scrubber's (scrubber.ts) and
// the client's digest check's to catch: decisions.md, "VERIFY_ON_READ=once". In memory, per process: a
// restart, or another worker, hashes a file once more. A file this process's own fill wrote (every byte
// hashed to the digest on its way to disk) is trusted from its commit: its first HIT is not hashed again
// unless the file changed after the commit (decision #116).
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
  /** Content this process's fills committed, and when each commit was done (ms): not yet read since. */
  private readonly committed = new Map<string, number>();
  private readonly max: number;
  private readonly settleMs: number;

  constructor(options: TrustedFilesOptions = {}) {
    this.max = options.max ?? MAX_TRUSTED;
    this.settleMs = options.settleMs ?? SETTLE_MS;
  }

  get size(): number {
    return this.verified.size;
  }

  /**
   * Whether the file of digest, as it is now (identity), is the one that was verified: hashed by a read,
   * or written by a fill of this process and unchanged since its commit (its ctime no later than the
   * commit; the file is then trusted as it is now).
   */
  trusts(digest: string, identity: FileIdentity | undefined): boolean {
    if (identity === undefined) return false;
    if (this.verified.get(digest)?.key === identity.key) return true;
    const committedMs = this.committed.get(digest);
    if (committedMs === undefined || identity.changedMs > committedMs) return false;
    this.committed.delete(digest);
    this.set(digest, identity.key, committedMs);
    return true;
  }

  /**
   * A fill of this process hashed every byte of digest's content to its digest as it wrote them and has
   * committed the file, by `atMs`. Its identity is taken at the first read: a file whose ctime is later
   * than atMs changed after the commit and is hashed in full.
   */
  recordCommit(digest: string, atMs: number): void {
    this.committed.delete(digest);
    this.committed.set(digest, atMs);
    if (this.committed.size > this.max) this.committed.delete(this.committed.keys().next().value!);
  }

  /**
   * The file of digest hashed to its digest; identity is what it was before the hash began and still was
   * after it ended, and startedMs when the hash began.
   */
  record(digest: string, identity: FileIdentity, startedMs: number): void {
    if (identity.changedMs > startedMs - this.settleMs) return;
    this.set(digest, identity.key, startedMs);
  }

  /** The file changed, or did not hash to its digest: the next read hashes it in full. */
  forget(digest: string): void {
    this.verified.delete(digest);
    this.committed.delete(digest);
  }

  private set(digest: string, key: string, at: number): void {
    this.verified.delete(digest);
    this.verified.set(digest, { key, at });
    if (this.verified.size > this.max) this.verified.delete(this.verified.keys().next().value!);
  }

  /** When the file of digest was last verified (ms), if it is trusted. */
  verifiedAt(digest: string): number | undefined {
    return this.verified.get(digest)?.at;
  }
}

/**
 * Whether an open file (now) is still what it was (before). Removing the file (cache rm, eviction, a
 * commit renamed over it) moves its ctime but not its bytes; a file with no name left whose size and
 * mtime are as they were is taken as unchanged, so a reader of removed content is not cut for it
 * (decision #118). What this lets by: a write with its mtime set back and the file unlinked, all during
 * one read; only someone who may write the cache directory can do that, and the client's digest check
 * is still there.
 */
export function unchangedSince(before: FileIdentity, now: FileIdentity): boolean {
  return now.key === before.key || (!now.linked && now.contentKey === before.contentKey);
}
