// The store benchmark: what the content store costs once a blob is cached, each figure next to a
// baseline measured in the same run.
//   1. HIT throughput: one big blob (BENCH_STORE_MB, default 1024 MB) read through regcache (HTTPS via
//      CONNECT, a HIT) vs the same content file read straight from disk; the upstream registry
//      fetched directly with the same client for context. Medians of BENCH_STORE_RUNS (default 5).
//      regcache's CPU per byte served (ns/B, from /proc/<pid>/stat) with VERIFY_ON_READ on (the
//      default: every HIT hashed) and off, side by side: two processes, runs interleaved, over the
//      same content files (hard links).
//   2. BENCH_STORE_READERS (default 20) concurrent HIT readers of that blob, each hashing what it gets:
//      regcache's peak RSS (target < 200 MB) and the wall time, vs the same number of concurrent
//      direct reads of the content file (hashed too).
//   3. Startup (process start to the 'listening' line) on a cache whose index journal holds
//      BENCH_STORE_ENTRIES (default 100,000) entries, vs an empty cache (target <= 2 s).
// Everything is read from the page cache (the machine has the RAM): this measures regcache, not the disk.
// PASS/FAIL is printed; the exit code is non-zero only when something broke (wrong bytes, no HIT, a
// process died). Run with `npm run bench` (after the pull bench) or, once built, on its own:
// `node --import tsx bench/store-bench.ts`. Results: stdout, bench/results/store-<time>.json and the
// store-bench section of docs/benchmarks.md.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Agent, ProxyAgent, request, type Dispatcher } from 'undici';
import { contentPath } from '../src/cache/content-files.js';
import { MediaTypes, type LayerFile } from '../test/harness/images.js';
import { run } from '../test/harness/proc.js';
import { startRegcache, type LogLine, type Regcache } from '../test/harness/regcache.js';
import type { Registry } from '../test/harness/registry.js';
import { FILE_CHUNK } from '../src/cache/verified-file-reader.js';
import { startBlobRegistry } from './blob-registry.js';
import { cpuSeconds, cpuTimes, describeMachine, envInt, median, memoryMb, runBench, stopRegcache, writeDocsSection } from './measure.js';

const HOST = 'registry.bench';
const REPO = 'bench/store';
const TARGETS = { concurrentPeakRssMb: 200, startupMs: 2000 };
const READ_CHUNK = FILE_CHUNK; // what regcache reads content files with
// Reading 1 GB at a few hundred MB/s, or twenty of them at once, takes a while; nothing should hang forever.
const FETCH_TIMEOUT_MS = 600_000;

// Two clients for the HTTPS fetches: undici in this process (streaming, counting) and curl (native,
// its own process), each straight to the registry and through regcache, since on two cores the
// client's own TLS and copying weigh in the ratios.
// "unverified": a second regcache with VERIFY_ON_READ=false over the same content files.
const HIT_MODES = ['file', 'cat', 'upstream', 'hit', 'hitUnverified', 'curlUpstream', 'curlHit', 'curlHitUnverified'] as const;
type HitMode = (typeof HIT_MODES)[number];
const MODE_LABEL: Record<HitMode, string> = {
  file: 'content file, node fs (baseline)',
  cat: 'content file, cat > /dev/null',
  upstream: 'upstream direct, undici',
  hit: 'regcache HIT, undici',
  hitUnverified: 'regcache HIT unverified, undici',
  curlUpstream: 'upstream direct, curl',
  curlHit: 'regcache HIT, curl',
  curlHitUnverified: 'regcache HIT unverified, curl',
};
// The modes served by regcache, and by which of the two processes.
const THROUGH_REGCACHE: Partial<Record<HitMode, { verified: boolean; client: 'undici' | 'curl' }>> = {
  hit: { verified: true, client: 'undici' },
  hitUnverified: { verified: false, client: 'undici' },
  curlHit: { verified: true, client: 'curl' },
  curlHitUnverified: { verified: false, client: 'curl' },
};

interface Options {
  mb: number;
  runs: number;
  readers: number;
  entries: number;
  curl: boolean; // curl is installed: its rows are measured
}

interface Setup {
  root: string;
  registry: Registry;
  blob: LayerFile;
  testCaPem: string;
  regcacheCaDir: string;
  cacheDir: string;
  unverifiedCacheDir: string; // the same content files (hard links) for the VERIFY_ON_READ=false process
  env: Record<string, string>;
}

function parseOptions(): Options {
  return {
    mb: envInt('BENCH_STORE_MB', 1024),
    runs: envInt('BENCH_STORE_RUNS', 5),
    readers: envInt('BENCH_STORE_READERS', 20),
    entries: envInt('BENCH_STORE_ENTRIES', 100_000),
    curl: false, // set in main()
  };
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);
const mbps = (bytes: number, ms: number): number => bytes / 1e6 / (ms / 1000);

// Every regcache still running, so that a failure half-way stops them.
const running = new Set<Regcache>();

async function startProxy(
  s: Pick<Setup, 'root' | 'env' | 'regcacheCaDir'>,
  name: string,
  cacheDir: string,
  env: Record<string, string> = {},
): Promise<{ rc: Regcache; spawned: number; startupMs: number }> {
  const dir = path.join(s.root, 'proxies', name);
  await mkdir(dir, { recursive: true });
  const spawned = Date.now();
  const rc = await startRegcache({ dir, cacheDir, caDir: s.regcacheCaDir, env: { ...s.env, ...env } });
  running.add(rc);
  const listening = (await rc.logs()).find((l) => l.msg === 'listening');
  return { rc, spawned, startupMs: Date.parse(String(listening?.time)) - spawned };
}

const stopProxy = (rc: Regcache, what: string): Promise<number> => stopRegcache(rc, what, running);

async function setUp(root: string, opts: Options): Promise<Setup> {
  const { registry, blob, ca, regcacheEnv } = await startBlobRegistry(root, { host: HOST, repo: REPO, mb: opts.mb, name: 'store-bench' });
  return {
    root,
    registry,
    blob,
    testCaPem: ca.certPem,
    regcacheCaDir: path.join(root, 'regcache-ca'),
    cacheDir: path.join(root, 'cache'),
    unverifiedCacheDir: path.join(root, 'cache-unverified'),
    env: regcacheEnv,
  };
}

interface Fetched {
  ms: number;
  bytes: number;
  digest: string | null; // when hashed
}

/** GET url through dispatcher, streaming the body into a byte count (and a sha256 when asked). */
async function fetchBlob(url: string, dispatcher: Dispatcher, hash: boolean): Promise<Fetched> {
  const started = performance.now();
  const res = await request(url, { dispatcher, signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new Error(`GET ${url} answered ${res.statusCode}`);
  }
  const h = hash ? createHash('sha256') : null;
  let bytes = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    h?.update(chunk);
  }
  return { ms: performance.now() - started, bytes, digest: h ? `sha256:${h.digest('hex')}` : null };
}

const proxiedUrl = (s: Setup): string => `https://${HOST}/v2/${REPO}/blobs/${s.blob.digest}`;

/** One fetch through regcache on a new ProxyAgent (new CONNECT, new TLS session), like a new client. */
async function fetchThrough(s: Setup, rc: Regcache, hash: boolean): Promise<Fetched> {
  const agent = new ProxyAgent({ uri: rc.proxyUrl, requestTls: { ca: await readFile(rc.caFile, 'utf8') } });
  try {
    return await fetchBlob(proxiedUrl(s), agent, hash);
  } finally {
    await agent.close();
  }
}

async function fetchUpstream(s: Setup): Promise<Fetched> {
  const agent = new Agent({ connect: { ca: s.testCaPem } });
  try {
    return await fetchBlob(`${s.registry.url}/v2/${REPO}/blobs/${s.blob.digest}`, agent, false);
  } finally {
    await agent.close();
  }
}

async function readContentFile(file: string, hash: boolean): Promise<Fetched> {
  const started = performance.now();
  const h = hash ? createHash('sha256') : null;
  let bytes = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: READ_CHUNK }) as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    h?.update(chunk);
  }
  return { ms: performance.now() - started, bytes, digest: h ? `sha256:${h.digest('hex')}` : null };
}

/** curl to /dev/null, timed by curl itself (connect and TLS included, process start not). */
async function fetchCurl(url: string, caFile: string, proxyUrl: string | null): Promise<Fetched> {
  const args = [
    '-sS',
    '-o',
    '/dev/null',
    '--max-time',
    String(FETCH_TIMEOUT_MS / 1000),
    '--cacert',
    caFile,
    '-w',
    '%{http_code} %{size_download} %{time_total}',
  ];
  args.push(...(proxyUrl !== null ? ['--proxy', proxyUrl] : ['--noproxy', '*']), url);
  const r = await run('curl', args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeoutMs: FETCH_TIMEOUT_MS + 10_000 });
  const [status, size, seconds] = r.stdout.trim().split(' ').map(Number);
  if (r.code !== 0 || status !== 200) throw new Error(`curl ${url}: exit ${r.code}, HTTP ${status}: ${r.stderr.trim()}`);
  return { ms: seconds! * 1000, bytes: size!, digest: null };
}

async function catContentFile(file: string): Promise<Fetched> {
  const started = performance.now();
  const r = await run('sh', ['-c', 'exec cat -- "$1" > /dev/null', 'sh', file], { timeoutMs: FETCH_TIMEOUT_MS });
  if (r.code !== 0) throw new Error(`cat ${file}: exit ${r.code} ${r.stderr.trim()}`);
  const { size } = await stat(file);
  return { ms: performance.now() - started, bytes: size, digest: null };
}

/** Blob GET lines logged since log line `since`: exactly `count`, each `want`/200 with every byte. */
async function expectRequests(rc: Regcache, since: number, s: Setup, want: 'HIT' | 'MISS', count: number, what: string): Promise<void> {
  const lines: LogLine[] = (await rc.requests(since)).filter((l) => l.kind === 'blob' && l.method === 'GET');
  const ok = lines.filter((l) => l.digest === s.blob.digest && l.cache === want && l.status === 200 && l.bytes === s.blob.size);
  if (lines.length !== count || ok.length !== count) {
    const got = lines.map((l) => `${l.cache}/${l.status}/${l.bytes} bytes`).join(', ');
    throw new Error(`${what}: regcache logged [${got}], expected ${count} x ${want}/200/${s.blob.size} bytes`);
  }
}

const logCount = async (rc: Regcache): Promise<number> => (await rc.logs()).length;

function check(f: Fetched, s: Setup, what: string): void {
  if (f.bytes !== s.blob.size) throw new Error(`${what}: got ${f.bytes} bytes, expected ${s.blob.size}`);
  if (f.digest !== null && f.digest !== s.blob.digest) throw new Error(`${what}: body hashes to ${f.digest}, expected ${s.blob.digest}`);
}

interface Prime {
  missMs: number;
  missCpuSeconds: number;
  peakRssMb: number;
  contentFile: string;
}

/** Fills the cache with the blob (a MISS, hashed), waits for the commit, and finds the content file. */
async function prime(s: Setup): Promise<Prime> {
  const { rc } = await startProxy(s, 'prime', s.cacheDir);
  const cpu0 = (await cpuSeconds(rc.daemon.pid)) ?? NaN;
  const miss = await fetchThrough(s, rc, true);
  check(miss, s, 'priming fetch (MISS)');
  await rc.waitForLog((l) => l.msg === 'fill committed' && l.digest === s.blob.digest, 'the fill to commit', 120_000);
  const cpu1 = (await cpuSeconds(rc.daemon.pid)) ?? NaN;
  await expectRequests(rc, 0, s, 'MISS', 1, 'priming fetch');
  const peakRssMb = await stopProxy(rc, 'prime');
  const contentFile = contentPath(s.cacheDir, s.blob.digest);
  const st = await stat(contentFile).catch(() => null);
  if (st?.size !== s.blob.size) throw new Error(`content file ${contentFile}: ${st ? `${st.size} bytes` : 'missing'}, expected ${s.blob.size} bytes`);
  await run('sync', []); // the fill's dirty pages must not be written back during the timed reads
  await linkUnverifiedCopy(s);
  return { missMs: miss.ms, missCpuSeconds: cpu1 - cpu0, peakRssMb, contentFile };
}

/**
 * A second cache directory for the VERIFY_ON_READ=false process (one process per directory): its own
 * journal, the same content files as hard links, so both serve the very same bytes from the page cache.
 */
async function linkUnverifiedCopy(s: Setup): Promise<void> {
  await mkdir(s.unverifiedCacheDir, { recursive: true });
  const linked = await run('cp', ['-al', path.join(s.cacheDir, 'content-v2'), path.join(s.unverifiedCacheDir, 'content-v2')]);
  if (linked.code !== 0) throw new Error(`cp -al content-v2: ${linked.stderr.trim()}`);
  await copyFile(path.join(s.cacheDir, 'index.jsonl'), path.join(s.unverifiedCacheDir, 'index.jsonl'));
}

interface CpuTimes {
  user: number;
  system: number;
}

interface HitResult {
  ms: Record<HitMode, number[]>;
  regcacheCpu: Partial<Record<HitMode, CpuTimes[]>>; // per HIT fetch, of the process that served it
  idleRssMb: number;
  peakRssMb: number; // one HIT reader at a time (the verifying process)
}

async function benchHits(s: Setup, opts: Options, contentFile: string): Promise<HitResult> {
  const { rc } = await startProxy(s, 'hits', s.cacheDir);
  const { rc: rcUnverified } = await startProxy(s, 'hits-unverified', s.unverifiedCacheDir, { VERIFY_ON_READ: 'false' });
  const idleRssMb = (await memoryMb(rc.daemon.pid))?.now ?? NaN;
  const ms: Record<HitMode, number[]> = { file: [], cat: [], upstream: [], hit: [], hitUnverified: [], curlUpstream: [], curlHit: [], curlHitUnverified: [] };
  const cpu: Partial<Record<HitMode, CpuTimes[]>> = {};
  const modes = HIT_MODES.filter((m) => opts.curl || !m.startsWith('curl'));
  const testCaFile = path.join(s.root, 'test-ca', 'ca.crt');
  // Untimed: loads undici's client code and the TLS paths in this process once.
  await fetchUpstream(s);
  await readContentFile(contentFile, false);
  for (let i = 0; i < opts.runs; i++) {
    // Rotate the order each round so no mode always follows the same one.
    const order = modes.map((_, k) => modes[(i + k) % modes.length]!);
    for (const mode of order) {
      let f: Fetched;
      if (mode === 'file') f = await readContentFile(contentFile, false);
      else if (mode === 'cat') f = await catContentFile(contentFile);
      else if (mode === 'upstream') f = await fetchUpstream(s);
      else if (mode === 'curlUpstream') f = await fetchCurl(`${s.registry.url}/v2/${REPO}/blobs/${s.blob.digest}`, testCaFile, null);
      else {
        const through = THROUGH_REGCACHE[mode]!;
        const target = through.verified ? rc : rcUnverified;
        const since = await logCount(target);
        const cpu0 = await cpuTimes(target.daemon.pid);
        f = through.client === 'undici' ? await fetchThrough(s, target, false) : await fetchCurl(proxiedUrl(s), target.caFile, target.proxyUrl);
        const cpu1 = await cpuTimes(target.daemon.pid);
        (cpu[mode] ??= []).push({ user: (cpu1?.user ?? NaN) - (cpu0?.user ?? NaN), system: (cpu1?.system ?? NaN) - (cpu0?.system ?? NaN) });
        await expectRequests(target, since, s, 'HIT', 1, `${mode} run ${i + 1}`);
      }
      check(f, s, `${mode} run ${i + 1}`);
      ms[mode].push(f.ms);
    }
    log(`round ${i + 1}/${opts.runs}: ${order.map((m) => `${m} ${mbps(s.blob.size, ms[m].at(-1)!).toFixed(0)} MB/s`).join(', ')}`);
  }
  const peakRssMb = await stopProxy(rc, 'hits');
  await stopProxy(rcUnverified, 'hits-unverified');
  return { ms, regcacheCpu: cpu, idleRssMb, peakRssMb };
}

interface ConcurrentResult {
  readers: number;
  baselineWallMs: number; // N concurrent direct reads of the content file, hashed
  wallMs: number; // N concurrent HIT readers through regcache, hashed
  readerMs: number[];
  idleRssMb: number;
  peakRssMb: number; // VmHWM at the end (the process served nothing else)
  sampledMaxRssMb: number; // max of VmRSS sampled every 50 ms
  regcacheCpuSeconds: number;
}

async function benchConcurrent(s: Setup, opts: Options, contentFile: string): Promise<ConcurrentResult> {
  const n = opts.readers;
  log(`${n} concurrent direct reads of the content file (baseline)...`);
  const b0 = performance.now();
  const direct = await Promise.all(Array.from({ length: n }, () => readContentFile(contentFile, true)));
  const baselineWallMs = performance.now() - b0;
  direct.forEach((f, i) => check(f, s, `direct reader ${i + 1}`));

  log(`${n} concurrent HIT readers through regcache...`);
  // A fresh process: its VmHWM then belongs to startup and these readers only.
  const { rc } = await startProxy(s, 'concurrent', s.cacheDir);
  const pid = rc.daemon.pid;
  const idleRssMb = (await memoryMb(pid))?.now ?? NaN;
  const since = await logCount(rc);
  const cpu0 = (await cpuSeconds(pid)) ?? NaN;
  let sampledMaxRssMb = idleRssMb;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const mem = await memoryMb(pid);
      if (mem !== null && mem.now > sampledMaxRssMb) sampledMaxRssMb = mem.now;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const caPem = await readFile(rc.caFile, 'utf8');
  // One agent per reader: twenty clients, twenty CONNECT tunnels, twenty TLS sessions.
  const agents = Array.from({ length: n }, () => new ProxyAgent({ uri: rc.proxyUrl, requestTls: { ca: caPem } }));
  let fetched: Fetched[];
  const w0 = performance.now();
  try {
    fetched = await Promise.all(agents.map((agent) => fetchBlob(proxiedUrl(s), agent, true)));
  } finally {
    sampling = false;
    await sampler;
    await Promise.all(agents.map((a) => a.close()));
  }
  const wallMs = performance.now() - w0;
  const cpu1 = (await cpuSeconds(pid)) ?? NaN;
  fetched.forEach((f, i) => check(f, s, `HIT reader ${i + 1}`));
  await expectRequests(rc, since, s, 'HIT', n, `${n} concurrent readers`);
  const peakRssMb = await stopProxy(rc, 'concurrent');
  return { readers: n, baselineWallMs, wallMs, readerMs: fetched.map((f) => f.ms), idleRssMb, peakRssMb, sampledMaxRssMb, regcacheCpuSeconds: cpu1 - cpu0 };
}

/** A compacted journal of `entries` synthetic entries (15% manifests with a tag, the rest blobs), all used within the last week. */
function syntheticJournal(entries: number): { text: string; bytes: number } {
  const now = Date.now();
  let seed = 0x2545f491;
  const rand = (): number => {
    // xorshift32: deterministic, so runs compare
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x1_0000_0000;
  };
  const lines: string[] = [];
  let bytes = 0;
  for (let i = 0; i < entries; i++) {
    const digest = `sha256:${createHash('sha256').update(`store-bench-entry-${i}`).digest('hex')}`;
    const manifest = rand() < 0.15;
    const repo = `${HOST}/lib/app-${Math.floor(rand() * 2000)}`;
    // Blobs log-uniform from 1 KB to 50 MB (mean ~4.6 MB), manifests 0.5-8 KB.
    const size = manifest ? 500 + Math.floor(rand() * 7500) : Math.floor(1000 * Math.pow(50_000, rand()));
    const created = now - Math.floor(rand() * 30 * 86_400_000);
    const lastAccess = Math.max(created, now - Math.floor(rand() * 7 * 86_400_000));
    const refs = rand() < 0.2 ? [repo, `${HOST}/lib/app-${Math.floor(rand() * 2000)}`] : [repo];
    const e = {
      kind: manifest ? 'manifest' : 'blob',
      digest,
      size,
      mediaType: manifest ? MediaTypes.ociManifest : MediaTypes.ociLayer,
      created,
      lastAccess,
      refs,
      tags: manifest ? [`${repo}:v${i}`] : [],
    };
    bytes += size;
    lines.push(JSON.stringify({ op: 'put', e }));
  }
  return { text: lines.join('\n') + '\n', bytes };
}

interface StartupRun {
  ms: number; // process start to 'listening'
  openedMs: number; // process start to 'cache opened' (the index is loaded and compacted)
  peakRssMb: number; // VmHWM once listening
  rssMb: number; // VmRSS once listening
  entries: number; // as reported by 'cache opened'
}

interface StartupResult {
  entries: number;
  journalBytes: number;
  storedBytes: number;
  empty: StartupRun[];
  full: StartupRun[];
}

async function benchStartup(s: Setup, opts: Options): Promise<StartupResult> {
  const dir = path.join(s.root, 'startup');
  await mkdir(dir, { recursive: true });
  const journal = syntheticJournal(opts.entries);
  const template = path.join(dir, 'index.jsonl');
  await writeFile(template, journal.text);
  await run('sync', []);
  // Far above the synthetic total (~0.5 TB), so that startup evicts nothing.
  const env = { CACHE_MAX_SIZE: '1000g' };
  const empty: StartupRun[] = [];
  const full: StartupRun[] = [];
  for (let i = 0; i < opts.runs; i++) {
    for (const kind of i % 2 === 0 ? (['empty', 'full'] as const) : (['full', 'empty'] as const)) {
      const cacheDir = path.join(dir, `${kind}-${i}`);
      await mkdir(cacheDir);
      if (kind === 'full') await copyFile(template, path.join(cacheDir, 'index.jsonl'));
      const { rc, spawned, startupMs } = await startProxy(s, `startup-${kind}-${i}`, cacheDir, env);
      const mem = await memoryMb(rc.daemon.pid);
      const logs = await rc.logs();
      const opened = logs.find((l) => l.msg === 'cache opened');
      const entries = Number(opened?.entries ?? NaN);
      const openedMs = Date.parse(String(opened?.time)) - spawned;
      const want = kind === 'full' ? opts.entries : 0;
      if (entries !== want) throw new Error(`startup (${kind}): 'cache opened' says ${entries} entries, expected ${want}`);
      await stopProxy(rc, `startup ${kind}`);
      const evicted = (await rc.logs()).filter((l) => l.msg === 'evicted');
      if (evicted.length > 0) throw new Error(`startup (${kind}) evicted entries: ${JSON.stringify(evicted[0])}`);
      (kind === 'full' ? full : empty).push({ ms: startupMs, openedMs, peakRssMb: mem?.peak ?? NaN, rssMb: mem?.now ?? NaN, entries });
      await rm(cacheDir, { recursive: true, force: true });
    }
    log(`startup round ${i + 1}/${opts.runs}: empty ${empty.at(-1)!.ms} ms, ${opts.entries} entries ${full.at(-1)!.ms} ms`);
  }
  return { entries: opts.entries, journalBytes: Buffer.byteLength(journal.text), storedBytes: journal.bytes, empty, full };
}

type Verdict = 'PASS' | 'FAIL';

interface StartupMedians {
  ms: number;
  openedMs: number;
  peakRssMb: number;
  rssMb: number;
}

interface Summary {
  blob: { digest: string; bytes: number };
  runs: number;
  prime: { missMs: number; missMbPerSecond: number; missCpuSeconds: number; peakRssMb: number };
  hit: HitResult & {
    modes: HitMode[];
    medianMs: Partial<Record<HitMode, number>>;
    mbPerSecond: Partial<Record<HitMode, number>>;
    timeRatioToFile: Partial<Record<HitMode, number>>;
    // regcache HIT vs the upstream registry with the same client
    timeRatioToUpstream: { undici: number; curl: number | null };
    medianRegcacheCpuSeconds: CpuTimes; // per verified HIT (VERIFY_ON_READ on), undici and curl
    // regcache's CPU (user + system) per byte served, medians, with VERIFY_ON_READ on and off
    cpuNsPerByte: { client: 'undici' | 'curl'; verified: number; unverified: number; ratio: number }[];
  };
  concurrent: ConcurrentResult & { ratioToBaseline: number; aggregateMbPerSecond: number; baselineAggregateMbPerSecond: number };
  startup: StartupResult & { median: { empty: StartupMedians; full: StartupMedians } };
  targets: typeof TARGETS;
  verdicts: { concurrentPeakRss: Verdict; startup: Verdict };
}

function summarize(s: Setup, opts: Options, p: Prime, hit: HitResult, conc: ConcurrentResult, startup: StartupResult): Summary {
  const size = s.blob.size;
  const modes = HIT_MODES.filter((m) => hit.ms[m].length > 0);
  const medianMs: Partial<Record<HitMode, number>> = {};
  const mbPerSecond: Partial<Record<HitMode, number>> = {};
  const timeRatioToFile: Partial<Record<HitMode, number>> = {};
  for (const m of modes) {
    medianMs[m] = median(hit.ms[m]);
    mbPerSecond[m] = mbps(size, medianMs[m]);
    timeRatioToFile[m] = medianMs[m] / median(hit.ms.file);
  }
  const startupMedian = (runs: StartupRun[]): StartupMedians => ({
    ms: median(runs.map((r) => r.ms)),
    openedMs: median(runs.map((r) => r.openedMs)),
    peakRssMb: median(runs.map((r) => r.peakRssMb)),
    rssMb: median(runs.map((r) => r.rssMb)),
  });
  const full = startupMedian(startup.full);
  const verifiedCpu = [...(hit.regcacheCpu.hit ?? []), ...(hit.regcacheCpu.curlHit ?? [])];
  const nsPerByte = (mode: HitMode): number => median((hit.regcacheCpu[mode] ?? []).map((c) => ((c.user + c.system) * 1e9) / size));
  const verdict = (ok: boolean): Verdict => (ok ? 'PASS' : 'FAIL');
  return {
    blob: { digest: s.blob.digest, bytes: size },
    runs: opts.runs,
    prime: { missMs: p.missMs, missMbPerSecond: mbps(size, p.missMs), missCpuSeconds: p.missCpuSeconds, peakRssMb: p.peakRssMb },
    hit: {
      ...hit,
      modes,
      medianMs,
      mbPerSecond,
      timeRatioToFile,
      timeRatioToUpstream: {
        undici: median(hit.ms.hit) / median(hit.ms.upstream),
        curl: opts.curl ? median(hit.ms.curlHit) / median(hit.ms.curlUpstream) : null,
      },
      medianRegcacheCpuSeconds: { user: median(verifiedCpu.map((c) => c.user)), system: median(verifiedCpu.map((c) => c.system)) },
      cpuNsPerByte: (['undici', 'curl'] as const)
        .filter((client) => client === 'undici' || opts.curl)
        .map((client) => {
          const verified = nsPerByte(client === 'undici' ? 'hit' : 'curlHit');
          const unverified = nsPerByte(client === 'undici' ? 'hitUnverified' : 'curlHitUnverified');
          return { client, verified, unverified, ratio: verified / unverified };
        }),
    },
    concurrent: {
      ...conc,
      ratioToBaseline: conc.wallMs / conc.baselineWallMs,
      aggregateMbPerSecond: mbps(size * conc.readers, conc.wallMs),
      baselineAggregateMbPerSecond: mbps(size * conc.readers, conc.baselineWallMs),
    },
    startup: { ...startup, median: { empty: startupMedian(startup.empty), full } },
    targets: TARGETS,
    verdicts: {
      concurrentPeakRss: verdict(Math.max(conc.peakRssMb, conc.sampledMaxRssMb) < TARGETS.concurrentPeakRssMb),
      startup: verdict(full.ms <= TARGETS.startupMs),
    },
  };
}

function report(r: Summary, env: Record<string, string>): string {
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(36) : c.padStart(11))).join('');
  const s1 = (ms: number): string => (ms / 1000).toFixed(3);
  const h = r.hit;
  const lines = [
    '',
    `regcache store bench: one ${(r.blob.bytes / 1e6).toFixed(1)} MB blob (1 MB = 10^6 bytes), ${r.runs} interleaved run(s) per source, page cache warm`,
    `  ${env.cpus} CPUs, node ${env.node}, ${env.curl}, regcache ${env.git}`,
    '',
    `1. one reader of the cached blob (the MISS that filled the cache: ${r.prime.missMbPerSecond.toFixed(0)} MB/s, regcache CPU ${r.prime.missCpuSeconds.toFixed(1)} s)`,
    row(['source', 'median s', 'min s', 'max s', 'MB/s', 'vs file']),
  ];
  for (const mode of h.modes) {
    const ms = h.ms[mode];
    lines.push(
      row([
        MODE_LABEL[mode],
        s1(h.medianMs[mode]!),
        s1(Math.min(...ms)),
        s1(Math.max(...ms)),
        h.mbPerSecond[mode]!.toFixed(0),
        `${h.timeRatioToFile[mode]!.toFixed(2)}x`,
      ]),
    );
  }
  const vsUpstream =
    `undici ${h.timeRatioToUpstream.undici.toFixed(2)}x` + (h.timeRatioToUpstream.curl !== null ? `, curl ${h.timeRatioToUpstream.curl.toFixed(2)}x` : '');
  lines.push(
    `  HIT vs file (baseline): ${h.timeRatioToFile.hit!.toFixed(2)}x the time (${((100 * h.mbPerSecond.hit!) / h.mbPerSecond.file!).toFixed(0)}% of its MB/s), no target set; ` +
      `HIT vs upstream direct, same client: ${vsUpstream}`,
    `  regcache per HIT: CPU user ${h.medianRegcacheCpuSeconds.user.toFixed(2)} s + system ${h.medianRegcacheCpuSeconds.system.toFixed(2)} s; ` +
      `peak RSS ${h.peakRssMb.toFixed(1)} MB (idle ${h.idleRssMb.toFixed(1)} MB)`,
    `  regcache CPU per byte served (user + system, /proc ticks of 10 ms, median of ${r.runs}): VERIFY_ON_READ=true (hashed, the default) vs false ("unverified")`,
    ...h.cpuNsPerByte.map(
      (c) =>
        `    ${c.client.padEnd(7)} ${c.verified.toFixed(2)} ns/B vs ${c.unverified.toFixed(2)} ns/B: verifying costs ${c.ratio.toFixed(2)}x the CPU (+${(c.verified - c.unverified).toFixed(2)} ns/B)`,
    ),
    '',
    `2. ${r.concurrent.readers} concurrent readers of the blob, each hashing its body (all matched the digest)`,
    `  direct file reads (baseline)  ${(r.concurrent.baselineWallMs / 1000).toFixed(1)} s wall, ${r.concurrent.baselineAggregateMbPerSecond.toFixed(0)} MB/s aggregate`,
    `  regcache HITs, undici         ${(r.concurrent.wallMs / 1000).toFixed(1)} s wall, ${r.concurrent.aggregateMbPerSecond.toFixed(0)} MB/s aggregate, ` +
      `${r.concurrent.ratioToBaseline.toFixed(2)}x; regcache CPU ${r.concurrent.regcacheCpuSeconds.toFixed(1)} s`,
    `  regcache peak RSS ${Math.max(r.concurrent.peakRssMb, r.concurrent.sampledMaxRssMb).toFixed(1)} MB (VmHWM; sampled VmRSS max ${r.concurrent.sampledMaxRssMb.toFixed(1)} MB, ` +
      `idle ${r.concurrent.idleRssMb.toFixed(1)} MB)   target < ${TARGETS.concurrentPeakRssMb} MB: ${r.verdicts.concurrentPeakRss}`,
    '',
    `3. startup with ${r.startup.entries} index entries (index.jsonl ${(r.startup.journalBytes / 1e6).toFixed(1)} MB) vs an empty cache, median of ${r.startup.full.length}`,
    row(['cache', 'listening', 'opened', 'peak RSS', 'RSS', 'vs empty', 'target', 'result']),
  );
  const m = r.startup.median;
  const startupRow = (label: string, x: StartupMedians, tail: string[]): string =>
    row([label, `${x.ms.toFixed(0)} ms`, `${x.openedMs.toFixed(0)} ms`, `${x.peakRssMb.toFixed(1)} MB`, `${x.rssMb.toFixed(1)} MB`, ...tail]);
  lines.push(
    startupRow('empty (baseline)', m.empty, []),
    startupRow(`${r.startup.entries} entries`, m.full, [
      `${m.full.ms >= m.empty.ms ? '+' : ''}${(m.full.ms - m.empty.ms).toFixed(0)} ms`,
      `<= ${TARGETS.startupMs} ms`,
      r.verdicts.startup,
    ]),
    `  (from process start: 'listening' = ready to serve; 'opened' = index replayed and compacted; RSS once listening)`,
    '',
  );
  return lines.join('\n');
}

async function describeEnvironment(): Promise<Record<string, string>> {
  const rev = (await run('git', ['rev-parse', '--short', 'HEAD'])).stdout.trim() || '?';
  const dirty = (await run('git', ['status', '--porcelain', '--untracked-files=no'])).stdout.trim() !== '';
  const curl = (await run('curl', ['--version']).catch(() => null))?.stdout.split(' ').slice(0, 2).join(' ') || 'no curl';
  return { cpus: String(os.availableParallelism()), node: process.version, curl, git: dirty ? `${rev}+dirty` : rev };
}

async function bench(root: string, opts: Options): Promise<Summary> {
  log(`setting up: registry, ${opts.mb} MB blob, push...`);
  const s = await setUp(root, opts);
  try {
    log('priming: one fetch through regcache (MISS)...');
    const p = await prime(s);
    log('HIT throughput...');
    const hit = await benchHits(s, opts, p.contentFile);
    const conc = await benchConcurrent(s, opts, p.contentFile);
    await rm(s.cacheDir, { recursive: true, force: true });
    log(`startup with ${opts.entries} entries vs empty...`);
    const startup = await benchStartup(s, opts);
    return summarize(s, opts, p, hit, conc, startup);
  } finally {
    await Promise.all([...running].map((rc) => rc.stop()));
    running.clear();
    await s.registry.stop();
  }
}

function docsSection(text: string, date: string, env: Record<string, string>, o: Options): string {
  const m = describeMachine();
  return [
    '## Store: HIT throughput, CPU per byte with and without VERIFY_ON_READ, concurrent readers, startup (bench/store-bench.ts)',
    '',
    `- Date: ${date}`,
    `- Machine: ${m.cpus} CPUs (${m.cpuModel}), ${m.ramGb} GiB RAM, ${m.kernel}`,
    `- Versions: node ${env.node}, ${env.curl}, regcache ${env.git}`,
    '',
    '```text',
    text.trim(),
    '```',
    '',
    `Reproduce: \`npm run bench\`, or after \`npm run build\`,`,
    `\`BENCH_STORE_MB=${o.mb} BENCH_STORE_RUNS=${o.runs} BENCH_STORE_READERS=${o.readers} BENCH_STORE_ENTRIES=${o.entries} node --import tsx bench/store-bench.ts\`.`,
  ].join('\n');
}

process.exitCode = await runBench('store-bench', 'store-', async (root) => {
  const opts = parseOptions();
  opts.curl = (await run('sh', ['-c', 'command -v curl'])).code === 0;
  if (!opts.curl) log('curl not found: its rows are skipped');
  const env = await describeEnvironment();
  const date = new Date().toISOString();
  const result = await bench(root, opts);
  const text = report(result, env);
  const doc = await writeDocsSection('store-bench', docsSection(text, date, env, opts));
  return { text: `${text}docs: ${path.relative(process.cwd(), doc)} (store-bench section)\n`, json: { environment: env, options: opts, ...result } };
});
