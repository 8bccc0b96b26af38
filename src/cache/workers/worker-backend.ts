// The backend of a worker process (WORKERS > 1), over its primary's store on the process channel: the
// WorkerStore (the primary's index replicated here; content read and spooled in CACHE_DIR by path), a
// room whose eviction is the primary's (it enforces the bound after every commit it makes), and the
// SharedFillTable (one fill per content across the workers). The primary's store-host.ts answers.
import { EventEmitter } from 'node:events';
import type { Config } from '../../config/config.js';
import type { ProcessChannel } from '../../ipc/process-channel.js';
import type { Backend } from '../backend.js';
import { Room } from '../room.js';
import { SharedFillTable } from './shared-fill-table.js';
import { spoolPrefixOf } from './store-host.js';
import { WorkerStore } from './worker-store.js';

export type WorkerBackendConfig = Pick<Config, 'cacheDir' | 'cacheMaxSize'>;

/** Worker `worker`'s backend: the primary's index once it sent it, and every change to it from then on. */
export async function connectWorkerBackend(channel: ProcessChannel, config: WorkerBackendConfig, worker: number): Promise<Backend<WorkerStore>> {
  const store = await WorkerStore.connect(channel, { dir: config.cacheDir, spoolPrefix: spoolPrefixOf(worker) });
  // Enough free space is the usual answer, and a statfs here finds it; only eviction is the primary's.
  const room = new Room(store, config.cacheMaxSize, { evictFor: (bytes) => store.evictFor(bytes) });
  return {
    store,
    room,
    fills: new SharedFillTable(channel, (name) => store.followSpool(name)),
    index: store.replica,
    eviction: new EventEmitter(), // the primary's: it counts what it evicts
    redirect: null,
    reachable: null,
    readiness: async () => ({ diskSpace: await room.hasSpace() }),
    close: () => store.close(),
  };
}
