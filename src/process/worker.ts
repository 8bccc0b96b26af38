// A worker process (WORKERS > 1, forked by primary.ts): the same servers, handlers and upstream client as
// the one process, fed the connections the primary accepts (connection-handoff.ts), over the primary's store: the
// workers' backend on the IPC channel (cache/workers/worker-backend.ts). The CA is the one the primary loaded or created;
// so is the leaf key (CA_DIR/leaf.key). /healthz, /metrics and /api/v1/cache are the primary's answers.
import type { HealthReport, Listing } from '../admin/admin-routes.js';
import type { ServerPorts } from '../admin/server-ports.js';
import type { ListingViewer } from '../cache/tag-listing.js';
import type { Config } from '../config/config.js';
import type { Logger } from '../telemetry/log.js';
import { Metrics } from '../telemetry/metrics.js';
import { ProcessChannel, type MessagePort } from '../ipc/process-channel.js';
import type { StatusReport } from '../telemetry/status-report.js';
import {
  ASK_TIMEOUT_MS,
  TREE_DRAIN,
  TREE_HEALTH,
  TREE_LISTENING,
  TREE_LISTING,
  TREE_METRICS,
  TREE_PORTS,
  TREE_STATUS,
  WORKER_ACTIVITY,
  WORKER_METRICS,
  WORKER_PING,
} from './tree-messages.js';
import { openDoors, openLeafCertificates, serveProxy, type RunningProxy } from '../assembly/proxy.js';
import { primaryStore } from '../assembly/store-owner.js';
import { loadOrCreateCa } from '../tls/certificate-authority.js';
import { handedListeners } from './connection-handoff.js';

/** Serves as worker `id`; `drain` is called when the primary says to stop (with the grace it gives). */
export async function startWorker(config: Config, log: Logger, id: number, drain: (graceMs: number) => void): Promise<RunningProxy> {
  const channel = new ProcessChannel(parentPort());
  process.once('disconnect', () => channel.close('the primary is gone'));
  const metrics = new Metrics();
  channel.handle(WORKER_METRICS, () => metrics.registry.getMetricsAsJSON());
  channel.handle(WORKER_ACTIVITY, () => metrics.activity.snapshot());
  channel.handle(WORKER_PING, () => null);
  channel.on<{ graceMs: number }>(TREE_DRAIN, ({ graceMs }) => drain(graceMs));
  const { guard, doors } = openDoors(config, log, metrics); // the primary said the warnings
  const { ca } = await loadOrCreateCa(config.caDir, config.caKeyPassphrase); // the primary's: it exists by now
  const [leaves, backend, ports] = await Promise.all([
    openLeafCertificates(config, ca, log),
    primaryStore(config, channel, id),
    channel.request<ServerPorts>(TREE_PORTS, null, ASK_TIMEOUT_MS),
  ]);
  const proxy = await serveProxy(config, log, {
    metrics,
    guard,
    doors,
    ca,
    leaves,
    backend,
    listeners: handedListeners(channel, ports),
    storeGauges: false, // the primary's
    views: {
      health: () => channel.request<HealthReport>(TREE_HEALTH, null, ASK_TIMEOUT_MS),
      listing: (viewer: ListingViewer) => channel.request<Listing>(TREE_LISTING, { viewer }, ASK_TIMEOUT_MS),
      metrics: { contentType: metrics.registry.contentType, metrics: () => channel.request<string>(TREE_METRICS, null, ASK_TIMEOUT_MS) },
      status: () => channel.request<StatusReport>(TREE_STATUS, null, ASK_TIMEOUT_MS),
    },
  });
  // Said before the primary hears it: its one `listening` line then follows every worker's in the log.
  log.debug({ pid: process.pid, port: proxy.port }, 'worker listening');
  channel.notify(TREE_LISTENING, null);
  return proxy;
}

/** The IPC channel to the primary, as a MessagePort. */
function parentPort(): MessagePort {
  return {
    send: (message, callback) => process.send!(message, undefined, undefined, callback),
    on: (event, listener) => process.on(event, listener),
  };
}
