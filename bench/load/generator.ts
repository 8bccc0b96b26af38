// The load generator process (forked by load-plan.ts): receives a LoadPlan, opens every keep-alive
// connection at once, then issues GETs back to back on all of them (and on a new connection per request
// for the other classes) until the time or request bound is reached, and sends back counts, errors and
// latency percentiles (from an HDR histogram in microseconds).
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { Http1Connection, RequestFailure, type FailureKind } from './http1-connection.js';
import type { ClassPlan, ClassResult, LoadPlan, LoadResult, Percentiles, PlannedRequest } from './load-plan.js';
import { openFilesLimit } from './open-files.js';

const ERROR_SAMPLES = 5;

class ClassRun {
  readonly latency = createHistogram();
  readonly setup = createHistogram();
  requests = 0;
  bytes = 0;
  connects = 0;
  errors = 0;
  readonly errorsByKind: Partial<Record<FailureKind, number>> = {};
  readonly errorSamples: string[] = [];
  ranOut = false;
  private nextIndex = 0;

  constructor(readonly plan: ClassPlan) {}

  /** The next request to issue, or null when a once-only class has used them all. */
  take(): PlannedRequest | null {
    const { requests } = this.plan;
    if (this.plan.once && this.nextIndex >= requests.length) {
      this.ranOut = true;
      return null;
    }
    return requests[this.nextIndex++ % requests.length]!;
  }

  succeeded(startedMs: number, bytes: number): void {
    record(this.latency, performance.now() - startedMs);
    this.requests++;
    this.bytes += bytes;
  }

  failed(err: unknown): void {
    const kind: FailureKind = err instanceof RequestFailure ? err.kind : 'protocol';
    this.errors++;
    this.errorsByKind[kind] = (this.errorsByKind[kind] ?? 0) + 1;
    if (this.errorSamples.length < ERROR_SAMPLES) this.errorSamples.push(`${kind}: ${(err as Error).message}`);
  }

  result(): ClassResult {
    return {
      name: this.plan.name,
      connections: this.plan.connections,
      requests: this.requests,
      errors: this.errors,
      errorsByKind: this.errorsByKind,
      errorSamples: this.errorSamples,
      latencyMs: percentiles(this.latency),
      setupMs: this.plan.keepAlive ? percentiles(this.setup) : null,
      connects: this.connects,
      bytes: this.bytes,
      ranOut: this.ranOut,
    };
  }
}

function record(h: RecordableHistogram, ms: number): void {
  h.record(Math.max(1, Math.round(ms * 1000)));
}

function percentiles(h: RecordableHistogram): Percentiles {
  if (h.count === 0) return { p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  const ms = (us: number): number => us / 1000;
  return { p50: ms(h.percentile(50)), p90: ms(h.percentile(90)), p99: ms(h.percentile(99)), max: ms(h.max), mean: ms(h.mean) };
}

async function run(plan: LoadPlan): Promise<LoadResult> {
  const runs = plan.classes.map((p) => new ClassRun(p));
  const cpu0 = process.cpuUsage();

  /** TCP, CONNECT and TLS for a keep-alive connection, timed; null (and an error counted) if it fails. */
  async function openKeepAlive(c: ClassRun): Promise<Http1Connection | null> {
    const t0 = performance.now();
    try {
      const conn = await Http1Connection.open(c.plan.endpoint, plan.timeoutMs);
      record(c.setup, performance.now() - t0);
      c.connects++;
      return conn;
    } catch (err) {
      c.failed(err);
      return null;
    }
  }

  // Phase 1: every keep-alive connection is opened, all at once (clients arriving together), before the
  // timed phase. Under load, Node accepts one connection per event-loop iteration (libuv >= 1.45), so
  // connections opened while hundreds of others are busy would measure the accept queue, not requests.
  const setupStarted = performance.now();
  const pools = await Promise.all(runs.map((c) => (c.plan.keepAlive ? Promise.all(Array.from({ length: c.plan.connections }, () => openKeepAlive(c))) : [])));
  const setupWallMs = performance.now() - setupStarted;

  // Phase 2: requests back to back until the time or request bound.
  const started = performance.now();
  const deadline = started + plan.durationMs;
  let issued = 0;
  const mayIssue = (): boolean => performance.now() < deadline && issued < plan.maxRequests;

  /** GETs back to back on one connection; a failed request costs the connection (a new one follows). */
  async function keepAliveLoop(c: ClassRun, opened: Http1Connection | null): Promise<void> {
    let conn = opened;
    while (mayIssue()) {
      const req = c.take();
      if (!req) break;
      issued++;
      try {
        conn = conn?.usable ? conn : await openKeepAlive(c);
        if (!conn) continue; // the failure is counted; try again with the next request
        const t0 = performance.now();
        const { bytes } = await conn.get(req.path, c.plan.headers, req.digest, plan.timeoutMs);
        c.succeeded(t0, bytes);
      } catch (err) {
        c.failed(err);
        conn?.destroy();
        conn = null;
      }
    }
    conn?.close();
  }

  /** One new connection per request (CONNECT, TLS resumed from the previous one when possible, GET, close). */
  async function connectionPerRequestLoop(c: ClassRun): Promise<void> {
    let session: Buffer | undefined;
    while (mayIssue()) {
      const req = c.take();
      if (!req) break;
      issued++;
      const t0 = performance.now();
      let conn: Http1Connection | null = null;
      try {
        conn = await Http1Connection.open(c.plan.endpoint, plan.timeoutMs, session);
        c.connects++;
        const { bytes } = await conn.get(req.path, c.plan.headers, req.digest, plan.timeoutMs);
        c.succeeded(t0, bytes);
        session = conn.session ?? session;
        conn.close();
      } catch (err) {
        c.failed(err);
        conn?.destroy();
      }
    }
  }

  const loops = runs.flatMap((c, i) =>
    c.plan.keepAlive ? pools[i]!.map((conn) => keepAliveLoop(c, conn)) : Array.from({ length: c.plan.connections }, () => connectionPerRequestLoop(c)),
  );
  await Promise.all(loops);
  const wallMs = performance.now() - started;
  const cpu = process.cpuUsage(cpu0);
  return { setupWallMs, wallMs, cpuSeconds: (cpu.user + cpu.system) / 1e6, openFilesLimit: await openFilesLimit('self'), classes: runs.map((c) => c.result()) };
}

process.once('message', (plan) => {
  run(plan as LoadPlan).then(
    (result) => process.send!(result, () => process.exit(0)),
    (err: Error) => {
      process.stderr.write(`load generator failed: ${err.stack ?? err.message}\n`);
      process.exit(1);
    },
  );
});
