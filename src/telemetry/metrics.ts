// Prometheus metrics (prom-client), on GET /metrics. One Metrics per running proxy, on a registry of its
// own (two proxies in one process count apart), created by proxy.ts and handed to what counts: the
// access log, the password guard, and proxy.ts's listeners on the fill and eviction events. Gauges that
// mirror state owned elsewhere (fills in flight, store size, leaves minted, tunnels open) are read from
// their owners at scrape time, so nothing has to be kept in sync. With WORKERS > 1 every process has its
// own Metrics, each watching only what it owns (the primary: the store and the fills; a worker: its leaves
// and tunnels), and /metrics is their sum (prom-client's AggregatorRegistry.aggregate, in primary.ts).
// The status page and `regcache status` read these same counters (status-report.ts), and the windows and
// lists of RecentActivity are fed by the same calls, so every view of a figure is this one count.
//
// Labels stay bounded: `registry` is an allowlist entry or "other", `kind` and `cache` are fixed sets;
// per-image counts live only in RecentActivity. Requests to the admin endpoints are counted apart
// (regcache_admin_requests_total): a scraper or a status page open in a browser is not registry traffic.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { RecentActivity, type CountedRequest, type RunningFill } from './recent-activity.js';

export interface MetricsSources {
  fillsInFlight: () => number;
  storeBytes: () => number;
  storeEntries: () => number;
  storeMaxBytes: () => number; // CACHE_MAX_SIZE
  storeReachable: () => Promise<boolean>; // CACHE_STORE: the bucket answers (readiness)
  leavesMinted: () => number;
  tunnelsOpen: () => number;
  workersRunning: () => number; // WORKERS > 1: the primary's count of workers serving
  workersExpected: () => number;
  connectionsWaiting: () => number; // WORKERS > 1: accepted by the primary, no worker free to take them yet
}

/** What /metrics serves: one process's registry, or with WORKERS > 1 the whole tree's, aggregated. */
export interface MetricsExposition {
  readonly contentType: string;
  metrics(): Promise<string>;
}

const FROM_CACHE = new Set(['HIT', 'REVALIDATED', 'STALE', 'CORRUPT']); // CORRUPT: the stored bytes sent before the cut
const OWN_ANSWERS = new Set(['ADMIN', 'LOCAL', 'REJECTED']); // regcache's own bodies: neither from the cache nor upstream
// The hit ratio's requests: content (blobs, manifests) answered from the store, or fetched for the client.
// DENIED, CORRUPT and REJECTED answers served no content; BYPASS did, from upstream (not cacheable).
const CONTENT_KINDS = new Set(['blob', 'manifest-by-digest', 'manifest-by-tag']);
const CONTENT_SOURCE: Record<string, 'cache' | 'upstream'> = { HIT: 'cache', REVALIDATED: 'cache', STALE: 'cache', MISS: 'upstream', BYPASS: 'upstream' };
// Every cause and reason a series is made for at start: a series that appears only with its first event
// hides that event from rate() and increase(), and so from the alerts.
const UPSTREAM_ERROR_CAUSES = ['refused', 'timeout', 'tls', 'connect', 'upstream', 'truncated', 'digest-mismatch', 'abandoned', 'oversize', 'stalled'];
const EVICTION_REASONS = ['size', 'inactive', 'disk'];
const ADMIN_ENDPOINTS = new Set(['/', '/status', '/ca.crt', '/healthz', '/readyz', '/metrics', '/api/v1/cache', '/api/v1/cache/summary', '/api/v1/status']);

export class Metrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'regcache_requests_total',
    help: 'Intercepted requests by cache status and kind',
    labelNames: ['cache', 'kind', 'registry'],
    registers: [this.registry],
  });
  private readonly bytes = new Counter({
    name: 'regcache_bytes_served_total',
    help: 'Body bytes sent to clients, by source (cache or upstream) and registry',
    labelNames: ['source', 'registry'],
    registers: [this.registry],
  });
  private readonly content = new Counter({
    name: 'regcache_content_requests_total',
    help: 'Requests for blobs and manifests answered with content, by source: cache (HIT, REVALIDATED, STALE) or upstream (MISS, BYPASS). The hit ratio is the cache share of its rate',
    labelNames: ['source', 'registry'],
    registers: [this.registry],
  });
  private readonly saved = new Counter({
    name: 'regcache_upstream_manifest_gets_saved_total',
    help: "Manifest GETs answered from the cache without a GET upstream (HIT, REVALIDATED: a HEAD, STALE): what Docker Hub's pull limit counts",
    labelNames: ['registry'],
    registers: [this.registry],
  });
  private readonly corrupt = new Counter({
    name: 'regcache_corrupt_content_total',
    help: 'Stored content found not to match its digest while served (CORRUPT: cut, dropped, refetched next time)',
    registers: [this.registry],
  });
  private readonly admin = new Counter({
    name: 'regcache_admin_requests_total',
    help: 'Requests to the admin endpoints (status page, /metrics, /api/v1/*, health, set-up), by endpoint; not in regcache_requests_total',
    labelNames: ['endpoint'],
    registers: [this.registry],
  });
  private readonly workerRestarts = new Counter({
    name: 'regcache_worker_restarts_total',
    help: 'Worker processes that exited and were replaced (WORKERS > 1)',
    registers: [this.registry],
  });
  private readonly redirects = new Counter({
    name: 'regcache_redirects_total',
    help: 'Blob GETs answered 307 to a presigned URL of the bucket (S3_REDIRECT): the bytes went from the bucket, not through regcache',
    registers: [this.registry],
  });
  private readonly fills = new Counter({ name: 'regcache_upstream_fetches_total', help: 'Cache fills started upstream', registers: [this.registry] });
  private readonly coalesced = new Counter({
    name: 'regcache_coalesced_waiters_total',
    help: 'Requests that joined a fill already running',
    registers: [this.registry],
  });
  private readonly evictions = new Counter({
    name: 'regcache_evictions_total',
    help: 'Entries evicted, by reason',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  private readonly upstreamErrors = new Counter({
    name: 'regcache_upstream_errors_total',
    help: 'Upstream failures, by cause',
    labelNames: ['cause'],
    registers: [this.registry],
  });
  private readonly authChecks = new Counter({
    name: 'regcache_auth_checks_total',
    help: 'Credential checks by result: valid and invalid compared a password (for bcrypt entries, one bcrypt run each); malformed were not Basic credentials; cached_valid and cached_invalid were answered from recent verdicts; unchecked were refused without a comparison (checks overloaded, or a throttled address with too many attempts queued)',
    labelNames: ['result'],
    registers: [this.registry],
  });
  // Created at the first report: a gauge without labels reads 0 until set, and 0 means "no pulls left".
  private rateLimit: Gauge | null = null;
  /** The windows and lists of the status page, fed by the same calls as the counters. */
  readonly activity: RecentActivity;

  constructor(now: () => number = Date.now) {
    collectDefaultMetrics({ register: this.registry, prefix: 'regcache_' });
    this.activity = new RecentActivity(now);
    for (const cause of UPSTREAM_ERROR_CAUSES) this.upstreamErrors.inc({ cause }, 0);
    for (const reason of EVICTION_REASONS) this.evictions.inc({ reason }, 0);
  }

  /** Gauges read from their owners at scrape time: those whose owner lives in this process. */
  watch(sources: Partial<MetricsSources>): void {
    const gauge = (name: string, help: string, read: (() => number | Promise<number>) | undefined) =>
      read &&
      new Gauge({
        name,
        help,
        registers: [this.registry],
        async collect() {
          this.set(await read());
        },
      });
    gauge('regcache_fills_in_flight', 'Upstream fills running now', sources.fillsInFlight);
    gauge('regcache_store_bytes', 'Bytes of content in the store', sources.storeBytes);
    gauge('regcache_store_entries', 'Entries in the store', sources.storeEntries);
    gauge('regcache_store_max_bytes', 'The bound on the stored content (CACHE_MAX_SIZE)', sources.storeMaxBytes);
    const reachable = sources.storeReachable;
    gauge('regcache_store_reachable', 'CACHE_STORE: 1 when the bucket answers, else 0', reachable && (async () => ((await reachable()) ? 1 : 0)));
    gauge('regcache_leaf_certificates_minted', 'Leaf certificates minted since start', sources.leavesMinted);
    gauge('regcache_tunnels_open', 'Pass-through tunnels open now', sources.tunnelsOpen);
    gauge('regcache_workers_running', 'Worker processes serving now (WORKERS > 1)', sources.workersRunning);
    gauge('regcache_workers_expected', 'Worker processes there should be (WORKERS)', sources.workersExpected);
    gauge('regcache_connections_waiting', 'Connections the primary accepted that wait for a worker to take them (WORKERS > 1)', sources.connectionsWaiting);
  }

  /**
   * The registry labels there will be (the allowlist's, and "other"), made at 0 for each source: a ratio
   * of two increase()s is then exact over any range (both series have every sample), and the first
   * request of a registry is not lost to rate().
   */
  expectRegistries(labels: string[]): void {
    for (const registry of new Set([...labels, 'other'])) {
      for (const source of ['cache', 'upstream']) {
        this.content.inc({ source, registry }, 0);
        this.bytes.inc({ source, registry }, 0);
      }
      this.saved.inc({ registry }, 0);
    }
  }

  /** A request's line, as the access log writes it. */
  request(r: CountedRequest): void {
    if (r.kind === 'admin' || r.kind === 'admin-auth') {
      this.admin.inc({ endpoint: ADMIN_ENDPOINTS.has(r.path) ? r.path : 'other' });
      return;
    }
    const { cache, kind, registry, bytes } = r;
    this.requests.inc({ cache, kind, registry });
    if (r.redirect) this.redirects.inc();
    if (cache === 'CORRUPT') this.corrupt.inc();
    if (bytes > 0 && !OWN_ANSWERS.has(cache)) {
      const from = FROM_CACHE.has(cache) ? 'cache' : 'upstream';
      this.bytes.inc({ source: from, registry }, bytes);
      this.activity.windows.bytes(from, bytes);
    }
    const source = CONTENT_KINDS.has(kind) ? CONTENT_SOURCE[cache] : undefined;
    if (source) {
      this.content.inc({ source, registry });
      this.activity.windows.request(source);
      if (source === 'cache' && kind !== 'blob' && r.method === 'GET') this.saved.inc({ registry });
    }
    this.activity.request(r);
  }

  /** A fill started in this process: counted, and listed with its progress until it settles. */
  fillStarted(fill: RunningFill, registry: string, repository: string | null): void {
    this.fills.inc();
    this.activity.fillStarted(fill, registry, repository);
    fill.once('settled', () => this.activity.fillSettled(fill));
  }

  workerRestarted(): void {
    this.workerRestarts.inc();
  }

  joined(): void {
    this.coalesced.inc();
  }

  evicted(reason: string, entries: number): void {
    this.evictions.inc({ reason }, entries);
  }

  upstreamError(cause: string): void {
    this.upstreamErrors.inc({ cause });
  }

  authCheck(result: 'valid' | 'invalid' | 'malformed' | 'cached_valid' | 'cached_invalid' | 'unchecked'): void {
    this.authChecks.inc({ result });
  }

  /** "99;w=21600" -> 99 */
  rateLimitRemaining(value: string): void {
    const n = Number.parseInt(value, 10);
    if (!Number.isFinite(n)) return;
    // Across workers the lowest report counts: each worker keeps the last one it saw, and the allowance only
    // shrinks within Docker Hub's window.
    this.rateLimit ??= new Gauge({
      name: 'regcache_docker_hub_ratelimit_remaining',
      help: "Docker Hub's ratelimit-remaining, as last reported",
      registers: [this.registry],
      aggregator: 'min',
    });
    this.rateLimit.set(n);
  }
}
