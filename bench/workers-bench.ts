// The workers benchmark: what WORKERS buys, one row per value, in one run (bench/workers/*):
//   warm aggregate MB/s of a big cached blob (curl clients through CONNECT, intercepted),
//   HIT requests/s of a small cached manifest (the mirror port with wrk; CONNECT + TLS with the node
//   generator), and
//   the load bench's 500-connection mixed load, for the set-up latency of new tunnels under it.
// Options (environment): BENCH_WORKERS ("1 2", plus the machine's CPU count when it has more than 2),
// BENCH_WORKERS_BLOB_MB (256), BENCH_WORKERS_CLIENTS (4), BENCH_WORKERS_WARM_SECONDS (15), and the load
// bench's BENCH_LOAD_* (bench/load/options.ts). Any error exits non-zero and leaves docs/benchmarks.md as
// it was; otherwise its workers-bench section is rewritten. Results: stdout, bench/results/workers-<time>.json.
// Run by `npm run bench`, or once built: `node --import tsx bench/workers-bench.ts` (with a hard
// `ulimit -n` >= 4 x BENCH_LOAD_CONNECTIONS, as for the load bench).
import os from 'node:os';
import path from 'node:path';
import { makeImage, pushImage } from '../test/harness/images.js';
import { envInt, runBench, writeDocsSection } from './measure.js';
import { setUpBench } from './load/bench-setup.js';
import { describeMachine } from './load/machine.js';
import { loadOptions } from './load/options.js';
import { markdownSection, textReport, type WorkersBenchResult } from './workers/report.js';
import { BIG_REPO, runWithWorkers, type WorkersRun } from './workers/run-workers.js';

const COMMANDS = ['npm run bench', 'npm run --silent build && node --import tsx bench/workers-bench.ts'];

function workerCounts(): number[] {
  const raw = process.env.BENCH_WORKERS?.trim();
  const counts = raw ? raw.split(/[\s,]+/).map(Number) : [1, 2, ...(os.availableParallelism() > 2 ? [os.availableParallelism()] : [])];
  if (counts.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`BENCH_WORKERS must list whole numbers >= 1, got ${JSON.stringify(raw)}`);
  return counts;
}

function failuresOf(runs: WorkersRun[]): string[] {
  const failures: string[] = [];
  for (const run of runs) {
    const at = `WORKERS=${run.workers}`;
    if (run.warm.errors > 0) failures.push(`${at}, warm: ${run.warm.errors} failed downloads (${run.warm.errorSamples.join('; ')})`);
    for (const row of [run.hitMirror, run.hitIntercepted])
      if (row.errors > 0) failures.push(`${at}, HIT ${row.client}: ${row.errors} errors (${row.errorDetail})`);
    for (const c of run.mixed.classes) if (c.errors > 0) failures.push(`${at}, load ${c.name}: ${c.errors} errors ${JSON.stringify(c.errorsByKind)}`);
    if (!run.mixed.regcache.health.healthy) failures.push(`${at}, load: regcache not healthy afterwards (/healthz ${run.mixed.regcache.health.healthz})`);
    for (const c of run.mixed.consistency) failures.push(`${at}, load: ${c}`);
    if (run.workers > 1 && run.servedBy.length !== run.workers) failures.push(`${at}: HITs were served by workers ${run.servedBy.join(', ')} only`);
  }
  return failures;
}

let failed = false;
const status = await runBench('workers-bench', 'workers-', async (root) => {
  const counts = workerCounts();
  const load = loadOptions();
  const warm = { clients: envInt('BENCH_WORKERS_CLIENTS', 4), seconds: envInt('BENCH_WORKERS_WARM_SECONDS', 15) };
  const blobBytes = envInt('BENCH_WORKERS_BLOB_MB', 256) * 1024 * 1024;
  const machine = await describeMachine();
  const loadBefore = os.loadavg()[0]!;
  process.stderr.write('setting up: registry, images, push...\n');
  const s = await setUpBench(root);
  try {
    const big = await makeImage(path.join(root, 'big'), { layers: [{ size: blobBytes, seed: 'workers-bench' }], gzipLevel: 0 });
    await pushImage(s.registry.url, BIG_REPO, 'v1', big, { caFile: s.ca.certFile });
    const runs: WorkersRun[] = [];
    for (const workers of counts) runs.push(await runWithWorkers(s, big, workers, { hit: load.hit, warm, mixed: load.mixed }));
    const result: WorkersBenchResult = {
      date: new Date().toISOString(),
      machine,
      loadAverage: { before: loadBefore, after: os.loadavg()[0]! },
      blob: { digest: big.layers[0]!.digest, bytes: big.layers[0]!.size },
      manifestBytes: s.image.manifest.length,
      warmOptions: warm,
      hitConnections: load.hit.connections,
      hitSeconds: load.hit.seconds,
      mixedConnections: load.mixed.connections,
      runs,
      failures: failuresOf(runs),
      commands: COMMANDS,
    };
    failed = result.failures.length > 0;
    if (failed) process.stderr.write(`${result.failures.length} failure(s): docs/benchmarks.md left as it was\n`);
    else await writeDocsSection('workers-bench', markdownSection(result));
    return { text: textReport(result), json: { ...result } };
  } finally {
    await s.registry.stop();
  }
});
process.exitCode = status !== 0 ? status : failed ? 1 : 0;
