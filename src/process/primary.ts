// The supervising primary (WORKERS > 1): it serves no traffic. It checks the configuration and makes the
// CA once, owns CACHE_DIR (control socket, index, eviction: assembly/store-owner.ts) and answers the
// workers' stores (cache/workers/store-host.ts), listens on PORT, MIRROR_PORT and ADMIN_PORT and hands
// each connection to the next worker in turn (connection-handoff.ts), then forks WORKERS workers
// (worker.ts). A worker that exits is replaced after a backoff (restart-backoff.ts), and one that stops
// answering is killed first (worker-watchdog.ts); on close every worker drains as the one process does,
// then the primary closes the store. /healthz, /metrics, /api/v1/cache and the status summary (the page,
// `regcache status`) are answered here for the whole tree, whichever worker was asked: the summary from
// the same aggregate as /metrics.
import cluster, { type Worker } from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';
import { cacheListing, localHealth, type HealthReport } from '../admin/admin-routes.js';
import type { ServerPorts } from '../admin/server-ports.js';
import { StoreHost } from '../cache/workers/store-host.js';
import type { ListingViewer } from '../cache/tag-listing.js';
import { ownDirectory } from '../assembly/store-owner.js';
import { summarizeConfig, type Config } from '../config/config.js';
import type { Logger } from '../telemetry/log.js';
import { Metrics } from '../telemetry/metrics.js';
import { mergeActivity, type ActivitySnapshot } from '../telemetry/recent-activity.js';
import { buildStatusReport, type MetricsJson, type StatusReport, type WorkerState } from '../telemetry/status-report.js';
import { logStartupSummary } from '../assembly/startup-summary.js';
import { ProcessChannel } from '../ipc/process-channel.js';
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
import { openDoors, SHUTDOWN_GRACE_MS } from '../assembly/proxy.js';
import { RestartBackoff } from './restart-backoff.js';
import { ConnectionHandoff, HANDOFF_OPEN } from './connection-handoff.js';
import { WorkerWatchdog } from './worker-watchdog.js';
import { prepareStartup } from '../assembly/startup.js';
import { VERSION } from '../config/version.js';

export interface RunningTree {
  port: number;
  /** Every worker drains (up to graceMs, as one process does), then the store is closed. */
  close(graceMs?: number): Promise<void>;
  /** Ends every worker at once (a second signal). */
  kill(): void;
}

// A worker that has not exited this long after the end of its grace is killed.
const EXIT_SLACK_MS = 2_000;

interface Running {
  worker: Worker;
  channel: ProcessChannel;
  slot: number; // which of the WORKERS places it fills (its replacement takes the same)
  startedAt: number;
  listening: boolean;
  exited: Promise<void>;
}

export async function startPrimary(config: Config, log: Logger): Promise<RunningTree> {
  const metrics = new Metrics(); // the primary's: the store, the fills, evictions, its own process
  const doors = openDoors(config, log, metrics); // the users' files are read once here: a broken one stops startup before any fork
  await doors.guard.close();
  const ca = await prepareStartup(config, log, doors.warnings);
  const owner = await ownDirectory(config, log, metrics);
  const host = new StoreHost(owner, log);
  const handoff = new ConnectionHandoff(log);
  const watchdog = config.workerStallMs > 0 ? new WorkerWatchdog(config.workerStallMs, log) : null;
  const running = new Map<number, Running>(); // by cluster worker id
  const restarts = new Map<number, { count: number; exitedAt: number }>(); // by slot
  const serving = () => [...running.values()].filter((r) => r.listening).length;
  metrics.watch({
    fillsInFlight: () => host.fills.size,
    storeBytes: () => owner.index.totalBytes,
    storeEntries: () => owner.index.size,
    storeMaxBytes: () => config.cacheMaxSize,
    workersRunning: serving,
    workersExpected: () => config.workers,
    connectionsWaiting: () => handoff.waiting,
  });

  const backoff = new RestartBackoff();
  const restartTimers = new Set<NodeJS.Timeout>();
  let stopping = false;
  let up: { resolve: () => void; reject: (err: Error) => void } | null = null;
  let ports: ServerPorts | null = null; // once the primary listens, before any fork

  const health = async (): Promise<HealthReport> => {
    const report = await localHealth(ca.certPem, config.cacheDir);
    const up = serving();
    return { checks: { ...report.checks, workers: up === config.workers }, workers: { expected: config.workers, running: up } };
  };
  // Every worker's answer to `ask` and the primary's own; a worker that does not answer in time is left out.
  const gather = async <T>(ask: string, own: T): Promise<T[]> => {
    // a worker that does not answer in time is left out of the sum; the others' figures still count.
    const asked = [...running.values()].map((r) => r.channel.request<T>(ask, null, ASK_TIMEOUT_MS).catch(() => null));
    return [own, ...(await Promise.all(asked)).filter((m): m is Awaited<T> => m !== null)];
  };
  // Every worker's registry and the primary's, summed by prom-client's cluster aggregation (per metric:
  // sum, or the aggregator it names).
  const treeRegistry = async () => AggregatorRegistry.aggregate(await gather<MetricsJson>(WORKER_METRICS, await metrics.registry.getMetricsAsJSON()));
  const treeMetrics = async (): Promise<string> => (await treeRegistry()).metrics();
  const workerStates = (): WorkerState[] => {
    const bySlot = new Map([...running.values()].map((r) => [r.slot, r]));
    return Array.from({ length: config.workers }, (_, i): WorkerState => {
      const slot = i + 1;
      const r = bySlot.get(slot);
      const restarted = restarts.get(slot);
      if (!r)
        return { slot, pid: null, state: 'restarting', since: new Date(restarted?.exitedAt ?? Date.now()).toISOString(), restarts: restarted?.count ?? 0 };
      const state = r.listening ? 'serving' : 'starting';
      return { slot, pid: r.worker.process.pid ?? null, state, since: new Date(r.startedAt).toISOString(), restarts: restarted?.count ?? 0 };
    });
  };
  const treeStatus = async (): Promise<StatusReport> => {
    const [registry, activities] = await Promise.all([treeRegistry(), gather<ActivitySnapshot>(WORKER_ACTIVITY, metrics.activity.snapshot())]);
    const workers = workerStates();
    return buildStatusReport(await registry.getMetricsAsJSON(), mergeActivity(activities), {
      mode: 'workers',
      workers,
      restarts: workers.reduce((n, w) => n + w.restarts, 0),
      replica: null,
    });
  };

  const fork = (slot: number): void => {
    const worker = cluster.fork();
    const channel = new ProcessChannel({
      send: (message, callback) => worker.send(message as object, callback),
      on: (event, listener) => worker.on(event, listener),
    });
    let exited: () => void = () => undefined;
    const entry: Running = { worker, channel, slot, startedAt: Date.now(), listening: false, exited: new Promise((resolve) => (exited = resolve)) };
    running.set(worker.id, entry);
    host.attach(worker.id, channel);
    channel.handle(TREE_PORTS, () => ports);
    channel.on(HANDOFF_OPEN, () => handoff.open(worker, channel));
    channel.on(TREE_LISTENING, () => {
      entry.listening = true;
      watchdog?.watch(worker.id, {
        ping: () => channel.request(WORKER_PING),
        kill: () => worker.process.kill('SIGKILL'),
        describe: { workerId: worker.id, pid: worker.process.pid, slot },
      });
      if (up && serving() === config.workers) up.resolve();
    });
    channel.handle(TREE_HEALTH, health);
    channel.handle(TREE_METRICS, treeMetrics);
    channel.handle(TREE_STATUS, treeStatus);
    channel.handle<{ viewer: ListingViewer }>(TREE_LISTING, ({ viewer }) => cacheListing(owner.index, viewer));
    worker.on('error', (err) => log.debug({ workerId: worker.id, error: err.message }, 'worker channel error'));
    worker.once('online', () => log.info({ workerId: worker.id, pid: worker.process.pid, slot }, 'worker started'));
    worker.once('exit', (code: number | null, signal: string | null) => {
      running.delete(worker.id);
      watchdog?.forget(worker.id);
      handoff.exited(worker.id);
      channel.close('the worker exited');
      void host.detach(worker.id); // its fills fail, its spool files go
      exited();
      const line = { workerId: worker.id, pid: worker.process.pid, code, signal };
      if (stopping) return void log.info(line, 'worker stopped');
      if (up) {
        // It could not start: neither can the others, most likely (the worker logged why).
        up.reject(new Error(`worker ${worker.id} exited while starting (code ${code}, signal ${signal})`));
        return;
      }
      const delay = backoff.next(slot, Date.now() - entry.startedAt);
      log.warn({ ...line, restartInMs: delay }, 'worker exited; starting another');
      metrics.workerRestarted();
      restarts.set(slot, { count: (restarts.get(slot)?.count ?? 0) + 1, exitedAt: Date.now() });
      const timer = setTimeout(() => {
        restartTimers.delete(timer);
        if (!stopping) fork(slot);
      }, delay);
      restartTimers.add(timer);
    });
  };

  const kill = (): void => {
    for (const r of running.values()) r.worker.process.kill('SIGKILL');
  };
  const close = async (graceMs = SHUTDOWN_GRACE_MS): Promise<void> => {
    stopping = true;
    handoff.close(); // no new connections
    watchdog?.close(); // a draining worker is killed past its grace, not by the watchdog
    for (const timer of restartTimers) clearTimeout(timer);
    const exits = [...running.values()].map((r) => r.exited);
    for (const r of running.values()) r.channel.notify(TREE_DRAIN, { graceMs });
    const stragglers = setTimeout(kill, graceMs + EXIT_SLACK_MS);
    await Promise.all(exits);
    clearTimeout(stragglers);
    await owner.close();
  };

  try {
    const listening = await handoff.listen(config);
    ports = listening;
    await new Promise<void>((resolve, reject) => {
      up = { resolve, reject };
      for (let slot = 1; slot <= config.workers; slot++) fork(slot);
    });
    up = null;
    owner.setPorts(listening);
    owner.setStatus(treeStatus);
    log.info(
      {
        port: listening.proxy,
        mirrorPort: listening.mirror?.port ?? null,
        adminPort: listening.admin,
        workers: config.workers,
        version: VERSION,
        ...summarizeConfig(config),
      },
      'listening',
    );
    logStartupSummary(log, config, listening, ca.certFile);
    return { port: listening.proxy, close, kill };
  } catch (err) {
    up = null;
    stopping = true;
    handoff.close();
    watchdog?.close();
    kill();
    await Promise.all([...running.values()].map((r) => r.exited));
    await owner.close();
    throw err;
  }
}
