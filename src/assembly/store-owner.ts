// The store each process serves from, picked from the config in this one place (each store's folder
// exports the one constructor of its backend: cache/backend.ts), and the claim of the process that owns
// CACHE_DIR (the one process, or the primary) on that directory: its control socket, which refuses a
// second server, answers `regcache cache ...` over the store, and, once every listener listens, `ports`
// and `status` (the status summary, for `regcache status`).
import { listenControl } from '../admin/control-socket.js';
import { PORTS_COMMAND, STATUS_COMMAND, type ServerPorts } from '../admin/server-ports.js';
import type { Backend } from '../cache/backend.js';
import { CacheAdmin } from '../cache/cache-admin.js';
import { StoreUnavailableError, type ContentStore } from '../cache/content-store.js';
import { openLocalBackend } from '../cache/local/local-backend.js';
import type { LocalStore } from '../cache/local/local-store.js';
import { connectWorkerBackend } from '../cache/workers/worker-backend.js';
import type { CacheStore, Config } from '../config/config.js';
import type { ProcessChannel } from '../ipc/process-channel.js';
import type { Logger } from '../telemetry/log.js';
import type { Metrics } from '../telemetry/metrics.js';
import type { StatusReport } from '../telemetry/status-report.js';
import { StartupError } from './startup-checks.js';

/** A backend on CACHE_DIR's claim: closing it releases the control socket first. */
export interface OwnedBackend<S extends ContentStore = ContentStore> extends Backend<S> {
  /** Where the listeners listen, once every one does: the control socket's `ports` answer (prefetch). */
  setPorts(ports: ServerPorts): void;
  /** What `regcache status` is answered with: the status summary of this process, or of the tree. */
  setStatus(status: () => Promise<StatusReport>): void;
}

/** The one process's store (WORKERS=1): the fleet's bucket with CACHE_STORE, else CACHE_DIR's directory. */
export function ownStore(config: Config, log: Logger, metrics: Metrics): Promise<OwnedBackend> {
  const { cacheStore } = config;
  return own(config, metrics, () => (cacheStore ? openBucket(config, cacheStore, log) : openLocalBackend(config, log)));
}

/** The primary's store (WORKERS > 1, which config.ts refuses with CACHE_STORE): CACHE_DIR, hosted for its workers. */
export function ownDirectory(config: Config, log: Logger, metrics: Metrics): Promise<OwnedBackend<LocalStore>> {
  return own(config, metrics, () => openLocalBackend(config, log));
}

/** A worker's store (WORKERS > 1): its primary's, through the process channel. */
export function primaryStore(config: Config, channel: ProcessChannel, worker: number): Promise<Backend> {
  return connectWorkerBackend(channel, config, worker);
}

/** The control socket on CACHE_DIR: it answers once the store is given (`serve`) and the ports are known. */
interface CacheControl {
  serve(admin: CacheAdmin): void;
  setPorts(ports: ServerPorts): void;
  setStatus(status: () => Promise<StatusReport>): void;
  close(): Promise<void>;
}

/**
 * Claims CACHE_DIR with its control socket before any store touches it (opening wipes the spool: a live
 * socket there is another server's), opens the backend, and answers the cache commands over its store.
 */
async function own<S extends ContentStore>(config: Config, metrics: Metrics, open: () => Promise<Backend<S>>): Promise<OwnedBackend<S>> {
  const control = await claimCacheDir(config.cacheDir);
  let backend: Backend<S>;
  try {
    backend = await open();
  } catch (err) {
    await control.close();
    throw err;
  }
  control.serve(new CacheAdmin(backend.store, config.cacheMaxSize));
  backend.eviction.on('evicted', (reason: string, entries: number) => metrics.evicted(reason, entries));
  return {
    ...backend,
    setPorts: control.setPorts,
    setStatus: control.setStatus,
    async close() {
      await control.close();
      await backend.close();
    },
  };
}

async function claimCacheDir(cacheDir: string): Promise<CacheControl> {
  let cacheAdmin: CacheAdmin | null = null;
  let ports: ServerPorts | null = null;
  let status: (() => Promise<StatusReport>) | null = null;
  const control = await listenControl(cacheDir, (request) => {
    if (request.cmd === PORTS_COMMAND) return ports ? Promise.resolve(ports) : Promise.reject(new Error('the server is still starting'));
    if (request.cmd === STATUS_COMMAND) return status ? status() : Promise.reject(new Error('the server is still starting'));
    if (!cacheAdmin) throw new Error('the store is still opening');
    return cacheAdmin.run(request.cmd, request.args);
  });
  return {
    serve: (admin) => (cacheAdmin = admin),
    setPorts: (listening) => (ports = listening),
    setStatus: (summary) => (status = summary),
    close: () => new Promise((resolve) => control.close(() => resolve())),
  };
}

/** The fleet's bucket; one that cannot be used stops startup with what to check. */
async function openBucket(config: Config, cacheStore: CacheStore, log: Logger): Promise<Backend> {
  // Loaded only for a bucket: the AWS SDK adds ~125 ms to every start that has no use for it.
  const { openS3Backend } = await import('../cache/s3/s3-backend.js');
  try {
    return await openS3Backend(config, cacheStore, log);
  } catch (err) {
    if (!(err instanceof StoreUnavailableError)) throw err;
    throw new StartupError(
      'CACHE_STORE',
      `CACHE_STORE=${cacheStore.display} cannot be used: ${err.message}. Check S3_ENDPOINT${config.s3.endpoint ? `=${config.s3.endpoint}` : ''}, the bucket's name, and that the credentials (AWS_ACCESS_KEY_ID or the instance's role) may read, write and, for a missing bucket, create it`,
    );
  }
}
