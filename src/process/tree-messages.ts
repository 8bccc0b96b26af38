// What the primary and its workers say to each other besides the store's business (cache/store-protocol.ts):
// where the primary listens and that a worker serves, the tree's answers for /healthz, /metrics, /api/v1/cache and the status summary
// (asked by whichever worker got the request), a worker's own metrics and activity, the watchdog's question, and the order to drain.

/** Notes, worker -> primary. */
export const TREE_LISTENING = 'tree.listening'; // null: this worker serves (warmed up)

/** Requests, worker -> primary: the tree's answers. */
export const TREE_PORTS = 'tree.ports'; // null -> ServerPorts: where the primary listens for every worker
export const TREE_HEALTH = 'tree.health'; // null -> HealthReport (admin-routes.ts)
export const TREE_METRICS = 'tree.metrics'; // null -> Prometheus text, every process's metrics aggregated
export const TREE_LISTING = 'tree.listing'; // { viewer } -> Listing (admin-routes.ts)
export const TREE_STATUS = 'tree.status'; // null -> StatusReport (telemetry/status-report.ts), from the tree's aggregate

/** Requests, primary -> worker. */
export const WORKER_METRICS = 'worker.metrics'; // null -> this worker's registry as JSON (prom-client getMetricsAsJSON)
export const WORKER_ACTIVITY = 'worker.activity'; // null -> this worker's ActivitySnapshot (telemetry/recent-activity.ts)
export const WORKER_PING = 'worker.ping'; // null -> null, from the worker's event loop (worker-watchdog.ts)

/** Notes, primary -> worker. */
export const TREE_DRAIN = 'tree.drain'; // { graceMs }: stop accepting, finish within graceMs, exit

// A question to another process of the tree that is not answered by then is answered without it.
export const ASK_TIMEOUT_MS = 5_000;
