// The load bench's report, in two renderings of the same rows: a fixed-width table for stdout and a
// Markdown section for docs/benchmarks.md.
import { HIT_BASELINE, HIT_ROW_LABEL, type HitResult } from './hit-throughput.js';
import type { Machine } from './machine.js';
import type { MixedResult } from './mixed-load.js';

export interface LoadBenchResult {
  date: string;
  machine: Machine;
  hit: HitResult;
  mixed: MixedResult;
  loadAverage: { before: number; after: number }; // 1-minute load average: the machine may be shared
  failures: string[];
  commands: string[];
}

const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-');
const int = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '-');
const x = (n: number): string => (Number.isFinite(n) ? `${n.toFixed(2)}x` : '-');

function machineLine(m: Machine): string {
  return `${m.cpus} CPUs (${m.cpuModel}), ${m.ramGiB.toFixed(1)} GiB RAM, ${m.kernel}; node ${m.node}, wrk ${m.wrk}, ${m.registry}, regcache ${m.regcache}`;
}

function loadLine(r: LoadBenchResult): string {
  return `Load average (1 min) ${f1(r.loadAverage.before)} before the run, ${f1(r.loadAverage.after)} after: anything above what the bench itself adds is other processes competing for the same cores.`;
}

function hitTable(h: HitResult): string[][] {
  const rows = [['server', 'client', 'req/s', 'p50 ms', 'p99 ms', 'req/s vs base', 'p99 vs base', 'server CPU s', 'client CPU s', 'errors']];
  for (const r of h.rows) {
    const base = r.id === HIT_BASELINE[r.id] ? 'baseline' : x(r.ratioToBaseline);
    rows.push([
      HIT_ROW_LABEL[r.id],
      r.client,
      int(r.requestsPerSecond),
      f2(r.latencyMs.p50),
      f2(r.latencyMs.p99),
      base,
      r.id === HIT_BASELINE[r.id] ? '' : x(r.p99RatioToBaseline),
      f1(r.serverCpuSeconds),
      f1(r.clientCpuSeconds),
      String(r.errors),
    ]);
  }
  for (const [id, why] of Object.entries(h.skipped))
    rows.push([HIT_ROW_LABEL[id as keyof typeof HIT_ROW_LABEL], `not measured: ${why}`, '', '', '', '', '', '', '', '']);
  return rows;
}

function mixedTable(m: MixedResult): string[][] {
  const rows = [['class', 'connections', 'requests', 'errors', 'req/s', 'p50 ms', 'p99 ms', 'max ms', 'setup p50 ms', 'setup p99 ms']];
  for (const c of m.classes) {
    const setup = c.setupMs ? [f1(c.setupMs.p50), f1(c.setupMs.p99)] : ['-', '-'];
    rows.push([
      c.name,
      String(c.connections),
      int(c.requests),
      String(c.errors),
      int(c.requestsPerSecond),
      f2(c.latencyMs.p50),
      f2(c.latencyMs.p99),
      f1(c.latencyMs.max),
      ...setup,
    ]);
  }
  rows.push(['total', String(m.options.connections), int(m.total.requests), String(m.total.errors), int(m.total.requestsPerSecond), '', '', '', '', '']);
  return rows;
}

function hitNotes(h: HitResult): string[] {
  const log = Object.entries(h.regcacheLog)
    .map(([k, n]) => `${k} x${n}`)
    .join(', ');
  return [
    `The clients (wrk, the bench's node generator) run on the same ${h.options.connections}-connection closed loop and the same 2 cores as the server: their CPU ("client CPU") is CPU the server did not get.`,
    'req/s vs base: the HTTP rows against docker-registry over plain HTTP, the TLS rows against docker-registry over TLS with the same node client.',
    `regcache logged for this manifest: ${log} (one MISS when it was primed, HITs after).`,
  ];
}

function mixedNotes(m: MixedResult): string[] {
  const rc = m.regcache;
  const h = rc.health;
  const levels = Object.entries(h.linesByLevel)
    .map(([k, n]) => `${k} ${int(n)}`)
    .join(', ');
  const errors = m.classes.filter((c) => c.errors > 0).map((c) => `${c.name}: ${JSON.stringify(c.errorsByKind)} (${c.errorSamples.join('; ')})`);
  const ranOut = m.classes.filter((c) => c.ranOut).map((c) => c.name);
  const split = m.classes.map((c) => `${c.name} ${c.connections}`).join(', ');
  return [
    `Bound: ${m.options.seconds} s or ${int(m.options.maxRequests)} requests, whichever first; ran ${f1(m.wallSeconds)} s. Connections: ${split}.` +
      (ranOut.length > 0 ? ` ${ranOut.join(', ')} used up its ${int(m.options.missBlobs)} distinct digests before the end.` : ''),
    `HIT: keep-alive CONNECT + TLS, GETs of the cached manifest and ${m.hitObjects - 1} blobs (1-64 KB). MISS: keep-alive CONNECT + TLS, every GET a new digest (1-8 KB) from a fake registry. ` +
      'tunnel: CONNECT to a host off the allowlist, TLS inside (resumed), one GET of 2 KB, close; its latency includes the TCP connect, the CONNECT and the handshake.',
    `The keep-alive connections were all opened at once before the timed phase (${f1(m.setupWallSeconds)} s for all; "setup" columns). ` +
      'During the timed phase new connections (the tunnels) wait in the accept queue: Node (libuv >= 1.45) accepts one connection per event-loop iteration, and an iteration serves every busy connection first.',
    `Errors: ${errors.length === 0 ? 'none' : errors.join(' | ')} (every body hashed against its digest; a non-200, reset, wrong byte or ${m.options.timeoutMs / 1000} s timeout is an error).`,
    `regcache peak RSS (VmHWM) ${f1(rc.peakRssMb)} MB, bound <= ${m.options.rssBoundMb} MB: ${m.rssVerdict} (idle before the load ${f1(rc.idleRssMb)} MB, after ${f1(rc.rssAfterMb)} MB; ` +
      `during the load, by quarter: ${quarters(rc.samples.map((x) => x.rssMb))
        .map((v) => `${f1(v)} MB`)
        .join(', ')}).`,
    `regcache CPU ${f1(rc.cpuSeconds)} s in ${f1(m.wallSeconds)} s (${f2(rc.cpuSeconds / m.wallSeconds)} cores); the generator's own CPU ${f1(m.generator.cpuSeconds)} s competes on the same 2 cores.`,
    `Open files: regcache at most ${int(rc.maxOpenFds)} descriptors (sampled each second), limit ${int(rc.openFilesLimit)}; the generator's limit ${int(m.generator.openFilesLimit)}.`,
    `regcache after the load: ${h.healthy ? 'healthy' : 'NOT healthy'} (process ${h.running ? 'running' : 'gone'}, /healthz ${h.healthz}, log lines: ${levels}).` +
      (h.problemLines.length > 0 ? ` First warn/error lines: ${h.problemLines.join(' ')}` : ''),
    m.consistency.length === 0
      ? `regcache's log (HIT/MISS request lines, tunnels closed) and the upstreams' counts (${int(m.upstream.missGets)} MISS GETs, ${int(m.upstream.tunnelGets)} tunnel GETs) agree with the generator's.`
      : `Disagreements with the generator's counts: ${m.consistency.join('; ')}.`,
  ];
}

/** The values at 25, 50, 75 and 100% of a series: whether it levels off or keeps growing. */
function quarters(xs: number[]): number[] {
  if (xs.length === 0) return [];
  return [0.25, 0.5, 0.75, 1].map((q) => xs[Math.max(0, Math.ceil(q * xs.length) - 1)]!);
}

export function textTable(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')).join('\n');
}

export function markdownTable(rows: string[][]): string {
  const [head, ...body] = rows;
  const line = (r: string[]): string => `| ${r.join(' | ')} |`;
  return [line(head!), line(head!.map((_, i) => (i < 2 ? '---' : '---:'))), ...body.map(line)].join('\n');
}

export function textReport(r: LoadBenchResult): string {
  const h = r.hit;
  return [
    '',
    'regcache load bench',
    `  ${machineLine(r.machine)}`,
    `  ${loadLine(r)}`,
    '',
    `1. HIT: a ${h.manifest.bytes}-byte manifest by digest, already cached; ${h.options.connections} keep-alive connections, ${h.options.seconds} s per row after a ${h.options.warmupSeconds} s warm-up`,
    textTable(hitTable(h)),
    ...hitNotes(h).map((n) => `  ${n}`),
    '',
    `2. Mixed load through regcache's proxy port`,
    textTable(mixedTable(r.mixed)),
    ...mixedNotes(r.mixed).map((n) => `  ${n}`),
    '',
    r.failures.length === 0 ? 'result: no errors' : `FAILED:\n${r.failures.map((f) => `  - ${f}`).join('\n')}`,
    '',
  ].join('\n');
}

export function markdownSection(r: LoadBenchResult): string {
  const h = r.hit;
  const m = r.mixed;
  return [
    '## Load: HIT throughput and many concurrent connections',
    '',
    `Measured ${r.date} on ${machineLine(r.machine)}. ${loadLine(r)}`,
    '',
    `Reproduce: ${r.commands.map((c) => `\`${c}\``).join(', or this bench alone: ')}.`,
    '',
    `### HIT requests/s: a ${h.manifest.bytes}-byte manifest by digest, already cached`,
    '',
    `${h.options.connections} keep-alive connections in a closed loop, ${h.options.seconds} s per row after a ${h.options.warmupSeconds} s warm-up, one row after another in one run.`,
    '',
    markdownTable(hitTable(h)),
    '',
    ...hitNotes(h).map((n) => `- ${n}`),
    '',
    `### ${m.options.connections} concurrent connections: HITs, MISSes and tunnels`,
    '',
    markdownTable(mixedTable(m)),
    '',
    ...mixedNotes(m).map((n) => `- ${n}`),
  ].join('\n');
}
