// Content requests (regcache_content_requests_total) and bytes served (regcache_bytes_served_total) by
// source, per minute, for the last day: what the status page's "last hour" and "last day" ratios are
// summed from. Prometheus computes the same from the counters with rate();
// this is for those who have no Prometheus. Counted by Metrics.request, in the same call as the
// counters, so a window that covers the whole uptime equals the counters. With WORKERS > 1 each process
// keeps its own, and the primary adds them up minute by minute (mergeWindows).

export type Source = 'cache' | 'upstream';

/** One minute's counts: requests and body bytes by where they came from. */
export interface MinuteCounts {
  minute: number; // minutes since the epoch
  cacheRequests: number;
  upstreamRequests: number;
  cacheBytes: number;
  upstreamBytes: number;
}

/** A window's sums. */
export type WindowCounts = Omit<MinuteCounts, 'minute'>;

const MINUTE_MS = 60_000;
export const HOUR_MINUTES = 60;
export const DAY_MINUTES = 24 * 60;

export class RequestWindows {
  private readonly minutes = new Map<number, MinuteCounts>(); // at most DAY_MINUTES of them

  constructor(private readonly now: () => number = Date.now) {}

  /** A content request answered from `source`. */
  request(source: Source): void {
    this.current()[source === 'cache' ? 'cacheRequests' : 'upstreamRequests']++;
  }

  /** Body bytes served from `source`. */
  bytes(source: Source, n: number): void {
    this.current()[source === 'cache' ? 'cacheBytes' : 'upstreamBytes'] += n;
  }

  private current(): MinuteCounts {
    const minute = Math.floor(this.now() / MINUTE_MS);
    let counts = this.minutes.get(minute);
    if (!counts) {
      counts = { minute, cacheRequests: 0, upstreamRequests: 0, cacheBytes: 0, upstreamBytes: 0 };
      this.minutes.set(minute, counts);
      this.prune(minute);
    }
    return counts;
  }

  /** The minutes of the last day, oldest first (JSON: what a worker sends the primary). */
  snapshot(): MinuteCounts[] {
    this.prune(Math.floor(this.now() / MINUTE_MS));
    return [...this.minutes.values()].map((c) => ({ ...c })).sort((a, b) => a.minute - b.minute);
  }

  private prune(current: number): void {
    for (const minute of this.minutes.keys()) if (minute <= current - DAY_MINUTES) this.minutes.delete(minute);
  }
}

/** Several processes' minutes as one: summed per minute. */
export function mergeWindows(parts: MinuteCounts[][]): MinuteCounts[] {
  const byMinute = new Map<number, MinuteCounts>();
  for (const part of parts) {
    for (const c of part) {
      const sum = byMinute.get(c.minute) ?? { minute: c.minute, cacheRequests: 0, upstreamRequests: 0, cacheBytes: 0, upstreamBytes: 0 };
      sum.cacheRequests += c.cacheRequests;
      sum.upstreamRequests += c.upstreamRequests;
      sum.cacheBytes += c.cacheBytes;
      sum.upstreamBytes += c.upstreamBytes;
      byMinute.set(c.minute, sum);
    }
  }
  return [...byMinute.values()].sort((a, b) => a.minute - b.minute);
}

/** The sums of the last `minutes` minutes (the current one included) as of `now`. */
export function windowCounts(minutes: MinuteCounts[], span: number, now: number): WindowCounts {
  const current = Math.floor(now / MINUTE_MS);
  const sum: WindowCounts = { cacheRequests: 0, upstreamRequests: 0, cacheBytes: 0, upstreamBytes: 0 };
  for (const c of minutes) {
    if (c.minute <= current - span || c.minute > current) continue;
    sum.cacheRequests += c.cacheRequests;
    sum.upstreamRequests += c.upstreamRequests;
    sum.cacheBytes += c.cacheBytes;
    sum.upstreamBytes += c.upstreamBytes;
  }
  return sum;
}
