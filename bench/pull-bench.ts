// The pull benchmark: one image pulled by skopeo straight from a real docker-registry (the baseline),
// through a fresh regcache with an empty cache (cold) and through regcache with the image cached (warm),
// interleaved in one run; then regcache's peak RSS and the latency of a new host's first intercepted
// request. Reports medians and ratios against the baseline with PASS/FAIL per target; exits non-zero
// only when something broke (a pull failed, bytes differ, the cache did not MISS/HIT as expected).
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { makeImage, pushImage, type Image } from '../test/harness/images.js';
import { createTestCA } from '../test/harness/pki.js';
import { run } from '../test/harness/proc.js';
import { startRegcache, type Regcache } from '../test/harness/regcache.js';
import { startRegistry, type Registry } from '../test/harness/registry.js';
import { runSkopeo, skopeoCopyToDir } from '../test/harness/skopeo.js';
import { blobGetLines, checkPulledImage, cpuSeconds, exitedChildrenCpuSeconds, median, memoryMb, runBench, stopRegcache, timedGet } from './measure.js';

const HOST = 'registry.bench';
const REPO = 'bench/image';
const TAG = 'v1';
const TARGETS = { cold: 1.1, warm: 1.05, firstRequestMs: 50 };
// tunnel: regcache relays the TLS bytes without intercepting them (the host is off its allowlist), the
// least any forward proxy costs on this machine: the reference for what cold and warm add.
const MODES = ['direct', 'tunnel', 'cold', 'warm'] as const;
type Mode = (typeof MODES)[number];

interface Options {
  runs: number;
  mb: number;
}

/** Everything the runs share: one registry, one image, one regcache CA for cold and warm. */
interface Setup {
  root: string;
  image: Image;
  imageBytes: number;
  registry: Registry;
  testCaPem: string;
  directCertDir: string; // only the test CA's ca.crt (a *.key would be taken for a client key)
  proxyCertDir: string; // only regcache's ca.crt
  regcacheCaDir: string;
  env: Record<string, string>;
}

interface Probe {
  startupMs: number;
  directMs: number;
  firstMs: number;
  secondMs: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({ options: { runs: { type: 'string' }, mb: { type: 'string' } } });
  const int = (name: string, raw: string | undefined, fallback: number): number => {
    const n = Number(raw ?? fallback);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
    return n;
  };
  return { runs: int('--runs / BENCH_RUNS', values.runs ?? process.env.BENCH_RUNS, 5), mb: int('--mb / BENCH_MB', values.mb ?? process.env.BENCH_MB, 250) };
}

async function setUp(root: string, opts: Options): Promise<Setup> {
  const caDir = path.join(root, 'test-ca');
  await mkdir(caDir);
  const ca = await createTestCA(caDir, 'regcache bench CA');
  // The same certificate serves the baseline (by IP) and the proxied pulls (by name, via CONNECT_TO).
  const tls = await ca.issue([HOST, '127.0.0.1'], caDir, 'registry');
  const registry = await startRegistry({ dir: path.join(root, 'registry'), tls, caFile: ca.certFile });

  // Three layers of incompressible data, stored uncompressed in gzip framing (compressing would only cost time).
  const total = opts.mb * 1_000_000;
  const sizes = [Math.round(total * 0.5), Math.round(total * 0.3)];
  sizes.push(total - sizes[0]! - sizes[1]!);
  const image = await makeImage(path.join(root, 'image'), {
    layers: sizes.map((size, i) => ({ size, seed: `bench-${opts.mb}-${i}` })),
    gzipLevel: 0,
  });
  await pushImage(registry.url, REPO, TAG, image, { caFile: ca.certFile });

  const directCertDir = path.join(root, 'certs-direct');
  await mkdir(directCertDir);
  await copyFile(ca.certFile, path.join(directCertDir, 'ca.crt'));
  return {
    root,
    image,
    imageBytes: [image.config, ...image.layers].reduce((sum, b) => sum + b.size, 0),
    registry,
    testCaPem: ca.certPem,
    directCertDir,
    proxyCertDir: path.join(root, 'certs-proxy'),
    regcacheCaDir: path.join(root, 'regcache-ca'),
    env: {
      ADDITIONAL_REGISTRIES: HOST,
      UPSTREAM_CA_FILE: ca.certFile,
      CONNECT_TO: `${HOST}:443:127.0.0.1:${registry.port}`,
      LOG_LEVEL: 'info', // what operators run; the request lines are info
    },
  };
}

// Every regcache still running, so that a failure half-way stops them (a live child keeps node running).
const running = new Set<Regcache>();

async function startProxy(s: Setup, name: string, cacheDir: string, caDir?: string, env = s.env): Promise<{ rc: Regcache; startupMs: number }> {
  const dir = path.join(s.root, name);
  await mkdir(dir, { recursive: true });
  const spawned = Date.now();
  const rc = await startRegcache({ dir, env, cacheDir, ...(caDir !== undefined ? { caDir } : {}) });
  running.add(rc);
  const listening = (await rc.logs()).find((l) => l.msg === 'listening');
  return { rc, startupMs: Date.parse(String(listening?.time)) - spawned };
}

const stopProxy = (rc: Regcache, what: string): Promise<number> => stopRegcache(rc, what, running);

interface PullResult {
  seconds: number;
  cpu: number; // regcache's CPU seconds
  allCpu: number; // CPU seconds of every process in the pull: skopeo, the registry and regcache
}

/** CPU seconds so far of the registry and regcache (live) and of the exited children (skopeo runs). */
async function pullCpu(s: Setup, rc?: Regcache): Promise<{ regcache: number; all: number }> {
  const [regcache, registry, exited] = await Promise.all([rc ? cpuSeconds(rc.daemon.pid) : 0, cpuSeconds(s.registry.pid), exitedChildrenCpuSeconds()]);
  return { regcache: regcache ?? NaN, all: (regcache ?? NaN) + (registry ?? NaN) + exited };
}

/** One timed `skopeo copy` to a fresh dir: (through rc if given), then a check of every pulled byte. */
async function pull(s: Setup, what: Mode | 'priming', rc?: Regcache): Promise<PullResult> {
  const out = path.join(s.root, 'pulled');
  await rm(out, { recursive: true, force: true });
  await run('sync', []); // the previous run's dirty pages must not be written back during this one
  const direct = rc === undefined;
  const ref = direct ? `127.0.0.1:${s.registry.port}/${REPO}:${TAG}` : `${HOST}/${REPO}:${TAG}`;
  const cpuBefore = await pullCpu(s, rc);
  const started = performance.now();
  const res = await skopeoCopyToDir(ref, out, {
    dir: path.join(s.root, 'skopeo'),
    env: direct ? {} : { HTTPS_PROXY: rc.proxyUrl },
    certDir: direct || what === 'tunnel' ? s.directCertDir : s.proxyCertDir, // a tunnel shows the registry's own certificate
    timeoutMs: 600_000,
  });
  const seconds = (performance.now() - started) / 1000;
  const cpuAfter = await pullCpu(s, rc);
  if (res.code !== 0) throw new Error(`${what} pull failed (skopeo exit ${res.code}): ${res.stderr.trim()}`);
  const bad = await checkPulledImage(out, s.image);
  if (bad !== null) throw new Error(`${what} pull: ${bad}`);
  await rm(out, { recursive: true, force: true });
  return {
    seconds,
    cpu: cpuAfter.regcache - cpuBefore.regcache,
    allCpu: cpuAfter.all - cpuBefore.all,
  };
}

/** Every blob of the image was requested once since log line `since`, answered with `want`. */
async function expectCache(rc: Regcache, since: number, image: Image, want: 'HIT' | 'MISS', what: string): Promise<void> {
  const blobs = [image.config, ...image.layers];
  const lines = await blobGetLines(
    rc,
    since,
    blobs.map((b) => b.digest),
    what,
  );
  for (const blob of blobs) {
    const got = lines.filter((l) => l.digest === blob.digest).map((l) => `${l.cache}/${l.status}`);
    if (got.length !== 1 || got[0] !== `${want}/200`) {
      throw new Error(`${what} pull: regcache logged [${got.join(', ')}] for ${blob.digest}, expected one ${want}/200`);
    }
  }
}

/** A fresh regcache (new CA, empty cache); once listening, time GET /v2/ direct, then twice through it. */
async function probeFirstRequest(s: Setup, i: number): Promise<Probe> {
  const name = `probe-${i}`;
  const { rc, startupMs } = await startProxy(s, name, path.join(s.root, name, 'cache'));
  try {
    const ca = await readFile(rc.caFile, 'utf8');
    const direct = await timedGet({ host: HOST, port: s.registry.port, ca: s.testCaPem });
    const first = await timedGet({ host: HOST, port: 443, ca, proxyPort: rc.port });
    const second = await timedGet({ host: HOST, port: 443, ca, proxyPort: rc.port });
    for (const [what, r] of [
      ['direct', direct],
      ['first', first],
      ['second', second],
    ] as const) {
      if (r.status !== 200) throw new Error(`first-request probe: ${what} GET /v2/ answered ${r.status}`);
    }
    return { startupMs, directMs: direct.ms, firstMs: first.ms, secondMs: second.ms };
  } finally {
    await rc.stop();
    running.delete(rc);
    await rm(path.join(s.root, name), { recursive: true, force: true });
  }
}

async function bench(root: string, opts: Options): Promise<Summary> {
  process.stderr.write(`setting up: registry, ${opts.mb} MB image, push...\n`);
  const s = await setUp(root, opts);
  try {
    const perMode = (): Record<Mode, number[]> => ({ direct: [], tunnel: [], cold: [], warm: [] });
    const times = perMode();
    const cpu = perMode(); // regcache's CPU seconds per pull
    const allCpu = perMode(); // skopeo + registry + regcache
    const record = (mode: Mode, r: PullResult): void => {
      times[mode].push(r.seconds);
      allCpu[mode].push(r.allCpu);
      if (mode !== 'direct') cpu[mode].push(r.cpu);
    };
    const coldPeaks: number[] = [];

    // The warm cache is filled by an untimed pull in a process of its own, so that the warm
    // process's peak RSS belongs to warm pulls only.
    const warmCache = path.join(root, 'warm-cache');
    const prime = await startProxy(s, 'prime', warmCache, s.regcacheCaDir);
    await mkdir(s.proxyCertDir);
    await copyFile(prime.rc.caFile, path.join(s.proxyCertDir, 'ca.crt'));
    await pull(s, 'priming', prime.rc);
    await expectCache(prime.rc, 0, s.image, 'MISS', 'priming');
    await stopProxy(prime.rc, 'priming');
    const warm = await startProxy(s, 'warm', warmCache, s.regcacheCaDir);
    const idleMb = (await memoryMb(warm.rc.daemon.pid))?.now ?? NaN;
    const { ADDITIONAL_REGISTRIES: _intercepted, ...tunnelEnv } = s.env;
    const tunnel = await startProxy(s, 'tunnel', path.join(root, 'tunnel-cache'), s.regcacheCaDir, tunnelEnv);

    for (let i = 0; i < opts.runs; i++) {
      // Rotate the order each round so no mode always follows the same one (page cache, writeback).
      const order = MODES.map((_, k) => MODES[(i + k) % MODES.length]!);
      for (const mode of order) {
        if (mode === 'direct') {
          record('direct', await pull(s, 'direct'));
        } else if (mode === 'tunnel') {
          record('tunnel', await pull(s, 'tunnel', tunnel.rc));
        } else if (mode === 'warm') {
          const since = (await warm.rc.logs()).length;
          record('warm', await pull(s, 'warm', warm.rc));
          await expectCache(warm.rc, since, s.image, 'HIT', 'warm');
        } else {
          const coldCache = path.join(root, 'cold-cache');
          await rm(coldCache, { recursive: true, force: true });
          const cold = await startProxy(s, `cold-${i}`, coldCache, s.regcacheCaDir);
          record('cold', await pull(s, 'cold', cold.rc));
          await expectCache(cold.rc, 0, s.image, 'MISS', 'cold');
          coldPeaks.push(await stopProxy(cold.rc, 'cold'));
          await rm(coldCache, { recursive: true, force: true });
        }
      }
      const last = (m: Mode): string => `${m} ${times[m].at(-1)?.toFixed(2)} s`;
      process.stderr.write(`round ${i + 1}/${opts.runs}: ${order.map(last).join(', ')}\n`);
    }
    const warmPeak = await stopProxy(warm.rc, 'warm');
    await stopProxy(tunnel.rc, 'tunnel');

    // Warm pulls must not have reached the registry: one GET per blob per direct, tunnel, cold and priming pull.
    const expectedGets = 3 * opts.runs + 1;
    for (const blob of [s.image.config, ...s.image.layers]) {
      const gets = await s.registry.countBlobGets(blob.digest);
      if (gets !== expectedGets) throw new Error(`registry served ${blob.digest} ${gets} times, expected ${expectedGets}`);
    }

    process.stderr.write('first-request probes...\n');
    await timedGet({ host: HOST, port: s.registry.port, ca: s.testCaPem }); // loads our own TLS client code once
    const probes: Probe[] = [];
    for (let i = 0; i < opts.runs; i++) probes.push(await probeFirstRequest(s, i));

    return summarize(s, opts, times, cpu, allCpu, { coldPeaks, warmPeak, idleMb }, probes);
  } finally {
    await Promise.all([...running].map((rc) => rc.stop()));
    await s.registry.stop();
  }
}

interface Summary {
  image: { bytes: number; layers: number[]; manifestDigest: string };
  runs: number;
  seconds: Record<Mode, number[]>;
  regcacheCpuSeconds: Record<Mode, number[]>;
  /** CPU seconds per pull of every process in it (skopeo + registry + regcache), and what that allows. */
  allCpuSeconds: Record<Mode, number[]>;
  /** The fastest a pull could be if every core were busy with it all along: median all-CPU / cores. */
  cpuFloorSeconds: Record<Mode, number>;
  medianSeconds: Record<Mode, number>;
  mbPerSecond: Record<Mode, number>;
  ratioToDirect: Record<Exclude<Mode, 'direct'>, number>;
  rssMb: { coldPeakMax: number; coldPeaks: number[]; warmPeak: number; idleAfterStart: number };
  firstRequest: { probes: Probe[]; medianMs: Probe };
  targets: typeof TARGETS;
  verdicts: Record<'cold' | 'warm' | 'firstRequest', 'PASS' | 'FAIL'>;
}

function summarize(
  s: Setup,
  opts: Options,
  seconds: Record<Mode, number[]>,
  regcacheCpuSeconds: Record<Mode, number[]>,
  allCpuSeconds: Record<Mode, number[]>,
  rss: { coldPeaks: number[]; warmPeak: number; idleMb: number },
  probes: Probe[],
): Summary {
  const byMode = (f: (m: Mode) => number): Record<Mode, number> => ({ direct: f('direct'), tunnel: f('tunnel'), cold: f('cold'), warm: f('warm') });
  const med = byMode((m) => median(seconds[m]));
  const ratio = { tunnel: med.tunnel / med.direct, cold: med.cold / med.direct, warm: med.warm / med.direct };
  const probeMedian = (k: keyof Probe): number => median(probes.map((p) => p[k]));
  const medianMs: Probe = {
    startupMs: probeMedian('startupMs'),
    directMs: probeMedian('directMs'),
    firstMs: probeMedian('firstMs'),
    secondMs: probeMedian('secondMs'),
  };
  const verdict = (ok: boolean): 'PASS' | 'FAIL' => (ok ? 'PASS' : 'FAIL');
  const cores = os.availableParallelism();
  const floor = (m: Mode): number => median(allCpuSeconds[m]) / cores;
  return {
    image: { bytes: s.imageBytes, layers: s.image.layers.map((l) => l.size), manifestDigest: s.image.manifestDigest },
    runs: opts.runs,
    seconds,
    regcacheCpuSeconds,
    allCpuSeconds,
    cpuFloorSeconds: byMode(floor),
    medianSeconds: med,
    mbPerSecond: byMode((m) => s.imageBytes / 1e6 / med[m]),
    ratioToDirect: ratio,
    rssMb: { coldPeakMax: Math.max(...rss.coldPeaks), coldPeaks: rss.coldPeaks, warmPeak: rss.warmPeak, idleAfterStart: rss.idleMb },
    firstRequest: { probes, medianMs },
    targets: TARGETS,
    verdicts: {
      cold: verdict(ratio.cold <= TARGETS.cold),
      warm: verdict(ratio.warm <= TARGETS.warm),
      firstRequest: verdict(medianMs.firstMs <= TARGETS.firstRequestMs),
    },
  };
}

function report(r: Summary, env: Record<string, string>): string {
  const fr = r.firstRequest.medianMs;
  const row = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(7) : c.padStart(10))).join('');
  const lines = [
    '',
    `regcache pull bench: ${(r.image.bytes / 1e6).toFixed(1)} MB image (${r.image.layers.length} layers + config), ${r.runs} interleaved runs per mode`,
    `  ${env.cpus} CPUs, node ${env.node}, ${env.skopeo}, regcache ${env.git}`,
    '',
    row(['mode', 'median s', 'min s', 'max s', 'MB/s', 'proxy CPU', 'all CPU', 'CPU floor', 'vs direct', 'target', 'result']),
  ];
  for (const mode of MODES) {
    const times = r.seconds[mode];
    const base = [mode, r.medianSeconds[mode].toFixed(3), Math.min(...times).toFixed(3), Math.max(...times).toFixed(3), r.mbPerSecond[mode].toFixed(1)];
    const cpu = [`${median(r.allCpuSeconds[mode]).toFixed(2)} s`, `${r.cpuFloorSeconds[mode].toFixed(2)} s`];
    if (mode === 'direct') lines.push(row([...base, '-', ...cpu, '1.00x']));
    else if (mode === 'tunnel')
      lines.push(row([...base, `${median(r.regcacheCpuSeconds[mode]).toFixed(2)} s`, ...cpu, `${r.ratioToDirect[mode].toFixed(2)}x`, 'reference']));
    else
      lines.push(
        row([
          ...base,
          `${median(r.regcacheCpuSeconds[mode]).toFixed(2)} s`,
          ...cpu,
          `${r.ratioToDirect[mode].toFixed(2)}x`,
          `<= ${TARGETS[mode].toFixed(2)}x`,
          r.verdicts[mode],
        ]),
      );
  }
  const coldFloorRatio = r.cpuFloorSeconds.cold / r.medianSeconds.direct;
  lines.push(
    `all CPU: CPU seconds per pull of skopeo + registry + regcache; CPU floor: that / ${os.availableParallelism()} cores, the wall time if`,
    `every core did nothing else throughout. Cold's floor alone is ${coldFloorRatio.toFixed(2)}x the direct median${coldFloorRatio > TARGETS.cold ? ` (> ${TARGETS.cold}x: the target cannot be met on this machine)` : ''}.`,
    `tunnel: the same pull through regcache with the host off its allowlist (TLS relayed untouched), the least any`,
    `forward proxy adds here; cold adds upstream TLS, hashing and the disk write to it, warm serves from the disk.`,
    '',
    `regcache peak RSS (VmHWM): cold ${r.rssMb.coldPeakMax.toFixed(1)} MB (max over ${r.rssMb.coldPeaks.length} processes), warm ${r.rssMb.warmPeak.toFixed(1)} MB; idle after start ${r.rssMb.idleAfterStart.toFixed(1)} MB`,
    `first intercepted request (GET /v2/ on a new connection, new host, fresh process; median of ${r.firstRequest.probes.length}):`,
    `  through regcache ${fr.firstMs.toFixed(1)} ms vs direct ${fr.directMs.toFixed(1)} ms (+${(fr.firstMs - fr.directMs).toFixed(1)} ms); same host again ${fr.secondMs.toFixed(1)} ms`,
    `  target <= ${TARGETS.firstRequestMs} ms: ${r.verdicts.firstRequest}   (process start to listening, incl. CA creation: ${fr.startupMs.toFixed(0)} ms)`,
    '',
  );
  return lines.join('\n');
}

async function describeEnvironment(): Promise<Record<string, string>> {
  const skopeo = await runSkopeo(['--version'], { dir: path.join(os.tmpdir(), 'regcache-bench-skopeo-version') })
    .then((r) => r.stdout.trim())
    .catch(() => 'skopeo ?');
  await rm(path.join(os.tmpdir(), 'regcache-bench-skopeo-version'), { recursive: true, force: true });
  const rev = (await run('git', ['rev-parse', '--short', 'HEAD'])).stdout.trim() || '?';
  const dirty = (await run('git', ['status', '--porcelain', '--untracked-files=no'])).stdout.trim() !== '';
  return { cpus: String(os.availableParallelism()), node: process.version, skopeo, git: dirty ? `${rev}+dirty` : rev };
}

process.exitCode = await runBench('bench', '', async (root) => {
  const opts = parseOptions();
  const env = await describeEnvironment();
  const result = await bench(root, opts);
  return { text: report(result, env), json: { environment: env, ...result } };
});
