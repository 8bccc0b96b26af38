// The store of a replica in a fleet (CACHE_STORE=s3://bucket/prefix): the bucket (created when missing),
// the S3Store over it, the fill table that makes one replica of the fleet fetch each blob (fill locks in
// the bucket), and, as with a local store, the control socket in CACHE_DIR that answers `regcache cache
// ...` and claims the directory for its spool files. The bound (CACHE_MAX_SIZE, CACHE_INACTIVE) is the
// fleet's: every replica writes its access batches, the one holding the eviction lease sweeps
// (bucket-eviction.ts).
import os from 'node:os';
import type { ServerPorts } from '../admin/server-ports.js';
import { FleetEvictor } from '../cache/s3/bucket-eviction.js';
import { BucketFillTable } from '../cache/s3/bucket-fill-table.js';
import { CacheAdmin } from '../cache/cache-admin.js';
import { claimCacheDir } from './cache-owner.js';
import { StoreUnavailableError } from '../cache/content-store.js';
import type { Room } from '../cache/eviction.js';
import type { FillTable } from '../cache/fill-table.js';
import { FillLocks } from '../cache/s3/fill-lock.js';
import { S3Bucket } from '../cache/s3/s3-bucket.js';
import { REFRESH_MS, S3Store } from '../cache/s3/s3-store.js';
import type { CacheStore, Config } from '../config/config.js';
import type { BlobRedirect } from '../registry/content-responder.js';
import type { Logger } from '../telemetry/log.js';
import { StartupError } from './startup-checks.js';

export interface BucketOwner {
  store: S3Store;
  room: Room;
  fills: FillTable;
  evictor: FleetEvictor;
  /** S3_REDIRECT: a presigned URL of a blob's object (null: off). */
  redirect: BlobRedirect | null;
  setPorts(ports: ServerPorts): void;
  close(): Promise<void>;
}

// Waiting replicas look at the bucket this often: a twentieth of the lease, within bounds (the cost is
// one LIST and two small GETs per look, per waiting replica and content).
const MIN_POLL_MS = 100;
const MAX_POLL_MS = 1000;

export async function ownBucket(config: Config, cacheStore: CacheStore, log: Logger): Promise<BucketOwner> {
  const control = await claimCacheDir(config.cacheDir);
  let opened: { store: S3Store; created: boolean; bucket: S3Bucket };
  try {
    const bucket = await S3Bucket.create({
      bucket: cacheStore.bucket,
      endpoint: config.s3.endpoint,
      forcePathStyle: config.s3.forcePathStyle,
      display: cacheStore.display,
    });
    opened = { ...(await S3Store.open({ bucket, prefix: cacheStore.prefix, dir: config.cacheDir, log, localTierBytes: config.localTierMaxSize })), bucket };
  } catch (err) {
    await control.close();
    if (!(err instanceof StoreUnavailableError)) throw err;
    throw new StartupError(
      'CACHE_STORE',
      `CACHE_STORE=${cacheStore.display} cannot be used: ${err.message}. Check S3_ENDPOINT${config.s3.endpoint ? `=${config.s3.endpoint}` : ''}, the bucket's name, and that the credentials (AWS_ACCESS_KEY_ID or the instance's role) may read, write and, for a missing bucket, create it`,
    );
  }
  const { store, created, bucket } = opened;
  control.serve(new CacheAdmin(store, config.cacheMaxSize));
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
  return {
    store,
    redirect,
    room: store.room(config.cacheMaxSize, () => evictor.afterCommit()),
    evictor,
    fills,
    setPorts: control.setPorts,
    async close() {
      await control.close();
      await evictor.stop();
      await store.close();
    },
  };
}
