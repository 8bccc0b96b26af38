// The CPU bench (issue 15, item 4): what regcache's own process spends in CPU (user + system, from
// /proc/<pid>/stat, every thread) per byte of one big blob (BENCH_CPU_MB, default 512 MB) served by a real
// docker-registry over TLS, on each path:
//   tunnel          CONNECT to a host off the allowlist: TLS relayed untouched
//   cold            intercepted MISS: upstream TLS decrypted, sha256, spool file written, client TLS encrypted
//   warm            intercepted HIT: content file read, checked as VERIFY_ON_READ's default says (this tree:
//                   once, a file verified before and unchanged since, not hashed; builds before it: hashed on
//                   every read), client TLS encrypted; its own process, whose file no cold run replaces
//   warm unverified the same HIT with VERIFY_ON_READ=false
// beside, in the same run and measured the same way: a bare Node relay (bench/cpu/bare-relay.ts, net +
// pipe, the yardstick for the tunnel), a bare Node receiver (bench/cpu/bare-receive.ts: undici GET over
// TLS, sha256, writev to a file, none of regcache's code: the yardstick for a cold fill's first half, whose
// second half is the warm path's send), docker-registry's own CPU for sending the blob to curl directly (what
// a Go registry spends on the warm path's job: read the file, encrypt it; distribution's pull-through
// serves a warm pull so) and `openssl speed` of AES-256-GCM and SHA-256 at 16 KiB blocks (the
// floors: a warm byte must be encrypted once and hashed once, a cold one decrypted, hashed and encrypted).
// The client is curl (its own process: its CPU is not the proxy's) writing to /dev/null over HTTP/1.1.
// BENCH_CPU_RUNS (default 5) rounds, every measurement once per round in a rotating order; medians.
// BENCH_CPU_COMPARE="<label>=<another build's dist/cli.js>[,<label>=<path>...]" adds those builds' four
// paths to every round, each row beside this tree's: a before/after in one run.
// BENCH_SCRUB_RATE sets SCRUB_RATE for every regcache (e.g. 0: no background scrub; builds without a
// scrubber ignore it).
// Exit code non-zero only when something broke (wrong size, no HIT/MISS).
// Results: stdout, bench/results/cpu-<time>.json and the cpu-bench section of docs/benchmarks.md.
// Run by `npm run bench`, or once built: `node --import tsx bench/cpu-bench.ts`.
import { spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { LayerFile } from '../test/harness/images.js';
import { run, spawnDaemon, type Daemon } from '../test/harness/proc.js';
import { startRegcache, type Regcache } from '../test/harness/regcache.js';
import type { Registry } from '../test/harness/registry.js';
import { startBlobRegistry } from './blob-registry.js';
import { cpuSeconds, describeMachine, envInt, exitedChildrenCpuSeconds, median, runBench, writeDocsSection } from './measure.js';
import { opensslNsPerByte, opensslVersion } from './cpu/openssl-speed.js';

const HOST = 'registry.bench';
const REPO = 'bench/cpu';
const TARGETS = { tunnel: 1.2, warm: 3, warmUnverified: 3, cold: 2.5 };
const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url));
const THIS_CLI = path.resolve(BENCH_DIR, '../dist/cli.js');
const FETCH_TIMEOUT_MS = 600_000;
const DEDICATED_CORES = 16; // the issue asks what the figures imply for a dedicated 16-core box

const PATHS = ['tunnel', 'cold', 'warm', 'warmUnverified'] as const;
type PathName = (typeof PATHS)[number];
const PATH_LABEL: Record<PathName, string> = { tunnel: 'tunnel', cold: 'cold (MISS)', warm: 'warm (HIT)', warmUnverified: 'warm, VERIFY_ON_READ=false' };
const CURRENT = 'current'; // this tree's build; other builds are named by their labels
// Everything measured once per round: the relay, each path of each build, the two floors.
type Item =
  | { kind: 'relay' }
  | { kind: 'receive' }
  | { kind: 'registry' }
  | { kind: 'path'; path: PathName; build: string }
  | { kind: 'floor'; algorithm: 'aes-256-gcm' | 'sha256' };

interface Options {
  mb: number;
  runs: number;
  compare: { label: string; cli: string }[]; // other builds measured beside this one
}

interface Setup {
  root: string;
  registry: Registry;
  blob: LayerFile;
  testCaFile: string;
  regcacheCaDir: string;
  env: Record<string, string>;
}

/**
 * One build's four regcache processes: a tunnel-only one, one that caches (cold), one whose stored file
 * stays (warm: a cold run's refill would make the next HIT the file's first), one unverified.
 */
interface BuildProcesses {
  cli: string;
  tunnel: Regcache;
  cache: Regcache;
  warm: Regcache;
  unverified: Regcache;
}

interface Relay {
  daemon: Daemon;
  proxyUrl: string;
}

/** The bare receiver: fetches the blob once per call, in its own process (pid), as regcache's fill would. */
interface Receiver {
  pid: number;
  fetch: () => Promise<Curl>;
  stop: () => void;
}

/** One measurement: CPU of the measured process and of the client per byte, and the wall time. */
interface Sample {
  nsPerByte: number;
  clientNsPerByte: number;
  ms: number;
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);
const running = new Set<Regcache>();

function parseOptions(): Options {
  const compare = (process.env.BENCH_CPU_COMPARE ?? '')
    .split(',')
    .filter((x) => x.trim() !== '')
    .map((x) => {
      const [label, cli] = [x.slice(0, x.indexOf('=')).trim(), x.slice(x.indexOf('=') + 1).trim()];
      if (!label || !cli || label === CURRENT || x.indexOf('=') < 0)
        throw new Error(`BENCH_CPU_COMPARE: expected <label>=<path to dist/cli.js>, got ${JSON.stringify(x)}`);
      return { label, cli: path.resolve(cli) };
    });
  return { mb: envInt('BENCH_CPU_MB', 512), runs: envInt('BENCH_CPU_RUNS', 5), compare };
}

async function setUp(root: string, opts: Options): Promise<Setup> {
  const { registry, blob, ca, regcacheEnv } = await startBlobRegistry(root, { host: HOST, repo: REPO, mb: opts.mb, name: 'cpu-bench' });
  return {
    root,
    registry,
    blob,
    testCaFile: ca.certFile,
    regcacheCaDir: path.join(root, 'regcache-ca'),
    env: regcacheEnv,
  };
}

async function startProxy(s: Setup, name: string, cli: string, env: Record<string, string>): Promise<Regcache> {
  const dir = path.join(s.root, 'proxies', name);
  await mkdir(dir, { recursive: true });
  const rc = await startRegcache({ dir, cacheDir: path.join(dir, 'cache'), caDir: s.regcacheCaDir, env, cli });
  running.add(rc);
  return rc;
}

async function startBuild(s: Setup, build: string, cli: string): Promise<BuildProcesses> {
  const { ADDITIONAL_REGISTRIES: _intercepted, ...tunnelEnv } = s.env; // off the allowlist: tunnelled
  return {
    cli,
    tunnel: await startProxy(s, `${build}-tunnel`, cli, tunnelEnv),
    cache: await startProxy(s, `${build}-cache`, cli, s.env),
    warm: await startProxy(s, `${build}-warm`, cli, s.env),
    unverified: await startProxy(s, `${build}-unverified`, cli, { ...s.env, VERIFY_ON_READ: 'false' }),
  };
}

async function startRelay(s: Setup): Promise<Relay> {
  const dir = path.join(s.root, 'relay');
  await mkdir(dir, { recursive: true });
  const stdoutFile = path.join(dir, 'relay.log');
  const daemon = spawnDaemon(process.execPath, ['--import', 'tsx', path.join(BENCH_DIR, 'cpu/bare-relay.ts'), '127.0.0.1', String(s.registry.port)], {
    env: { PATH: process.env.PATH ?? '' },
    stdoutFile,
    cwd: path.resolve(BENCH_DIR, '..'),
  });
  for (let i = 0; i < 200; i++) {
    const port = /"port":(\d+)/.exec(await readFile(stdoutFile, 'utf8').catch(() => ''))?.[1];
    if (port) return { daemon, proxyUrl: `http://127.0.0.1:${port}` };
    if (!daemon.isRunning()) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  await daemon.stop(1000);
  throw new Error(`the bare relay did not start: ${await readFile(stdoutFile, 'utf8').catch(() => '')}`);
}

async function startReceiver(s: Setup): Promise<Receiver> {
  const url = `https://127.0.0.1:${s.registry.port}/v2/${REPO}/blobs/${s.blob.digest}`;
  const scratch = path.join(s.root, 'receive.scratch');
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(BENCH_DIR, 'cpu/bare-receive.ts'), url, s.testCaFile, s.blob.digest, scratch], {
    cwd: path.resolve(BENCH_DIR, '..'),
    env: { PATH: process.env.PATH ?? '' },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const answers = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    const line = await answers.next();
    if (line.done) throw new Error('the bare receiver exited');
    return JSON.parse(line.value) as Record<string, unknown>;
  };
  await next(); // {"ready":true}
  return {
    pid: child.pid!,
    fetch: async () => {
      const started = performance.now();
      child.stdin.write('\n');
      const { bytes, ok } = (await next()) as { bytes: number; ok: boolean };
      if (!ok || bytes !== s.blob.size) throw new Error(`the bare receiver got ${bytes} bytes, digest ${ok ? 'right' : 'wrong'}`);
      return { ms: performance.now() - started, bytes, tls: null };
    },
    stop: () => child.kill(),
  };
}

const blobUrl = (s: Setup): string => `https://${HOST}/v2/${REPO}/blobs/${s.blob.digest}`;

interface Curl {
  ms: number;
  bytes: number;
  tls: string | null; // with verbose: "TLSv1.3 / TLS_AES_256_GCM_SHA384"
}

/** curl through a CONNECT proxy (null: straight to the registry) to /dev/null over HTTP/1.1, timed by curl itself. */
async function curl(s: Setup, proxyUrl: string | null, caFile: string, verbose = false): Promise<Curl> {
  const args = ['-sS', '--http1.1', '-o', '/dev/null', '--max-time', String(FETCH_TIMEOUT_MS / 1000), '--cacert', caFile];
  args.push(...(proxyUrl === null ? ['--connect-to', `${HOST}:443:127.0.0.1:${s.registry.port}`] : ['--proxy', proxyUrl]));
  args.push(...(verbose ? ['-v'] : []), '-w', '%{http_code} %{size_download} %{time_total}', blobUrl(s));
  const r = await run('curl', args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeoutMs: FETCH_TIMEOUT_MS + 10_000 });
  const [status, size, seconds] = r.stdout.trim().split(' ').map(Number);
  if (r.code !== 0 || status !== 200) throw new Error(`curl via ${proxyUrl ?? 'no proxy'}: exit ${r.code}, HTTP ${status}: ${r.stderr.trim().slice(-500)}`);
  if (size !== s.blob.size) throw new Error(`curl via ${proxyUrl ?? 'no proxy'}: ${size} bytes, expected ${s.blob.size}`);
  return { ms: seconds! * 1000, bytes: size, tls: /SSL connection using (.+)$/m.exec(r.stderr)?.[1]?.trim() ?? null };
}

/** The last request line regcache logged since `since` is this blob, `want`, with every byte. */
async function expectLogged(rc: Regcache, since: number, s: Setup, want: 'HIT' | 'MISS', what: string): Promise<void> {
  const lines = (await rc.requests(since)).filter((l) => l.kind === 'blob' && l.method === 'GET');
  const ok = lines.length === 1 && lines[0]!.cache === want && lines[0]!.status === 200 && lines[0]!.bytes === s.blob.size;
  if (!ok)
    throw new Error(
      `${what}: regcache logged ${JSON.stringify(lines.map((l) => `${l.cache}/${l.status}/${l.bytes}`))}, expected one ${want}/200/${s.blob.size}`,
    );
}

const logCount = async (rc: Regcache): Promise<number> => (await rc.logs()).length;

/** Removes the blob from a running regcache's store (through its control socket), for the next cold run. */
async function evict(rc: Regcache, cli: string, s: Setup): Promise<void> {
  const r = await run(process.execPath, [cli, 'cache', 'rm', s.blob.digest, '--cache-dir', rc.cacheDir], { env: { PATH: process.env.PATH ?? '' } });
  if (r.code !== 0) throw new Error(`regcache cache rm ${s.blob.digest}: exit ${r.code}: ${(r.stderr || r.stdout).trim()}`);
}

/** The CPU the process `pid` spends while `fetch` runs (and until `settle` says its work is done). */
async function measure(pid: number, size: number, fetch: () => Promise<Curl>, settle?: () => Promise<void>): Promise<Sample> {
  const [cpu0, client0] = await Promise.all([cpuSeconds(pid), exitedChildrenCpuSeconds()]);
  const fetched = await fetch();
  const client1 = await exitedChildrenCpuSeconds();
  await settle?.();
  const cpu1 = await cpuSeconds(pid);
  if (cpu0 === null || cpu1 === null) throw new Error(`process ${pid} exited during the bench`);
  return { nsPerByte: ((cpu1 - cpu0) * 1e9) / size, clientNsPerByte: ((client1 - client0) * 1e9) / size, ms: fetched.ms };
}

/** Waits until regcache has logged more than `already` lines with message `msg`. */
async function waitForMore(rc: Regcache, msg: string, already: number, what: string): Promise<void> {
  const deadline = Date.now() + 120_000;
  while ((await rc.logs()).filter((l) => l.msg === msg).length <= already) {
    if (Date.now() > deadline || !rc.daemon.isRunning()) throw new Error(`${what}: no "${msg}" line in regcache's log (${rc.logFile})`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const countLines = async (rc: Regcache, msg: string): Promise<number> => (await rc.logs()).filter((l) => l.msg === msg).length;

/** One measurement of one path of one build. */
async function measurePath(s: Setup, b: BuildProcesses, p: PathName, what: string): Promise<Sample> {
  const size = s.blob.size;
  if (p === 'tunnel') {
    const rc = b.tunnel;
    const closed = await countLines(rc, 'tunnel closed');
    // The tunnel's work ends when both sides have closed (its log line).
    return measure(
      rc.daemon.pid,
      size,
      () => curl(s, rc.proxyUrl, s.testCaFile),
      () => waitForMore(rc, 'tunnel closed', closed, what),
    );
  }
  const rc = p === 'warmUnverified' ? b.unverified : p === 'warm' ? b.warm : b.cache;
  if (p === 'cold') await evict(rc, b.cli, s);
  const since = await logCount(rc);
  const commits = await countLines(rc, 'fill committed');
  // A fill's datasync and commit come after the client has its last byte: part of what a cold byte costs.
  const settle = p === 'cold' ? () => waitForMore(rc, 'fill committed', commits, what) : undefined;
  const sample = await measure(rc.daemon.pid, size, () => curl(s, rc.proxyUrl, rc.caFile), settle);
  await expectLogged(rc, since, s, p === 'cold' ? 'MISS' : 'HIT', what);
  return sample;
}

/** Untimed: a first fetch on every path loads the code paths and JIT-compiles them; the fills prime the caches. */
async function warmUp(
  s: Setup,
  b: BuildProcesses,
  relay: Relay | null,
  receiver: Receiver | null,
): Promise<{ tunnelTls: string | null; interceptedTls: string | null }> {
  if (relay) await curl(s, relay.proxyUrl, s.testCaFile);
  if (relay) await curl(s, null, s.testCaFile);
  await receiver?.fetch();
  const tunnelTls = (await curl(s, b.tunnel.proxyUrl, s.testCaFile, true)).tls;
  let interceptedTls: string | null = null;
  for (const rc of [b.cache, b.warm, b.unverified]) {
    const commits = await countLines(rc, 'fill committed');
    interceptedTls = (await curl(s, rc.proxyUrl, rc.caFile, true)).tls;
    await waitForMore(rc, 'fill committed', commits, 'priming');
    await curl(s, rc.proxyUrl, rc.caFile); // a HIT
  }
  return { tunnelTls, interceptedTls };
}

const itemKey = (item: Item): string =>
  item.kind === 'relay' || item.kind === 'receive' || item.kind === 'registry'
    ? item.kind
    : item.kind === 'floor'
      ? item.algorithm
      : `${item.path}@${item.build}`;

interface Measured {
  samples: Record<string, Sample[]>;
  tls: { tunnel: string | null; intercepted: string | null };
  loadAverage: { before: number; after: number };
}

async function rounds(s: Setup, opts: Options): Promise<Measured> {
  const loadBefore = os.loadavg()[0]!;
  const builds = new Map<string, BuildProcesses>([[CURRENT, await startBuild(s, CURRENT, THIS_CLI)]]);
  for (const other of opts.compare) builds.set(other.label, await startBuild(s, other.label, other.cli));
  const relay = await startRelay(s);
  const receiver = await startReceiver(s);
  try {
    log('warming up: a first fetch on every path (fills prime the caches)...');
    const tls = await warmUp(s, builds.get(CURRENT)!, relay, receiver);
    for (const other of opts.compare) await warmUp(s, builds.get(other.label)!, null, null);
    // VERIFY_ON_READ=once trusts a file only once its ctime is 2 s older than a read that verified it
    // (trusted-files.ts): one more HIT each, past that, so that the rounds measure the steady warm path.
    await new Promise((r) => setTimeout(r, 2_500));
    for (const b of builds.values()) await curl(s, b.warm.proxyUrl, b.warm.caFile);
    const items: Item[] = [
      { kind: 'relay' },
      { kind: 'receive' },
      { kind: 'registry' },
      ...[...builds.keys()].flatMap((build) => PATHS.map((p): Item => ({ kind: 'path', path: p, build }))),
      { kind: 'floor', algorithm: 'aes-256-gcm' },
      { kind: 'floor', algorithm: 'sha256' },
    ];
    const samples: Record<string, Sample[]> = Object.fromEntries(items.map((item) => [itemKey(item), []]));
    for (let i = 0; i < opts.runs; i++) {
      // Rotate the order each round so that no measurement always follows the same one.
      const order = items.map((_, k) => items[(i + k) % items.length]!);
      for (const item of order) {
        const what = `${itemKey(item)} round ${i + 1}`;
        let sample: Sample;
        if (item.kind === 'floor') sample = { nsPerByte: await opensslNsPerByte(item.algorithm), clientNsPerByte: NaN, ms: NaN };
        else if (item.kind === 'relay') sample = await measure(relay.daemon.pid, s.blob.size, () => curl(s, relay.proxyUrl, s.testCaFile));
        else if (item.kind === 'receive') sample = await measure(receiver.pid, s.blob.size, receiver.fetch);
        else if (item.kind === 'registry') sample = await measure(s.registry.pid, s.blob.size, () => curl(s, null, s.testCaFile));
        else sample = await measurePath(s, builds.get(item.build)!, item.path, what);
        samples[itemKey(item)]!.push(sample);
      }
      log(
        `round ${i + 1}/${opts.runs}: ${order.map((item) => `${itemKey(item)} ${samples[itemKey(item)]!.at(-1)!.nsPerByte.toFixed(2)}`).join(', ')} ns/B (load ${os.loadavg()[0]!.toFixed(1)})`,
      );
    }
    return { samples, tls: { tunnel: tls.tunnelTls, intercepted: tls.interceptedTls }, loadAverage: { before: loadBefore, after: os.loadavg()[0]! } };
  } finally {
    receiver.stop();
    await relay.daemon.stop(2000);
  }
}

type Verdict = 'PASS' | 'FAIL';

interface Row {
  key: string;
  label: string;
  nsPerByte: number; // median
  min: number;
  max: number;
  mbPerSecond: number | null; // the download's, median wall time
  clientNsPerByte: number | null; // curl's CPU per byte, median
  floor: { label: string; nsPerByte: number } | null;
  ratio: number | null; // nsPerByte / floor
  target: number | null;
  verdict: Verdict | null;
  vsCurrent: number | null; // another build's row: its ns/B over this tree's, same path
}

interface Summary {
  blob: { digest: string; bytes: number };
  runs: number;
  floors: { aes: number; sha: number };
  rows: Row[];
  tls: Measured['tls'];
  loadAverage: Measured['loadAverage'];
  samples: Record<string, Sample[]>;
  targets: typeof TARGETS;
}

function summarize(s: Setup, opts: Options, m: Measured): Summary {
  const med = (key: string, f: (x: Sample) => number): number => median(m.samples[key]!.map(f));
  const ns = (key: string): number => med(key, (x) => x.nsPerByte);
  const aes = ns('aes-256-gcm');
  const sha = ns('sha256');
  const relay = ns('relay');
  const floorOf: Record<PathName, { label: string; nsPerByte: number }> = {
    tunnel: { label: 'bare relay', nsPerByte: relay },
    cold: { label: '2 AES + SHA', nsPerByte: 2 * aes + sha },
    warm: { label: 'AES + SHA', nsPerByte: aes + sha },
    warmUnverified: { label: 'AES', nsPerByte: aes },
  };
  const row = (key: string, label: string, p: PathName | null): Row => {
    const xs = m.samples[key]!.map((x) => x.nsPerByte);
    const fetched = !key.startsWith('aes') && !key.startsWith('sha');
    const floor = p ? floorOf[p] : null;
    const ratio = floor ? ns(key) / floor.nsPerByte : null;
    const target = p ? TARGETS[p] : null;
    const currentKey = p && !key.endsWith(`@${CURRENT}`) ? `${p}@${CURRENT}` : null;
    return {
      key,
      label,
      nsPerByte: ns(key),
      min: Math.min(...xs),
      max: Math.max(...xs),
      mbPerSecond: fetched ? s.blob.size / 1e6 / (med(key, (x) => x.ms) / 1000) : null,
      clientNsPerByte: fetched && key !== 'receive' ? med(key, (x) => x.clientNsPerByte) : null, // the receiver is its own client
      floor,
      ratio,
      target,
      verdict: ratio !== null && target !== null ? (ratio <= target ? 'PASS' : 'FAIL') : null,
      vsCurrent: currentKey ? ns(key) / ns(currentKey) : null,
    };
  };
  const rows = [
    row('aes-256-gcm', 'openssl speed aes-256-gcm', null),
    row('sha256', 'openssl speed sha256', null),
    row('relay', 'bare Node relay (net, pipe)', null),
    row('receive', 'bare Node receive, hash, write', null),
    row('registry', 'docker-registry sending it, no proxy', null),
  ];
  // Each path of this tree, then the same path of every compared build.
  for (const p of PATHS) {
    rows.push(row(`${p}@${CURRENT}`, PATH_LABEL[p], p));
    for (const other of opts.compare) rows.push(row(`${p}@${other.label}`, `  [${other.label}]`, p));
  }
  return {
    blob: { digest: s.blob.digest, bytes: s.blob.size },
    runs: opts.runs,
    floors: { aes, sha },
    rows,
    tls: m.tls,
    loadAverage: m.loadAverage,
    samples: m.samples,
    targets: TARGETS,
  };
}

function report(r: Summary, env: Record<string, string>): string {
  const widths = [36, 7, 7, 7, 13, 7, 9, 9, 8, 7, 11, 11];
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[0]!) : c.padStart(widths[i] ?? 9))).join('');
  const f2 = (x: number | null): string => (x === null || Number.isNaN(x) ? '' : x.toFixed(2));
  const withCompare = r.rows.some((x) => x.vsCurrent !== null);
  const lines = [
    '',
    `regcache CPU bench: one ${(r.blob.bytes / 1e6).toFixed(1)} MB blob (1 MB = 10^6 bytes) from docker-registry over TLS, curl --http1.1 to /dev/null`,
    `  through each proxy; ${r.runs} rounds, every measurement once per round in a rotating order; medians`,
    `  ${env.machine}; node ${env.node}, ${env.openssl}, ${env.curl}, regcache ${env.git}${env.compare ? `; compared: ${env.compare}` : ''}`,
    `  load average (1 min): ${r.loadAverage.before.toFixed(2)} before, ${r.loadAverage.after.toFixed(2)} after; TLS curl-regcache ${r.tls.intercepted ?? '?'}, curl-registry (relayed) ${r.tls.tunnel ?? '?'}`,
    '',
    line(['CPU per byte of', 'ns/B', 'min', 'max', 'floor', 'ns/B', 'x floor', 'target', 'result', 'MB/s', 'curl ns/B', withCompare ? 'x current' : '']),
  ];
  for (const x of r.rows) {
    lines.push(
      line([
        x.label,
        f2(x.nsPerByte),
        f2(x.min),
        f2(x.max),
        x.floor?.label ?? '',
        f2(x.floor?.nsPerByte ?? null),
        x.ratio === null ? '' : `${x.ratio.toFixed(2)}x`,
        x.target === null ? '' : `<= ${x.target.toFixed(1)}x`,
        x.verdict ?? '',
        x.mbPerSecond === null ? '' : x.mbPerSecond.toFixed(0),
        f2(x.clientNsPerByte),
        x.vsCurrent === null ? '' : `${x.vsCurrent.toFixed(2)}x`,
      ]).trimEnd(),
    );
  }
  const cur = (p: PathName): Row => r.rows.find((x) => x.key === `${p}@${CURRENT}`)!;
  const receive = r.rows.find((x) => x.key === 'receive')!.nsPerByte;
  lines.push(
    '',
    `  CPU: user + system of the measured process (every thread), /proc/<pid>/stat in 10 ms ticks, from before the request to the`,
    `  end of its work (a cold fill's datasync and commit, a tunnel's close). floors: openssl speed -evp at 16 KiB blocks (user CPU).`,
    `  above the floor: tunnel ${f2(cur('tunnel').nsPerByte - r.rows.find((x) => x.key === 'relay')!.nsPerByte)} ns/B over the bare relay; cold ${f2(cur('cold').nsPerByte - cur('cold').floor!.nsPerByte)}, ` +
      `warm ${f2(cur('warm').nsPerByte - cur('warm').floor!.nsPerByte)}, warm unverified ${f2(cur('warmUnverified').nsPerByte - cur('warmUnverified').floor!.nsPerByte)} ns/B over their crypto`,
    `  a cold byte in Node with none of regcache's code: the bare receive plus the warm HIT's send = ${f2(receive + cur('warm').nsPerByte)} ns/B; ` +
      `regcache's cold is ${f2(cur('cold').nsPerByte - receive - cur('warm').nsPerByte)} ns/B above that`,
    `  one core at these figures (1 / ns per byte): warm ${(1 / cur('warm').nsPerByte).toFixed(2)} GB/s, cold ${(1 / cur('cold').nsPerByte).toFixed(2)} GB/s, ` +
      `tunnel ${(1 / cur('tunnel').nsPerByte).toFixed(2)} GB/s; ${DEDICATED_CORES} such cores (WORKERS=${DEDICATED_CORES}, if nothing but CPU limits): ` +
      `warm ${(DEDICATED_CORES / cur('warm').nsPerByte).toFixed(1)}, cold ${(DEDICATED_CORES / cur('cold').nsPerByte).toFixed(1)}, tunnel ${(DEDICATED_CORES / cur('tunnel').nsPerByte).toFixed(1)} GB/s (10 GbE: 1.25 GB/s)`,
    '',
  );
  return lines.join('\n');
}

async function describeEnvironment(opts: Options): Promise<Record<string, string>> {
  const m = describeMachine();
  const rev = async (cwd: string): Promise<string> => {
    const sha = (await run('git', ['rev-parse', '--short', 'HEAD'], { cwd }).catch(() => null))?.stdout.trim() || '?';
    const dirty = (await run('git', ['status', '--porcelain', '--untracked-files=no'], { cwd }).catch(() => null))?.stdout.trim();
    return dirty ? `${sha}+dirty` : sha;
  };
  const curlVersion = (await run('curl', ['--version']).catch(() => null))?.stdout.split(' ').slice(0, 2).join(' ') || 'curl ?';
  return {
    machine: `${m.cpus} CPUs (${m.cpuModel}), ${m.ramGb} GiB RAM, ${m.kernel}`,
    node: process.version,
    openssl: await opensslVersion(),
    curl: curlVersion,
    git: await rev(path.resolve(BENCH_DIR, '..')),
    compare: (await Promise.all(opts.compare.map(async (o) => `${o.label} = ${o.cli} (${await rev(path.dirname(o.cli))})`))).join(', '),
  };
}

async function bench(root: string, opts: Options): Promise<Summary> {
  log(`setting up: registry, ${opts.mb} MB blob, push...`);
  const s = await setUp(root, opts);
  try {
    return summarize(s, opts, await rounds(s, opts));
  } finally {
    await Promise.all([...running].map((rc) => rc.stop()));
    running.clear();
    await s.registry.stop();
  }
}

function docsSection(text: string, date: string, o: Options): string {
  return [
    '## CPU per byte: tunnel, cold and warm beside a bare Node relay and the openssl floors (bench/cpu-bench.ts)',
    '',
    `- Date: ${date}`,
    '',
    '```text',
    text.trim(),
    '```',
    '',
    "- `x floor`: a path's CPU per byte over its floor: the bare relay for the tunnel; AES + SHA for a warm byte (encrypted and",
    '  hashed once), AES alone without VERIFY_ON_READ; 2 AES + SHA for a cold byte (decrypted, hashed, encrypted). The floors are',
    '  AES-256-GCM, what curl and regcache agree on; docker-registry (Go) picks AES-128-GCM, a little cheaper, for what it serves.',
    "- `curl ns/B`: the client's own CPU per byte, for the record; `x current`: another build's figure over this tree's, same path.",
    '- `bare Node receive, hash, write` (bench/cpu/bare-receive.ts): undici GET over TLS, sha256, writev to a file, in a Node process',
    "  with none of regcache's code: a cold fill's first half. With the warm HIT's send it is what a cold byte costs in Node before",
    "  regcache's own work (its fill table, the spool read back for the client, the commit): the line under the table.",
    "- Client, registry and regcache share the cores over loopback, where a sender also pays its receiver's TCP processing. What each",
    '  path is made of (profiles), why the cold target is out of reach in Node and the unverified warm one on the line, and what the',
    '  figures mean for a 16-core box: docs/decisions.md #71-#73.',
    '',
    'Reproduce: `npm run bench`, or after `npm run build`,',
    o.compare.length > 0
      ? `\`BENCH_CPU_MB=${o.mb} BENCH_CPU_RUNS=${o.runs} BENCH_CPU_COMPARE="${o.compare.map((c) => `${c.label}=<its build>/dist/cli.js`).join(',')}" node --import tsx bench/cpu-bench.ts\`.`
      : `\`BENCH_CPU_MB=${o.mb} BENCH_CPU_RUNS=${o.runs} node --import tsx bench/cpu-bench.ts\` (add \`BENCH_CPU_COMPARE=<label>=<other tree>/dist/cli.js\` to measure another build beside this one).`,
  ].join('\n');
}

process.exitCode = await runBench('cpu-bench', 'cpu-', async (root) => {
  const opts = parseOptions();
  const env = await describeEnvironment(opts);
  const date = new Date().toISOString();
  const result = await bench(root, opts);
  const text = report(result, env);
  const doc = await writeDocsSection('cpu-bench', docsSection(text, date, opts));
  return { text: `${text}docs: ${path.relative(process.cwd(), doc)} (cpu-bench section)\n`, json: { environment: env, options: opts, ...result } };
});
