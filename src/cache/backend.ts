// A store as a running proxy uses it: one shape for every store, so that nothing above cache/ asks which
// store it has. Each store's folder exports the one constructor that returns it: openLocalBackend
// (local/: CACHE_DIR, the one process or the primary), connectWorkerBackend (workers/: a worker's view
// of its primary's directory), openS3Backend (s3/: a replica on a fleet's bucket, CACHE_STORE). What only
// some stores can do is a capability every backend has, as a no-op where it means nothing (decisions.md,
// "One backend per store").
import type { EventEmitter } from 'node:events';
import type { ContentStore } from './content-store.js';
import type { EntryIndex } from './entry-index.js';
import type { FillTable } from './fill-table.js';
import type { Room } from './room.js';

/** S3_REDIRECT: a short-lived presigned URL of a stored blob's object (a bearer credential: never logged). */
export type BlobRedirect = (digest: string) => Promise<string>;

/** /readyz's checks of the store, by name (all must hold): `diskSpace` always, `store` for a bucket. */
export type StoreReadiness = Record<string, boolean>;

export interface Backend<S extends ContentStore = ContentStore> {
  /** Where content is kept. */
  readonly store: S;
  /** CACHE_MAX_SIZE and room on disk, asked before a fill and told after a commit (room.ts). */
  readonly room: Room;
  /** Which fills run: this process's own, the process tree's (a worker), the fleet's (a bucket replica). */
  readonly fills: FillTable;
  /** The index in memory, as listings read it (the mirror's catalog, /api/v1/cache, the store gauges). */
  readonly index: EntryIndex;
  /** Emits 'evicted' (reason, entries, bytes) when this process evicted something (never in a worker). */
  readonly eviction: EventEmitter;
  /** S3_REDIRECT: stored blobs' GETs answered 307 to their object; null: served from here (always, but for a bucket). */
  readonly redirect: BlobRedirect | null;
  /**
   * Whether the store answered the last time it was asked (regcache_store_reachable); null for a store
   * that cannot be out of reach (a directory, the primary's).
   */
  readonly reachable: (() => boolean) | null;
  /** What /readyz checks of the store (never throws: a check that cannot be made is false). */
  readiness(): Promise<StoreReadiness>;
  /** Stops eviction and timers, closes the store. */
  close(): Promise<void>;
}
