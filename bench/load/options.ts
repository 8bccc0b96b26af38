// The load bench's options, from the environment: shared by the load bench and the workers bench, which
// runs the same HIT and 500-connection loads once per WORKERS value.
import type { HitOptions } from './hit-throughput.js';
import type { MixedOptions } from './mixed-load.js';

export function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  const n = Number(raw === undefined || raw.trim() === '' ? fallback : raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  return n;
}

/** Both parts' options, from the environment (BENCH_LOAD_*; see load-bench.ts). */
export function loadOptions(): { hit: HitOptions; mixed: MixedOptions } {
  return {
    hit: {
      seconds: positiveInt('BENCH_LOAD_HIT_SECONDS', 10),
      warmupSeconds: positiveInt('BENCH_LOAD_WARMUP_SECONDS', 2),
      connections: positiveInt('BENCH_LOAD_HIT_CONNECTIONS', 50),
      wrkThreads: 2,
    },
    mixed: {
      seconds: positiveInt('BENCH_LOAD_SECONDS', 30),
      connections: positiveInt('BENCH_LOAD_CONNECTIONS', 500),
      // Tunnels are the class that opens new connections during the load, and each new connection waits
      // in the accept queue while the others keep regcache busy (see the report): a few tunnel loops
      // measure that wait; many would only lengthen the queue.
      shares: { hit: 75, miss: 20, tunnel: 5 },
      maxRequests: positiveInt('BENCH_LOAD_MAX_REQUESTS', 300_000),
      missBlobs: positiveInt('BENCH_LOAD_MISS_BLOBS', 20_000),
      rssBoundMb: positiveInt('BENCH_LOAD_RSS_MB', 300),
      // Saturated on purpose (every connection sends its next request at once), so waits are long; a
      // request not answered within 30 s counts as an error, i.e. a stall.
      timeoutMs: 30_000,
    },
  };
}
