// CACHE_DIR, owned by this process (the one process, or the primary with WORKERS > 1): the control socket
// that claims the directory and answers `regcache cache ...` and `ports`, the LocalStore (index, journal,
// spool), the cache commands, and the Evictor with its sweep.
import { listenControl } from '../admin/control-socket.js';
import { PORTS_COMMAND, type ServerPorts } from '../admin/server-ports.js';
import { CacheAdmin } from '../cache/cache-admin.js';
import { Evictor } from '../cache/eviction.js';
import { LocalStore } from '../cache/local/local-store.js';
import type { Config } from '../config/config.js';
import type { Logger } from '../telemetry/log.js';
import type { Metrics } from '../telemetry/metrics.js';

export interface CacheOwner {
  store: LocalStore;
  evictor: Evictor;
  /** Where the listeners listen, once every one does: the control socket's `ports` answer (prefetch). */
  setPorts(ports: ServerPorts): void;
  /** Stops the sweep, releases the control socket, closes the index. */
  close(): Promise<void>;
}

/** The control socket on CACHE_DIR: it answers once the store is given (`serve`) and the ports are known. */
export interface CacheControl {
  serve(admin: CacheAdmin): void;
  setPorts(ports: ServerPorts): void;
  close(): Promise<void>;
}

/**
 * Claims CACHE_DIR with its control socket before any store touches it (opening wipes the spool): a live
 * socket there is another server's. Used by both owners (this file, and bucket-owner.ts).
 */
export async function claimCacheDir(cacheDir: string): Promise<CacheControl> {
  let cacheAdmin: CacheAdmin | null = null;
  let ports: ServerPorts | null = null;
  const control = await listenControl(cacheDir, (request) => {
    if (request.cmd === PORTS_COMMAND) return ports ? Promise.resolve(ports) : Promise.reject(new Error('the server is still starting'));
    if (!cacheAdmin) throw new Error('the store is still opening');
    return cacheAdmin.run(request.cmd, request.args);
  });
  return {
    serve: (admin) => (cacheAdmin = admin),
    setPorts: (listening) => (ports = listening),
    close: () => new Promise((resolve) => control.close(() => resolve())),
  };
}

export async function ownCacheDir(config: Config, log: Logger, metrics: Metrics): Promise<CacheOwner> {
  const control = await claimCacheDir(config.cacheDir);
  const store = await LocalStore.open(config.cacheDir);
  control.serve(new CacheAdmin(store, config.cacheMaxSize));
  const evictor = new Evictor(store, { maxBytes: config.cacheMaxSize, inactiveMs: config.cacheInactiveMs }, log);
  evictor.on('evicted', (reason: string, entries: number) => metrics.evicted(reason, entries));
  evictor.start();
  log.info({ entries: store.index.size, bytes: store.index.totalBytes, maxBytes: config.cacheMaxSize }, 'cache opened');
  return {
    store,
    evictor,
    setPorts: control.setPorts,
    async close() {
      await control.close();
      await evictor.stop();
      await store.close();
    },
  };
}
