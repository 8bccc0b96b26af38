// The load benchmark, in two parts (bench/load/*):
//   1. HIT requests/s and p99 of one small cached manifest by digest under wrk-style load: regcache's
//      mirror port with wrk, beside docker-registry serving it from its own disk (the baseline) and
//      docker-registry in pull-through mode; then the intercepted path (CONNECT + TLS, keep-alive) with
//      the bench's own node generator, beside docker-registry over TLS with the same generator.
//   2. BENCH_LOAD_CONNECTIONS (500) concurrent connections through the proxy port mixing HITs, MISSes
//      (new digests) and tunnels for BENCH_LOAD_SECONDS (30) or BENCH_LOAD_MAX_REQUESTS, whichever comes
//      first: requests, errors, requests/s and p50/p99 per class, regcache's peak RSS against
//      BENCH_LOAD_RSS_MB (300), CPU, open descriptors, and its health afterwards.
// Zero errors is required: any error (part 2, or a regcache row of part 1), an unhealthy regcache or
// counts that disagree with regcache's log exit non-zero; the RSS bound is a target (PASS/FAIL).
// Results: stdout, bench/results/load-<time>.json, and the load-bench section of docs/benchmarks.md
// (rewritten after a run without failures). Run by `npm run bench`, or once built:
// `node --import tsx bench/load-bench.ts` (with a hard `ulimit -n` >= 4 x connections: node raises its
// soft limit to the hard one by itself).
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runBench, writeDocsSection } from './measure.js';
import { setUpBench } from './load/bench-setup.js';
import { benchHitThroughput } from './load/hit-throughput.js';
import { describeMachine } from './load/machine.js';
import { benchMixedLoad } from './load/mixed-load.js';
import { loadOptions } from './load/options.js';
import { markdownSection, textReport, type LoadBenchResult } from './load/report.js';

const DOC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../docs/benchmarks.md');
const COMMANDS = ['npm run bench', 'npm run --silent build && node --import tsx bench/load-bench.ts'];

/** What breaks the zero-error requirement. */
function failuresOf(r: Omit<LoadBenchResult, 'failures'>): string[] {
  const failures: string[] = [];
  for (const row of r.hit.rows) if (row.regcache && row.errors > 0) failures.push(`part 1, ${row.id}: ${row.errors} errors (${row.errorDetail})`);
  for (const c of r.mixed.classes)
    if (c.errors > 0) failures.push(`part 2, ${c.name}: ${c.errors} errors ${JSON.stringify(c.errorsByKind)}: ${c.errorSamples.join('; ')}`);
  if (!r.mixed.regcache.health.healthy)
    failures.push(
      `part 2: regcache not healthy afterwards (/healthz ${r.mixed.regcache.health.healthz}, log ${JSON.stringify(r.mixed.regcache.health.linesByLevel)})`,
    );
  for (const c of r.mixed.consistency) failures.push(`part 2: ${c}`);
  return failures;
}

let failed = false;
const status = await runBench('load-bench', 'load-', async (root) => {
  const opts = loadOptions();
  const machine = await describeMachine();
  const loadBefore = os.loadavg()[0]!;
  process.stderr.write('setting up: registry, image, push...\n');
  const s = await setUpBench(root);
  try {
    const hit = await benchHitThroughput(s, opts.hit);
    const mixed = await benchMixedLoad(s, opts.mixed);
    const loadAverage = { before: loadBefore, after: os.loadavg()[0]! };
    const partial = { date: new Date().toISOString(), machine, loadAverage, hit, mixed, commands: COMMANDS };
    const result: LoadBenchResult = { ...partial, failures: failuresOf(partial) };
    failed = result.failures.length > 0;
    if (failed) process.stderr.write(`${result.failures.length} failure(s): ${path.relative(process.cwd(), DOC)} left as it was\n`);
    else await writeDocsSection('load-bench', markdownSection(result));
    return { text: textReport(result), json: { ...result } };
  } finally {
    await s.registry.stop();
  }
});
process.exitCode = status !== 0 ? status : failed ? 1 : 0;
