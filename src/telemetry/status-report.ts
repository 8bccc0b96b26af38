// The status summary: what the status page shows, what `regcache status` prints and `--json` emits.
// Built from the same counters /metrics serves (the registry's JSON, or with WORKERS > 1 the tree's
// aggregate) and from RecentActivity's windows and lists, so the page, the CLI, /metrics and a
// Prometheus query over the counters all show one count. Nothing here counts anything itself.
import type { MetricObjectWithValues, MetricValue } from 'prom-client';
import { VERSION } from '../config/version.js';
import type { ActivitySnapshot, ErrorEntry, FillProgress } from './recent-activity.js';
import { DAY_MINUTES, HOUR_MINUTES, windowCounts, type WindowCounts } from './request-windows.js';

export type MetricsJson = MetricObjectWithValues<MetricValue<string>>[];

/** A share: of content requests, or of body bytes, that came from the cache. */
export interface Ratio {
  cache: number;
  upstream: number;
  ratio: number | null; // cache / (cache + upstream); null when both are 0
}

export interface RatioPair {
  requests: Ratio;
  bytes: Ratio;
}

export interface WorkerState {
  slot: number;
  pid: number | null;
  state: 'serving' | 'starting' | 'restarting';
  since: string; // ISO 8601: started, or exited (restarting)
  restarts: number;
}

/** The processes behind the figures: one, a primary and its workers, or one replica of a fleet. */
export interface Processes {
  mode: 'single' | 'workers' | 'replica';
  workers: WorkerState[]; // mode "workers" only
  restarts: number; // workers replaced since start
  replica: string | null; // mode "replica": this replica's name in the bucket's access batches
}

export interface StatusReport {
  version: string;
  generatedAt: string;
  startedAt: string;
  hitRatio: { lastHour: RatioPair; lastDay: RatioPair; sinceStart: RatioPair };
  requests: Record<string, number>; // by cache status, since start (regcache_requests_total)
  upstreamManifestGetsSaved: Record<string, number>; // by registry (regcache_upstream_manifest_gets_saved_total)
  dockerHubRemaining: number | null; // regcache_docker_hub_ratelimit_remaining, once Docker Hub has said
  upstreamErrors: Record<string, number>; // by cause, non-zero ones
  store: { bytes: number; maxBytes: number; entries: number; evictions: Record<string, number>; reachable: boolean | null };
  fills: FillProgress[];
  topImages: { image: string; pulls: number }[];
  recentErrors: ErrorEntry[]; // newest first
  processes: Processes;
}

const TOP_IMAGES = 10;

/** The summary as of `now`, from the counters (`metrics`) and the activity that go with them. */
export function buildStatusReport(metrics: MetricsJson, activity: ActivitySnapshot, processes: Processes, now = Date.now()): StatusReport {
  const values = (name: string): MetricValue<string>[] => metrics.find((m) => m.name === name)?.values ?? [];
  const sum = (name: string, where: (labels: Partial<Record<string, string | number>>) => boolean = () => true): number =>
    values(name)
      .filter((v) => where(v.labels))
      .reduce((n, v) => n + v.value, 0);
  const byLabel = (name: string, label: string): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const v of values(name)) {
      const key = String(v.labels[label] ?? '');
      out[key] = (out[key] ?? 0) + v.value;
    }
    return out;
  };
  const nonZero = (record: Record<string, number>) => Object.fromEntries(Object.entries(record).filter(([, n]) => n > 0));
  const fromWindow = (w: WindowCounts): RatioPair => ({ requests: ratio(w.cacheRequests, w.upstreamRequests), bytes: ratio(w.cacheBytes, w.upstreamBytes) });
  const reachable = values('regcache_store_reachable');
  const remaining = values('regcache_docker_hub_ratelimit_remaining');
  return {
    version: VERSION,
    generatedAt: new Date(now).toISOString(),
    startedAt: activity.startedAt,
    hitRatio: {
      lastHour: fromWindow(windowCounts(activity.minutes, HOUR_MINUTES, now)),
      lastDay: fromWindow(windowCounts(activity.minutes, DAY_MINUTES, now)),
      sinceStart: {
        requests: ratio(
          sum('regcache_content_requests_total', (l) => l.source === 'cache'),
          sum('regcache_content_requests_total', (l) => l.source === 'upstream'),
        ),
        bytes: ratio(
          sum('regcache_bytes_served_total', (l) => l.source === 'cache'),
          sum('regcache_bytes_served_total', (l) => l.source === 'upstream'),
        ),
      },
    },
    requests: byLabel('regcache_requests_total', 'cache'),
    upstreamManifestGetsSaved: byLabel('regcache_upstream_manifest_gets_saved_total', 'registry'),
    dockerHubRemaining: remaining.length > 0 ? Math.min(...remaining.map((v) => v.value)) : null,
    upstreamErrors: nonZero(byLabel('regcache_upstream_errors_total', 'cause')),
    store: {
      bytes: sum('regcache_store_bytes'),
      maxBytes: sum('regcache_store_max_bytes'),
      entries: sum('regcache_store_entries'),
      evictions: byLabel('regcache_evictions_total', 'reason'),
      reachable: reachable.length > 0 ? reachable.every((v) => v.value === 1) : null,
    },
    fills: [...activity.fills].sort((a, b) => a.startedAt.localeCompare(b.startedAt)),
    topImages: Object.entries(activity.pulls)
      .map(([image, pulls]) => ({ image, pulls }))
      .sort((a, b) => b.pulls - a.pulls || a.image.localeCompare(b.image))
      .slice(0, TOP_IMAGES),
    recentErrors: [...activity.errors].reverse(),
    processes,
  };
}

function ratio(cache: number, upstream: number): Ratio {
  return { cache, upstream, ratio: cache + upstream === 0 ? null : cache / (cache + upstream) };
}
