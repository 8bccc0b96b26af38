// The backend of CACHE_DIR for the process that owns it (the one process, or the primary that hosts it for
// its workers): the directory store (local-store.ts), its room and its evictor (disk-eviction.ts: the
// bound, the inactive sweep, room on a short disk), and this process's own fill table. Nothing to redirect
// to, nothing but the disk to reach, no copy apart from the stored bytes. Its scrubber (SCRUB_RATE)
// re-hashes the stored files in the background.
import type { Config } from '../../config/config.js';
import type { Logger } from '../../telemetry/log.js';
import type { Backend } from '../backend.js';
import { LocalFillTable } from '../fill-table.js';
import { Room } from '../room.js';
import { Scrubber } from '../scrubber.js';
import { DiskEvictor } from './disk-eviction.js';
import { LocalStore } from './local-store.js';

export type LocalBackendConfig = Pick<Config, 'cacheDir' | 'cacheMaxSize' | 'cacheInactiveMs'> & Partial<Pick<Config, 'scrubBytesPerSecond'>>;

/** Opens the store (the spool emptied, the index loaded) and starts its eviction. */
export async function openLocalBackend(config: LocalBackendConfig, log: Logger): Promise<Backend<LocalStore>> {
  const store = await LocalStore.open(config.cacheDir);
  const evictor = new DiskEvictor(store, { maxBytes: config.cacheMaxSize, inactiveMs: config.cacheInactiveMs }, log);
  const room = new Room(store, config.cacheMaxSize, evictor);
  evictor.start();
  const scrubber = new Scrubber(store, config.scrubBytesPerSecond ?? 0, log);
  scrubber.start();
  if (store.lostAtOpen.length > 0) {
    const lost = store.lostAtOpen;
    log.warn(
      { entries: lost.length, bytes: lost.reduce((n, e) => n + e.size, 0), digests: lost.slice(0, 10).map((e) => e.digest) },
      'content files missing at start; entries dropped',
    );
  }
  log.info({ entries: store.index.size, bytes: store.index.totalBytes, maxBytes: config.cacheMaxSize }, 'cache opened');
  return {
    store,
    room,
    fills: new LocalFillTable(),
    index: store.index,
    eviction: evictor,
    redirect: null,
    reachable: null,
    readiness: async () => ({ diskSpace: await room.hasSpace() }),
    async close() {
      await scrubber.stop();
      await evictor.stop();
      await store.close();
    },
  };
}
