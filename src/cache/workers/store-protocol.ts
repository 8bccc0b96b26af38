// What a worker's store and the primary's store host say to each other over the process channel
// (process-channel.ts), with WORKERS > 1. The primary owns the index, the eviction and the table of fills;
// workers read and write content and spool files themselves, by path, and ask the primary about
// everything else. Names and shapes only: worker-store.ts and shared-fill-table.ts ask, store-host.ts and
// fill-arbiter.ts answer.
import type { ContentKind, Provenance, StoredContent } from '../content-store.js';
import type { Entry, IndexOp } from '../entry-index.js';
import type { FillError } from '../fill.js';
import type { FillKey } from '../fill-table.js';

/** The store's messages. */
export const STORE = {
  // Requests, worker -> primary.
  snapshot: 'store.snapshot', // null -> IndexOp[]; the worker then gets `ops` notes
  lookup: 'store.lookup', // { kind, digest } -> StoredContent | null (after a commit of it in progress)
  commit: 'store.commit', // CommitRequest -> Committed | null
  remove: 'store.remove', // { kind, digest } -> Entry | null
  index: 'store.index', // IndexCall -> the method's result
  makeRoom: 'store.makeRoom', // { bytes } -> boolean
  removeUnreferenced: 'store.removeUnreferenced', // null -> { files, bytes }
  // Notes, worker -> primary.
  use: 'store.use', // Use[]: reads of stored content (access times, repositories, tags)
  // Notes, primary -> worker.
  ops: 'store.ops', // IndexOp[]: changes to the index, in order
} as const;

/** The fills' messages. */
export const FILL = {
  // Requests, worker -> primary.
  claim: 'fill.claim', // ClaimRequest -> ClaimAnswer (once the running fill's fetch has answered)
  // Notes, worker -> primary.
  started: 'fill.started', // FillStarted: the leader's fetch gave a body, its spool is named
  ended: 'fill.ended', // { fill }: the leader's fetch gave nothing to fill
  reading: 'fill.reading', // FillReading: a follower's clients started or stopped reading the fill
  // Notes both ways: the leader's, and relayed by the primary to the workers that follow the fill.
  progress: 'fill.progress', // FillProgress: the leader's bytes (sent while watched, and once verified)
  settled: 'fill.settled', // FillSettled: committed, or failed
  // Notes, primary -> worker.
  watch: 'fill.watch', // { fill }: to the leader: readers in other workers follow it, report progress
  readers: 'fill.readers', // FillReading: to the leader: whether any other worker's clients read it now
} as const;

/** Whether clients read a fill: a follower's own (fill.reading), or any follower's (fill.readers). */
export interface FillReading {
  fill: number;
  reading: boolean;
}

export interface CommitRequest {
  spool: string; // the spool file's name (verified and synced)
  content: StoredContent;
  from: Provenance;
}

export interface Use {
  kind: ContentKind;
  digest: string;
  at: number;
  from: Provenance;
}

/** The index methods a worker may call on the primary's index. */
export type IndexMethod = 'untag' | 'setAccess' | 'setPointer' | 'delete';

export interface IndexCall {
  method: IndexMethod;
  args: unknown[];
}

/** A fill as a follower in another worker needs to know it. */
export interface FollowInfo {
  fill: number; // the primary's id for it
  spool: string; // the spool file's name
  kind: ContentKind;
  digest: string;
  mediaType: string;
  expectedSize: number | null;
  written: number;
  verified: boolean;
}

export type ClaimAnswer =
  | { kind: 'lead'; fill: number } // fetch, and report on FILL.started/ended/progress/settled
  | { kind: 'alone' } // a fill runs that this request may not join: fetch, unknown to the primary
  | { kind: 'follow'; info: FollowInfo } // a fill runs: follow it
  | { kind: 'ended' } // the running fill gave nothing to fill, or is this worker's own, gone: look in the store, then go alone
  | { kind: 'stored' }; // nothing runs and the content is stored: look in the store

export interface ClaimRequest {
  key: FillKey;
  join: boolean;
}

export interface FillStarted {
  fill: number;
  spool: string;
  mediaType: string;
  expectedSize: number | null;
}

export interface FillProgress {
  fill: number;
  written: number;
  verified: boolean;
}

export interface FillSettled {
  fill: number;
  written: number;
  error: { reason: FillError['reason']; message: string } | null; // null: committed
}

export type { Entry, IndexOp };
