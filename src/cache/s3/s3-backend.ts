// The backend of a replica in a fleet (CACHE_STORE=s3://bucket/prefix): the bucket (created when missing),
// the S3Store over it (spool files, and with LOCAL_TIER_MAX_SIZE local copies, in CACHE_DIR), the fill
// table that makes one replica of the fleet fetch each blob (fill locks in the bucket), and the fleet's
// bound (CACHE_MAX_SIZE, CACHE_INACTIVE): every replica writes its access batches, the one holding the
// eviction lease sweeps (bucket-eviction.ts). With S3_REDIRECT, stored blobs are redirected to presigned
// URLs of their objects; /readyz also says whether the bucket answers.
import os from 'node:os';
import type { CacheStore, Config } from '../../config/config.js';
import type { Logger } from '../../telemetry/log.js';
import type { Backend, BlobRedirect } from '../backend.js';
import { Room } from '../room.js';
import { FleetEvictor } from './bucket-eviction.js';
import { BucketFillTable } from './bucket-fill-table.js';
import { FillLocks } from './fill-lock.js';
import { S3Bucket } from './s3-bucket.js';
import { REFRESH_MS, S3Store } from './s3-store.js';

export type S3BackendConfig = Pick<Config, 'cacheDir' | 'cacheMaxSize' | 'cacheInactiveMs' | 'localTierMaxSize' | 's3'>;

// Waiting replicas look at the bucket this often: a twentieth of the lease, within bounds (the cost is
// one LIST and two small GETs per look, per waiting replica and content).
const MIN_POLL_MS = 100;
const MAX_POLL_MS = 1000;

/**
 * Opens the bucket's store (its index read) and starts the fleet's bound; StoreUnavailableError when the
 * bucket cannot be used (unreachable, refused, or missing and not creatable).
 */
export async function openS3Backend(config: S3BackendConfig, cacheStore: CacheStore, log: Logger): Promise<Backend<S3Store>> {
  const bucket = await S3Bucket.create({
    bucket: cacheStore.bucket,
    endpoint: config.s3.endpoint,
    forcePathStyle: config.s3.forcePathStyle,
    display: cacheStore.display,
  });
  const { store, created } = await S3Store.open({ bucket, prefix: cacheStore.prefix, dir: config.cacheDir, log, localTierBytes: config.localTierMaxSize });
  const locks = new FillLocks(bucket, store.layout, { owner: `${os.hostname()}/${process.pid}`, leaseMs: config.s3.fillLeaseMs });
  const fills = new BucketFillTable(locks, {
    stored: async (key) => (await store.lookup(key.kind, key.digest)) !== null,
    pollMs: Math.min(MAX_POLL_MS, Math.max(MIN_POLL_MS, Math.floor(config.s3.fillLeaseMs / 20))),
  });
  const evictor = new FleetEvictor(
    { bucket, layout: store.layout, index: store.index, usage: store.usage, locks },
    {
      maxBytes: config.cacheMaxSize,
      inactiveMs: config.cacheInactiveMs,
      sweepMs: config.s3.sweepMs,
      flushMs: config.s3.accessFlushMs,
      graceMs: config.s3.evictGraceMs,
    },
    log,
  );
  evictor.start();
  // Replicas may start reads of evicted content until their next refresh; each is seen in their next batch.
  const safeGraceMs = REFRESH_MS + 2 * config.s3.accessFlushMs;
  if (config.s3.evictGraceMs < safeGraceMs) {
    log.warn(
      { evictGraceMs: config.s3.evictGraceMs, safeGraceMs },
      'S3_EVICT_GRACE is shorter than a refresh plus two access batches: evicted content may be deleted while a replica that has not refreshed yet starts reading it (its client is then cut or the request refetched)',
    );
  }
  log.info(
    {
      store: cacheStore.display,
      endpoint: config.s3.endpoint,
      bucketCreated: created,
      entries: store.index.size,
      bytes: store.index.totalBytes,
      maxBytes: config.cacheMaxSize,
      localTierMaxBytes: config.localTierMaxSize,
    },
    'cache opened',
  );
  const ttlSeconds = Math.floor(config.s3.redirectTtlMs / 1000);
  const redirect: BlobRedirect | null = config.s3.redirect ? (digest) => bucket.presign(store.layout.content(digest), ttlSeconds) : null;
  // The local disk holds only spool files (and copies the tier bounds itself): nothing of the bucket's to evict there.
  const room = new Room(store, config.cacheMaxSize, { afterCommit: () => evictor.afterCommit() });
  return {
    store,
    room,
    fills,
    index: store.index.replica,
    eviction: evictor,
    redirect,
    reachable: () => store.reachable,
    readiness: async () => ({ diskSpace: await room.hasSpace(), store: store.reachable }),
    async close() {
      await evictor.stop();
      await store.close();
    },
  };
}
