// Prometheus metrics (prom-client), on GET /metrics. One Metrics per running proxy, on a registry of its
// own (two proxies in one process count apart), created by proxy.ts and handed to what counts: the
// access log, the password guard, and proxy.ts's listeners on the fill and eviction events. Gauges that
// mirror state owned elsewhere (fills in flight, store size, leaves minted, tunnels open) are read from
// their owners at scrape time, so nothing has to be kept in sync. With WORKERS > 1 every process has its
// own Metrics, each watching only what it owns (the primary: the store and the fills; a worker: its leaves
// and tunnels), and /metrics is their sum (prom-client's AggregatorRegistry.aggregate, in primary.ts).
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

export interface MetricsSources {
  fillsInFlight: () => number;
  storeBytes: () => number;
  storeEntries: () => number;
  leavesMinted: () => number;
  tunnelsOpen: () => number;
}

/** What /metrics serves: one process's registry, or with WORKERS > 1 the whole tree's, aggregated. */
export interface MetricsExposition {
  readonly contentType: string;
  metrics(): Promise<string>;
}

const FROM_CACHE = new Set(['HIT', 'REVALIDATED', 'STALE', 'CORRUPT']); // CORRUPT: the stored bytes sent before the cut
const OWN_ANSWERS = new Set(['ADMIN', 'LOCAL', 'REJECTED']); // regcache's own bodies: neither from the cache nor upstream

export class Metrics {
  readonly registry = new Registry();
  private readonly requests = new Counter({
    name: 'regcache_requests_total',
    help: 'Intercepted requests by cache status and kind',
    labelNames: ['cache', 'kind'],
    registers: [this.registry],
  });
  private readonly bytes = new Counter({
    name: 'regcache_bytes_served_total',
    help: 'Body bytes sent to clients, by source (cache or upstream)',
    labelNames: ['source'],
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

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'regcache_' });
  }

  /** Gauges read from their owners at scrape time: those whose owner lives in this process. */
  watch(sources: Partial<MetricsSources>): void {
    const gauge = (name: string, help: string, read: (() => number) | undefined) =>
      read &&
      new Gauge({
        name,
        help,
        registers: [this.registry],
        collect() {
          this.set(read());
        },
      });
    gauge('regcache_fills_in_flight', 'Upstream fills running now', sources.fillsInFlight);
    gauge('regcache_store_bytes', 'Bytes of content in the store', sources.storeBytes);
    gauge('regcache_store_entries', 'Entries in the store', sources.storeEntries);
    gauge('regcache_leaf_certificates_minted', 'Leaf certificates minted since start', sources.leavesMinted);
    gauge('regcache_tunnels_open', 'Pass-through tunnels open now', sources.tunnelsOpen);
  }

  request(cache: string, kind: string, bytes: number, redirected = false): void {
    this.requests.inc({ cache, kind });
    if (redirected) this.redirects.inc();
    if (bytes > 0 && !OWN_ANSWERS.has(cache)) this.bytes.inc({ source: FROM_CACHE.has(cache) ? 'cache' : 'upstream' }, bytes);
  }

  fillStarted(): void {
    this.fills.inc();
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
