// The workers bench's report: one row per WORKERS value, side by side, for stdout and docs/benchmarks.md.
import type { Machine } from '../load/machine.js';
import { markdownTable, textTable } from '../load/report.js';
import type { WarmOptions } from './warm-throughput.js';
import type { WorkersRun } from './run-workers.js';

export interface WorkersBenchResult {
  date: string;
  machine: Machine;
  loadAverage: { before: number; after: number };
  blob: { digest: string; bytes: number };
  manifestBytes: number;
  warmOptions: WarmOptions;
  hitConnections: number;
  hitSeconds: number;
  mixedConnections: number;
  runs: WorkersRun[];
  failures: string[];
  commands: string[];
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-');
const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const x = (n: number, base: number): string => (Number.isFinite(n / base) ? `${(n / base).toFixed(2)}x` : '-');

function throughputTable(r: WorkersBenchResult): string[][] {
  const base = r.runs[0]!;
  const rows = [
    [
      'WORKERS',
      'warm MB/s',
      'vs 1',
      'regcache cores',
      'regcache CPU ns/B',
      'curl cores',
      'HIT req/s mirror (wrk)',
      'vs 1',
      'p99 ms',
      'HIT req/s CONNECT+TLS',
      'vs 1',
      'p99 ms',
      'regcache cores',
      'regcache CPU µs/req',
      'errors',
    ],
  ];
  for (const run of r.runs) {
    const w = run.warm;
    const hit = run.hitIntercepted;
    rows.push([
      String(run.workers),
      f1(w.megabytesPerSecond),
      x(w.megabytesPerSecond, base.warm.megabytesPerSecond),
      f2(w.regcacheCpuSeconds / w.wallSeconds),
      f2((w.regcacheCpuSeconds * 1e9) / w.bytes),
      f2(w.clientCpuSeconds / w.wallSeconds),
      int(run.hitMirror.requestsPerSecond),
      x(run.hitMirror.requestsPerSecond, base.hitMirror.requestsPerSecond),
      f2(run.hitMirror.latencyMs.p99),
      int(hit.requestsPerSecond),
      x(hit.requestsPerSecond, base.hitIntercepted.requestsPerSecond),
      f2(hit.latencyMs.p99),
      f2(hit.serverCpuSeconds / r.hitSeconds),
      int((hit.serverCpuSeconds * 1e6) / hit.requests),
      String(w.errors + run.hitMirror.errors + hit.errors),
    ]);
  }
  return rows;
}

function loadTable(r: WorkersBenchResult): string[][] {
  const rows = [
    [
      'WORKERS',
      'tunnel p50 ms',
      'tunnel p99 ms',
      'tunnel max ms',
      'tunnels',
      'HIT req/s',
      'HIT p99 ms',
      'MISS req/s',
      'MISS p99 ms',
      'total req/s',
      'regcache cores',
      'peak RSS MB (sum)',
      'errors',
    ],
  ];
  for (const run of r.runs) {
    const m = run.mixed;
    const cls = (name: string) => m.classes.find((c) => c.name === name)!;
    rows.push([
      String(run.workers),
      f1(cls('tunnel').latencyMs.p50),
      f1(cls('tunnel').latencyMs.p99),
      f1(cls('tunnel').latencyMs.max),
      int(cls('tunnel').requests),
      int(cls('HIT').requestsPerSecond),
      f1(cls('HIT').latencyMs.p99),
      int(cls('MISS').requestsPerSecond),
      f1(cls('MISS').latencyMs.p99),
      int(m.total.requestsPerSecond),
      f2(m.regcache.cpuSeconds / m.wallSeconds),
      f1(m.regcache.peakRssMb),
      String(m.total.errors),
    ]);
  }
  return rows;
}

function notes(r: WorkersBenchResult): string[] {
  const served = r.runs.map((run) => `WORKERS=${run.workers}: ${run.servedBy.map((w) => (w === 0 ? 'the one process' : `worker ${w}`)).join(', ')}`).join('; ');
  return [
    `Warm: ${r.warmOptions.clients} curl processes, each downloading one cached ${int(r.blob.bytes / 1e6)} MB blob over and over through CONNECT (intercepted: TLS with a minted leaf, hashed while served with VERIFY_ON_READ) for ${r.warmOptions.seconds} s, a new connection per download; MB/s is every byte over the wall time until the last download ended (MB = 10^6 bytes).`,
    `HIT req/s: a ${r.manifestBytes}-byte manifest by digest, ${r.hitConnections} keep-alive connections, ${r.hitSeconds} s after a warm-up, as in the load bench's part 1. HITs were logged by ${served}.`,
    `Under load: the load bench's part 2 (${r.mixedConnections} connections mixing HITs, MISSes and tunnels, its own regcache per row); a tunnel's latency is a new connection's: TCP connect, CONNECT, TLS handshake through the tunnel, one GET. regcache cores: CPU seconds of its whole process tree (the primary and its workers) per second of wall time; peak RSS is the sum of each process's peak.`,
    "regcache CPU ns/B and µs/req: its whole tree's CPU per byte of the warm downloads and per HIT request through CONNECT + TLS; they do not depend on how many cores regcache got, the MB/s and req/s do.",
    'Everything (clients, upstream registry, regcache) shares the same cores, and the machine is shared with other work (load average above): see docs/decisions.md for what the figures imply for a machine where regcache has cores of its own.',
  ];
}

function header(r: WorkersBenchResult): string {
  const m = r.machine;
  return `${m.cpus} CPUs (${m.cpuModel}), ${m.ramGiB.toFixed(1)} GiB RAM, ${m.kernel}; node ${m.node}, wrk ${m.wrk}, ${m.registry}, regcache ${m.regcache}. Load average (1 min) ${f1(r.loadAverage.before)} before the run, ${f1(r.loadAverage.after)} after: anything above what the bench itself adds is other processes competing for the same cores.`;
}

export function textReport(r: WorkersBenchResult): string {
  return [
    '',
    'regcache workers bench',
    `  ${header(r)}`,
    '',
    'Warm MB/s and HIT requests/s',
    textTable(throughputTable(r)),
    '',
    `Under the ${r.mixedConnections}-connection load`,
    textTable(loadTable(r)),
    '',
    ...notes(r).map((n) => `  ${n}`),
    '',
    r.failures.length === 0 ? 'result: no errors' : `FAILED:\n${r.failures.map((f) => `  - ${f}`).join('\n')}`,
    '',
  ].join('\n');
}

export function markdownSection(r: WorkersBenchResult): string {
  return [
    '## Workers: WORKERS=1 and more side by side (bench/workers-bench.ts)',
    '',
    `Measured ${r.date} on ${header(r)}`,
    '',
    `Reproduce: ${r.commands.map((c) => `\`${c}\``).join(', or this bench alone: ')}.`,
    '',
    '### Warm MB/s and HIT requests/s',
    '',
    markdownTable(throughputTable(r)),
    '',
    `### Under the ${r.mixedConnections}-connection load: tunnel set-up latency`,
    '',
    markdownTable(loadTable(r)),
    '',
    ...notes(r).map((n) => `- ${n}`),
  ].join('\n');
}
