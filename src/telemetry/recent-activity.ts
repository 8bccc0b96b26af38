// What the status page lists besides the counters: the most-pulled images, the latest errors and the
// fills running now. Fed from the same calls as the counters (Metrics.request, fill events), kept in
// memory and bounded (per-image counts cannot be Prometheus labels: clients name any image). With
// WORKERS > 1 each process keeps its own and the primary merges them (mergeActivity).
import { mergeWindows, RequestWindows, type MinuteCounts } from './request-windows.js';

/** One answered request, as the access log counts it. */
export interface CountedRequest {
  cache: string;
  kind: string;
  method: string;
  status: number;
  bytes: number;
  path: string; // without its query
  registry: string; // the allowlist entry, or "other" (a bounded label)
  repository: string | null;
  tag: string | null; // a manifest requested by tag
  digest: string | null;
  redirect: boolean;
  error: string | null;
  reason: string | null;
}

export interface ErrorEntry {
  time: string; // ISO 8601
  cache: string;
  status: number;
  registry: string;
  repository: string | null;
  kind: string;
  digest: string | null;
  message: string;
}

export interface FillProgress {
  registry: string;
  repository: string | null;
  digest: string;
  written: number;
  size: number | null; // null: upstream sent no Content-Length
  startedAt: string; // ISO 8601
}

/** A fill as the cache reports it: read for its progress while it runs. */
export interface RunningFill {
  readonly digest: string;
  readonly written: number;
  readonly expectedSize: number | null;
  once(event: 'settled', listener: () => void): unknown;
}

/** One process's activity, as JSON (what a worker sends the primary). */
export interface ActivitySnapshot {
  startedAt: string;
  minutes: MinuteCounts[];
  pulls: Record<string, number>; // "registry/repository:tag" -> manifest-by-tag requests answered
  errors: ErrorEntry[]; // oldest first
  fills: FillProgress[];
}

const MAX_IMAGES = 1000; // past it the least-pulled image is forgotten
const MAX_ERRORS = 50;

export class RecentActivity {
  readonly windows: RequestWindows;
  private readonly startedAt: string;
  private readonly pulls = new Map<string, number>();
  private readonly errors: ErrorEntry[] = [];
  private readonly fills = new Map<RunningFill, Omit<FillProgress, 'written' | 'size'>>();

  constructor(private readonly now: () => number = Date.now) {
    this.windows = new RequestWindows(now);
    this.startedAt = new Date(now()).toISOString();
  }

  /** A request's line: the image it pulled (a manifest by tag that was answered), or the error it met. */
  request(r: CountedRequest): void {
    if (r.kind === 'manifest-by-tag' && r.tag !== null && r.repository !== null && r.status < 400) this.countPull(`${r.registry}/${r.repository}:${r.tag}`);
    const message = r.error ?? (r.cache === 'DENIED' || r.cache === 'CORRUPT' || r.status >= 500 ? (r.reason ?? `status ${r.status}`) : null);
    if (message === null) return;
    this.errors.push({
      time: new Date(this.now()).toISOString(),
      cache: r.cache,
      status: r.status,
      registry: r.registry,
      repository: r.repository,
      kind: r.kind,
      digest: r.digest,
      message: message.slice(0, 300),
    });
    if (this.errors.length > MAX_ERRORS) this.errors.shift();
  }

  fillStarted(fill: RunningFill, registry: string, repository: string | null): void {
    this.fills.set(fill, { registry, repository, digest: fill.digest, startedAt: new Date(this.now()).toISOString() });
  }

  fillSettled(fill: RunningFill): void {
    this.fills.delete(fill);
  }

  snapshot(): ActivitySnapshot {
    return {
      startedAt: this.startedAt,
      minutes: this.windows.snapshot(),
      pulls: Object.fromEntries(this.pulls),
      errors: [...this.errors],
      fills: [...this.fills].map(([fill, f]) => ({ ...f, written: fill.written, size: fill.expectedSize })),
    };
  }

  private countPull(image: string): void {
    this.pulls.set(image, (this.pulls.get(image) ?? 0) + 1);
    if (this.pulls.size <= MAX_IMAGES) return;
    let least: string | null = null;
    for (const [name, n] of this.pulls) if (name !== image && (least === null || n < this.pulls.get(least)!)) least = name;
    if (least !== null) this.pulls.delete(least);
  }
}

/** Several processes' activity as one: the earliest start, minutes and pulls summed, errors by time. */
export function mergeActivity(parts: ActivitySnapshot[]): ActivitySnapshot {
  const pulls: Record<string, number> = {};
  for (const part of parts) for (const [image, n] of Object.entries(part.pulls)) pulls[image] = (pulls[image] ?? 0) + n;
  return {
    startedAt: parts.map((p) => p.startedAt).sort()[0] ?? new Date().toISOString(),
    minutes: mergeWindows(parts.map((p) => p.minutes)),
    pulls,
    errors: parts
      .flatMap((p) => p.errors)
      .sort((a, b) => a.time.localeCompare(b.time))
      .slice(-MAX_ERRORS),
    fills: parts.flatMap((p) => p.fills),
  };
}
