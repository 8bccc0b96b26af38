// The peer benchmark: regcache next to the other ways of caching registry pulls, each from a Debian
// package and configured here, in front of one real docker-registry upstream under a test CA:
//   direct        skopeo pulls from the upstream itself: the limit;
//   regcache      HTTPS_PROXY, TLS intercepted, disk cache;
//   squid         squid-openssl with ssl-bump and a ufs disk cache, HTTPS_PROXY: the same architecture
//                 (bench/peers/squid.ts);
//   pull-through  docker-registry with proxy: remoteurl, pulled from by its own address: the mirror
//                 architecture (bench/peers/pull-through.ts).
// Figures, all pulls by `skopeo copy` to a dir: and checked byte for byte:
//   1. cold and warm pull times of a small image (~150 MB, 4 layers) and a big one (~1 GB, one layer):
//      medians of interleaved runs (cold: a fresh proxy with an empty cache each run; warm: that proxy's
//      second pull), ratios to direct, upstream blob GETs per run from the upstream's access log;
//   2. BENCH_PEER_CLIENTS (20) concurrent cold pulls of the small image through each proxy: upstream GETs
//      per blob, wall time against one pull, the proxy's peak RSS (VmHWM); then as many concurrent cold
//      GETs of the big image's 1 GB blob through regcache by clients in this process that hash what they
//      get (the RSS target; twenty skopeo copies of 1 GB would spend minutes writing 20 GB to disk);
//   3. with BENCH_NETEM=1 (or --netem): the small image from an upstream behind a 200 Mbit/s, 30 ms link
//      (bench/peers/netem.ts), where what a cache saves shows.
// Options (environment): BENCH_PEER_SMALL_MB (150), BENCH_PEER_BIG_MB (1024), BENCH_PEER_RUNS (5, small
// image), BENCH_PEER_BIG_RUNS (3), BENCH_PEER_CLIENTS (20), BENCH_NETEM, BENCH_PEER_NETEM_RUNS (5),
// BENCH_PEER_WARMUP (1: rounds run before the measured ones and not counted; the first rounds of a run were
// slow for every build, which widened the spread the ratios are read against);
// BENCH_PEER_COMPARE="<label>=<another build's dist/cli.js>[,...]" adds those builds as peers `regcache@<label>`
// in the same rounds (cold and warm only), so a change is measured against the build before it.
// Output: a report on stdout, bench/results/peer-<time>.json, and the peer-bench section of
// docs/benchmarks.md. Targets get PASS/FAIL. A peer's failure (a pull that fails, e.g. an HTTP 500 to one of
// the concurrent clients, wrong bytes, a process that dies or never stores) is recorded as that peer's
// result for that run and the bench goes on, so every row is reported; the exit code is non-zero when a
// direct or regcache pull failed, or the bench itself broke.
import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ProxyAgent, request } from 'undici';
import { makeImage, pushImage, type BlobFile, type Image } from '../test/harness/images.js';
import { createTestCA, type IssuedCert, type TestCA } from '../test/harness/pki.js';
import { run } from '../test/harness/proc.js';
import { startRegcache } from '../test/harness/regcache.js';
import { startRegistry, type Registry } from '../test/harness/registry.js';
import { skopeoCopyToDir } from '../test/harness/skopeo.js';
import { checkPulledImage, describeMachine, envInt, median, runBench, treePeakMb, writeDocsSection } from './measure.js';
import { createSlowLink } from './peers/netem.js';
import { startPullThrough } from './peers/pull-through.js';
import { squidVersion, startSquid } from './peers/squid.js';

const HOST = 'registry.bench';
const SMALL = 'bench/small:v1';
const BIG = 'bench/big:v1';
const TARGETS = { warmRatio: 1.05, coldRatio: 1.1, warmVsPullThrough: 0.95, fetchesPerBlob: 1, concurrentRssMb: 200 };
const NETEM = { rateMbit: 200, delayMs: 30 };
const PULL_TIMEOUT_MS = 1_800_000; // 1 GB, or twenty clients at once, on a busy two-core machine: slow, but never forever
const PEERS = ['regcache', 'squid', 'pull-through'] as const;
/** A peer, or another regcache build beside this one (BENCH_PEER_COMPARE). */
type Peer = (typeof PEERS)[number] | `regcache@${string}`;
type Mode = 'direct' | `${Peer} ${'cold' | 'warm'}`;
/** A mode's list in a record of the rounds' modes (every mode of the rounds has one). */
const of = <T>(rec: Partial<Record<Mode, T[]>>, mode: Mode): T[] => rec[mode] ?? [];
const modesOf = (peers: readonly Peer[]): Mode[] => ['direct', ...peers.flatMap((p) => [`${p} cold`, `${p} warm`] as const)];

interface Options {
  smallMb: number;
  bigMb: number;
  runs: number;
  bigRuns: number;
  clients: number;
  netem: boolean;
  netemRuns: number;
  warmup: number; // rounds run first and not counted
  compare: { label: string; cli: string }[];
}

function parseOptions(): Options {
  const { values } = parseArgs({ options: { netem: { type: 'boolean' } } });
  return {
    smallMb: envInt('BENCH_PEER_SMALL_MB', 150),
    bigMb: envInt('BENCH_PEER_BIG_MB', 1024),
    runs: envInt('BENCH_PEER_RUNS', 5),
    bigRuns: envInt('BENCH_PEER_BIG_RUNS', 3),
    clients: envInt('BENCH_PEER_CLIENTS', 20),
    netem: values.netem === true || ['1', 'true', 'yes'].includes(process.env.BENCH_NETEM ?? ''),
    netemRuns: envInt('BENCH_PEER_NETEM_RUNS', 5),
    warmup: envInt('BENCH_PEER_WARMUP', 1),
    compare: (process.env.BENCH_PEER_COMPARE ?? '')
      .split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '')
      .map((x) => {
        const m = /^([\w.-]+)=(.+)$/.exec(x);
        if (m === null) throw new Error(`BENCH_PEER_COMPARE: expected <label>=<path to dist/cli.js>, got ${JSON.stringify(x)}`);
        return { label: m[1]!, cli: path.resolve(m[2]!) };
      }),
  };
}

/** The peers of the rounds: regcache, the other builds to compare it with, squid and pull-through. */
const roundPeers = (o: Options): Peer[] => ['regcache', ...o.compare.map((c) => `regcache@${c.label}` as const), 'squid', 'pull-through'];

/** What every phase shares: the test CA, each client's trusted CA, each proxy's CA, the images. */
interface Bench {
  root: string;
  opts: Options;
  testCa: TestCA;
  directCertDir: string; // only the test CA: direct pulls and the pull-through mirror
  regcacheCaDir: string; // created by the first regcache, reused by every later one
  regcacheCertDir: string;
  squidCa: { certFile: string; keyFile: string };
  squidCertDir: string;
  mirrorTls: IssuedCert; // the pull-through registry's own certificate (127.0.0.1)
  small: Image;
  big: Image;
}

/** The registry everything pulls from, and where clients reach it (its own address, or a relay's). */
interface Upstream {
  registry: Registry;
  address: string;
  port: number;
}

/** How skopeo pulls one image: reference, environment (HTTPS_PROXY) and the CA it trusts. */
interface Source {
  what: string;
  ref: string;
  env: Record<string, string>;
  certDir: string;
}

/** One running cache in front of the upstream. */
interface Running {
  peer: Peer;
  source(repoTag: string): Source;
  /** Resolves once these blobs are stored (regcache commits after serving; the mirror stores in the background). */
  settle(blobs: BlobFile[]): Promise<void>;
  peakRss(): Promise<{ main: number; withChildren: number; processes: number }>;
  stop(): Promise<void>;
}

// Every proxy still running, so that a failure half-way stops them (a live child keeps node running).
const running = new Set<Running>();

async function certDirWith(dir: string, caFile: string): Promise<string> {
  // Only ca.crt: skopeo would take any *.key in a cert dir for a client key.
  await mkdir(dir, { recursive: true });
  await copyFile(caFile, path.join(dir, 'ca.crt'));
  return dir;
}

async function startPeer(b: Bench, peer: Peer, up: Upstream, dir: string): Promise<Running> {
  await mkdir(dir, { recursive: true });
  let r: Running;
  if (peer === 'regcache' || peer.startsWith('regcache@')) {
    const rc = await startRegcache({
      dir,
      cli: b.opts.compare.find((c) => peer === `regcache@${c.label}`)?.cli,
      caDir: b.regcacheCaDir,
      cacheDir: path.join(dir, 'cache'),
      env: {
        ADDITIONAL_REGISTRIES: HOST,
        UPSTREAM_CA_FILE: b.testCa.certFile,
        CONNECT_TO: `${HOST}:443:${up.address}:${up.port}`,
        LOG_LEVEL: 'info', // what operators run; the request and fill lines are info
      },
    });
    await certDirWith(b.regcacheCertDir, rc.caFile);
    r = {
      peer,
      source: (repoTag) => ({ what: peer, ref: `${HOST}/${repoTag}`, env: { HTTPS_PROXY: rc.proxyUrl }, certDir: b.regcacheCertDir }),
      async settle(blobs) {
        for (const blob of blobs) {
          await rc.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, `regcache to commit ${blob.digest}`, 300_000);
        }
      },
      peakRss: () => peak(rc.daemon.pid, peer),
      stop: () => rc.stop(),
    };
  } else if (peer === 'squid') {
    const squid = await startSquid({
      dir,
      bumpCa: b.squidCa,
      upstreamCaFile: b.testCa.certFile,
      hosts: { [HOST]: up.address },
      cacheMb: Math.ceil((b.opts.smallMb + b.opts.bigMb) * 1.5) + 256,
    });
    r = {
      peer,
      // squid dials the port it is given (its hosts file only names the address): the upstream's own.
      source: (repoTag) => ({ what: 'squid', ref: `${HOST}:${up.port}/${repoTag}`, env: { HTTPS_PROXY: squid.proxyUrl }, certDir: b.squidCertDir }),
      settle: async () => undefined, // a response is in the cache once squid has relayed it
      peakRss: () => peak(squid.daemon.pid, 'squid'),
      stop: () => squid.stop(),
    };
  } else {
    const mirror = await startPullThrough({ dir, remoteUrl: `https://${up.address}:${up.port}`, caFile: b.testCa.certFile, tls: b.mirrorTls });
    r = {
      peer,
      source: (repoTag) => ({ what: 'pull-through', ref: mirror.ref(repoTag), env: {}, certDir: b.directCertDir }),
      settle: (blobs) => mirror.waitStored(blobs, 300_000),
      peakRss: () => peak(mirror.registry.pid, 'pull-through registry'),
      stop: () => mirror.stop(),
    };
  }
  const stop = r.stop;
  r.stop = async () => {
    running.delete(r);
    await stop();
  };
  running.add(r);
  return r;
}

async function peak(pid: number, what: string): Promise<{ main: number; withChildren: number; processes: number }> {
  const mem = await treePeakMb(pid);
  if (mem === null) throw new Error(`${what} (pid ${pid}) exited during the bench`);
  return mem;
}

function directSource(b: Bench, up: Upstream, repoTag: string): Source {
  return { what: 'direct', ref: `${up.address}:${up.port}/${repoTag}`, env: {}, certDir: b.directCertDir };
}

/** What went wrong, on one line and short enough for a table's footnote (skopeo's stderr can be long). */
function failureOf(err: unknown): string {
  const text = (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim();
  return text.length > 400 ? `${text.slice(0, 400)}...` : text;
}

/** One `skopeo copy` to out (which must not exist), timed; throws when skopeo fails. */
async function pull(src: Source, out: string, scratch: string): Promise<number> {
  const started = performance.now();
  const res = await skopeoCopyToDir(src.ref, out, { dir: scratch, env: src.env, certDir: src.certDir, timeoutMs: PULL_TIMEOUT_MS });
  const seconds = (performance.now() - started) / 1000;
  if (res.code !== 0) throw new Error(`${src.what} pull of ${src.ref} failed (skopeo exit ${res.code}): ${res.stderr.trim()}`);
  return seconds;
}

/** Every byte of a pulled image against what was pushed, then the copy is removed. */
async function verify(out: string, image: Image, what: string): Promise<void> {
  const bad = await checkPulledImage(out, image);
  if (bad !== null) throw new Error(`${what} pull: ${bad}`);
  await rm(out, { recursive: true, force: true });
}

/** A timed pull into a fresh dir, after a sync so that earlier runs' dirty pages are not written during it. */
async function timedPull(b: Bench, src: Source, image: Image): Promise<number> {
  const out = path.join(b.root, 'pulled');
  await rm(out, { recursive: true, force: true });
  await run('sync', []);
  const seconds = await pull(src, out, path.join(b.root, 'skopeo'));
  await verify(out, image, src.what);
  return seconds;
}

const blobsOf = (image: Image): BlobFile[] => [image.config, ...image.layers];

const logMark = async (up: Upstream): Promise<number> => (await up.registry.requests()).length;

/** GETs of each blob of image (config first) the upstream answered below 400 since log entry `since`. */
async function upstreamGets(up: Upstream, since: number, image: Image): Promise<number[]> {
  const entries = (await up.registry.requests()).slice(since).filter((e) => e.method === 'GET' && e.status < 400);
  return blobsOf(image).map((blob) => entries.filter((e) => e.path.endsWith(`/blobs/${blob.digest}`)).length);
}

interface Rounds {
  image: string;
  runs: number;
  seconds: Partial<Record<Mode, number[]>>; // the runs that succeeded
  upstreamGets: Partial<Record<Mode, number[][]>>; // per succeeded run, per blob
  failures: Partial<Record<Mode, string[]>>; // one per failed run: what went wrong
}

/**
 * runs rounds of direct and each proxy, in an order that rotates every round (none always follows the
 * same one). Each round gets a new proxy with an empty cache: its first pull is the cold one, its second
 * the warm one (after what the first fetched is stored); then it is stopped and its cache removed.
 */
async function measureRounds(b: Bench, up: Upstream, image: Image, repoTag: string, runs: number, label: string): Promise<Rounds> {
  const modes = modesOf(roundPeers(b.opts));
  const seconds = Object.fromEntries(modes.map((m) => [m, [] as number[]])) as Partial<Record<Mode, number[]>>;
  const gets = Object.fromEntries(modes.map((m) => [m, [] as number[][]])) as Partial<Record<Mode, number[][]>>;
  const failures = Object.fromEntries(modes.map((m) => [m, [] as string[]])) as Partial<Record<Mode, string[]>>;
  let counted = false; // a warm-up round's results are not kept
  const fail = (mode: Mode, what: string): void => {
    if (counted) of(failures, mode).push(what);
    process.stderr.write(`${label}: ${mode} failed${counted ? '' : ' (warm-up)'}: ${what}\n`);
  };
  // Starting a proxy does not reach the upstream: whatever it logs after a mark is the next pull's.
  const measure = async (mode: Mode, src: Source): Promise<string> => {
    const since = await logMark(up);
    try {
      const s = await timedPull(b, src, image);
      const upstream = await upstreamGets(up, since, image);
      if (counted) {
        of(seconds, mode).push(s);
        of(gets, mode).push(upstream);
      }
      return `${s.toFixed(2)} s`;
    } catch (err) {
      fail(mode, failureOf(err));
      return 'FAILED';
    }
  };
  const paths = ['direct', ...roundPeers(b.opts)] as const;
  for (let i = -b.opts.warmup; i < runs; i++) {
    counted = i >= 0;
    const order = paths.map((_, k) => paths[(((i + k) % paths.length) + paths.length) % paths.length]!);
    const done: string[] = [];
    for (const p of order) {
      if (p === 'direct') {
        done.push(`direct ${await measure('direct', directSource(b, up, repoTag))}`);
        continue;
      }
      const [cold, warm] = [`${p} cold`, `${p} warm`] as const;
      const dir = path.join(b.root, `${label}-${p}`);
      const r = await startPeer(b, p, up, dir).catch((err: unknown) => {
        fail(cold, `did not start: ${failureOf(err)}`);
        fail(warm, 'not run: the proxy did not start');
        return null;
      });
      if (r === null) {
        done.push(`${p} did not start`);
        await rm(dir, { recursive: true, force: true });
        continue;
      }
      try {
        const coldResult = await measure(cold, r.source(repoTag));
        if (coldResult === 'FAILED') {
          fail(warm, 'not run: the cold pull failed');
          done.push(`${cold} FAILED`);
          continue;
        }
        const stored = await r.settle(blobsOf(image)).then(
          () => true,
          (err: unknown) => (fail(warm, `not run: the cold pull's blobs were not stored: ${failureOf(err)}`), false),
        );
        done.push(`${cold} ${coldResult}`, `${warm} ${stored ? await measure(warm, r.source(repoTag)) : 'not run'}`);
      } finally {
        // A proxy that died mid-round fails to stop cleanly: that is its warm result too.
        await r.stop().catch((err: unknown) => fail(warm, `stopping: ${failureOf(err)}`));
        await rm(dir, { recursive: true, force: true });
      }
    }
    process.stderr.write(`${label} ${counted ? `round ${i + 1}/${runs}` : 'warm-up round (not counted)'}: ${done.join(', ')}\n`);
  }
  return { image: repoTag, runs, seconds, upstreamGets: gets, failures };
}

interface Concurrent {
  peer: Peer;
  clients: number;
  wallSeconds: number | null; // null: the proxy did not start
  upstreamGets: number[]; // per blob, config first
  peakRssMb: { main: number; withChildren: number; processes: number } | null; // null: the process was gone
  failedClients: number; // pulls that failed or pulled wrong bytes
  failures: string[];
}

/** clients concurrent cold pulls of image through a fresh proxy; every copy is checked once all are done. */
async function measureConcurrent(b: Bench, up: Upstream, peer: Peer, image: Image, repoTag: string): Promise<Concurrent> {
  const dir = path.join(b.root, `concurrent-${peer}`);
  const outs = Array.from({ length: b.opts.clients }, (_, i) => path.join(dir, `pulled-${i}`));
  const result: Concurrent = { peer, clients: outs.length, wallSeconds: null, upstreamGets: [], peakRssMb: null, failedClients: 0, failures: [] };
  const fail = (what: string): void => {
    result.failures.push(what);
    process.stderr.write(`${peer} concurrent: ${what}\n`);
  };
  const r = await startPeer(b, peer, up, path.join(dir, 'proxy')).catch((err: unknown) => (fail(`did not start: ${failureOf(err)}`), null));
  if (r === null) {
    result.failedClients = outs.length;
    await rm(dir, { recursive: true, force: true });
    return result;
  }
  const pulled: boolean[] = [];
  try {
    const since = await logMark(up);
    await run('sync', []);
    const started = performance.now();
    const pulls = await Promise.allSettled(outs.map((out, i) => pull(r.source(repoTag), out, path.join(dir, `skopeo-${i}`))));
    result.wallSeconds = (performance.now() - started) / 1000;
    pulls.forEach((p, i) => {
      pulled.push(p.status === 'fulfilled');
      if (p.status === 'rejected') fail(`client ${i}: ${failureOf(p.reason)}`);
    });
    // What a peer stores after a failed client may never complete: wait, but record rather than throw.
    await r.settle(blobsOf(image)).catch((err: unknown) => fail(`not all blobs stored: ${failureOf(err)}`));
    result.upstreamGets = await upstreamGets(up, since, image);
    result.peakRssMb = await r.peakRss().catch((err: unknown) => (fail(failureOf(err)), null));
  } finally {
    await r.stop().catch((err: unknown) => fail(`stopping: ${failureOf(err)}`));
  }
  // Two at a time: hashing is CPU-bound and there are two cores.
  const check = async (i: number): Promise<boolean> => {
    if (pulled[i] !== true) return false;
    return verify(outs[i]!, image, `${peer} concurrent client ${i}`).then(
      () => true,
      (err: unknown) => (fail(failureOf(err)), false),
    );
  };
  for (let i = 0; i < outs.length; i += 2) {
    const ok = await Promise.all([i, i + 1].filter((k) => k < outs.length).map(check));
    result.failedClients += ok.filter((x) => !x).length;
  }
  await rm(dir, { recursive: true, force: true });
  return result;
}

interface BlobReaders {
  clients: number;
  blobBytes: number;
  wallSeconds: number;
  upstreamGets: number;
  peakRssMb: number | null; // null: regcache was gone
  failedClients: number;
  failures: string[];
}

/**
 * clients concurrent GETs of image's first layer through a fresh regcache (cold: one fill, every client
 * reading it as it arrives), each streamed into a hash here and checked against the digest and size.
 */
async function measureBlobReaders(b: Bench, up: Upstream, image: Image, repoTag: string): Promise<BlobReaders> {
  const blob = image.layers[0]!;
  const dir = path.join(b.root, 'blob-readers');
  const r = await startPeer(b, 'regcache', up, dir);
  const src = r.source(repoTag);
  const agent = new ProxyAgent({ uri: src.env.HTTPS_PROXY!, requestTls: { ca: await readFile(path.join(src.certDir, 'ca.crt'), 'utf8') } });
  const url = `https://${HOST}/v2/${repoTag.split(':')[0]}/blobs/${blob.digest}`;
  const read = async (i: number): Promise<void> => {
    const res = await request(url, { dispatcher: agent, bodyTimeout: PULL_TIMEOUT_MS, headersTimeout: PULL_TIMEOUT_MS });
    const hash = createHash('sha256');
    let bytes = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
    }
    const digest = `sha256:${hash.digest('hex')}`;
    if (res.statusCode !== 200 || digest !== blob.digest || bytes !== blob.size) {
      throw new Error(`blob reader ${i}: HTTP ${res.statusCode}, ${bytes} bytes hashing to ${digest}; expected ${blob.size} bytes of ${blob.digest}`);
    }
  };
  try {
    const since = await logMark(up);
    const started = performance.now();
    const reads = await Promise.allSettled(Array.from({ length: b.opts.clients }, (_, i) => read(i)));
    const wallSeconds = (performance.now() - started) / 1000;
    const failures = reads.flatMap((p) => (p.status === 'rejected' ? [failureOf(p.reason)] : []));
    await r.settle([blob]).catch((err: unknown) => failures.push(`not stored: ${failureOf(err)}`));
    const entries = (await up.registry.requests()).slice(since);
    const upstreamGets = entries.filter((e) => e.method === 'GET' && e.status < 400 && e.path.endsWith(`/blobs/${blob.digest}`)).length;
    const rss = await r.peakRss().catch((err: unknown) => (failures.push(failureOf(err)), null));
    for (const f of failures) process.stderr.write(`blob readers: ${f}\n`);
    const failedClients = reads.filter((p) => p.status === 'rejected').length;
    return { clients: b.opts.clients, blobBytes: blob.size, wallSeconds, upstreamGets, peakRssMb: rss?.main ?? null, failedClients, failures };
  } finally {
    await agent.close();
    await r.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Does squid store a blob fetched with credentials? Two GETs of the config blob with a (meaningless, the
 * upstream is anonymous) Bearer token, then two without, through a throwaway squid: its log codes.
 */
async function probeSquidAuth(b: Bench, up: Upstream): Promise<{ withToken: string[]; anonymous: string[] }> {
  const dir = path.join(b.root, 'squid-auth-probe');
  const squid = await startSquid({ dir, bumpCa: b.squidCa, upstreamCaFile: b.testCa.certFile, hosts: { [HOST]: up.address }, cacheMb: 64 });
  const agent = new ProxyAgent({ uri: squid.proxyUrl, requestTls: { ca: await readFile(b.squidCa.certFile, 'utf8') } });
  const url = `https://${HOST}:${up.port}/v2/${SMALL.split(':')[0]}/blobs/${b.small.config.digest}`;
  try {
    for (const headers of [{ authorization: 'Bearer bench' }, { authorization: 'Bearer bench' }, {}, {}]) {
      const res = await request(url, { dispatcher: agent, headers });
      await res.body.arrayBuffer();
      if (res.statusCode !== 200) throw new Error(`squid auth probe: GET ${url} answered ${res.statusCode}`);
    }
    const codes = (await squid.requests()).filter((l) => l.method === 'GET' && l.url === url).map((l) => l.code);
    return { withToken: codes.slice(0, 2), anonymous: codes.slice(2, 4) };
  } finally {
    await agent.close();
    await squid.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

async function setUp(root: string, opts: Options): Promise<{ b: Bench; up: Upstream }> {
  const caDir = path.join(root, 'test-ca');
  await mkdir(caDir);
  const testCa = await createTestCA(caDir, 'regcache peer bench CA');
  // By name for the forward proxies, by IP for direct pulls and the mirror's remoteurl.
  const tls = await testCa.issue([HOST, '127.0.0.1'], caDir, 'registry');
  const mirrorTls = await testCa.issue(['127.0.0.1'], caDir, 'mirror');
  const squidCaDir = path.join(root, 'squid-ca');
  await mkdir(squidCaDir);
  const squidCa = await createTestCA(squidCaDir, 'squid bump CA (peer bench)');

  // Incompressible layers stored uncompressed in gzip framing (compressing would only cost time).
  const mb = 1_000_000;
  const smallSizes = [0.4, 0.3, 0.2, 0.1].map((f) => Math.round(opts.smallMb * mb * f));
  const small = await makeImage(path.join(root, 'image-small'), {
    layers: smallSizes.map((size, i) => ({ size, seed: `peer-small-${opts.smallMb}-${i}` })),
    gzipLevel: 0,
  });
  const big = await makeImage(path.join(root, 'image-big'), { layers: [{ size: opts.bigMb * mb, seed: `peer-big-${opts.bigMb}` }], gzipLevel: 0 });

  const registry = await startRegistry({ dir: path.join(root, 'registry'), tls, caFile: testCa.certFile });
  for (const [repoTag, image] of [
    [SMALL, small],
    [BIG, big],
  ] as const) {
    const [repo, tag] = repoTag.split(':') as [string, string];
    await pushImage(registry.url, repo, tag, image, { caFile: testCa.certFile });
  }
  const b: Bench = {
    root,
    opts,
    testCa,
    directCertDir: await certDirWith(path.join(root, 'certs-direct'), testCa.certFile),
    regcacheCaDir: path.join(root, 'regcache-ca'),
    regcacheCertDir: path.join(root, 'certs-regcache'),
    squidCa,
    squidCertDir: await certDirWith(path.join(root, 'certs-squid'), squidCa.certFile),
    mirrorTls,
    small,
    big,
  };
  return { b, up: { registry, address: '127.0.0.1', port: registry.port } };
}

/** The small image again, from an upstream in a network namespace behind a netem link. */
async function measureSlowUpstream(b: Bench): Promise<{ shaping: string; rounds: Rounds }> {
  const link = await createSlowLink(NETEM);
  try {
    const dir = path.join(b.root, 'registry-netem');
    await mkdir(dir);
    // Clients reach it at its own address, or at a delay relay's on loopback.
    const tls = await b.testCa.issue([HOST, link.nsIp, '127.0.0.1'], dir, 'registry');
    const registry = await startRegistry({ dir, tls, caFile: b.testCa.certFile, host: link.nsIp, prefix: link.prefix });
    try {
      const [repo, tag] = SMALL.split(':') as [string, string];
      await pushImage(registry.url, repo, tag, b.small, { caFile: b.testCa.certFile }); // uploads are neither shaped nor delayed
      const reach = await link.expose(registry.port);
      const rounds = await measureRounds(b, { registry, ...reach }, b.small, SMALL, b.opts.netemRuns, 'netem');
      return { shaping: link.shaping, rounds };
    } finally {
      await registry.stop();
    }
  } finally {
    await link.remove();
  }
}

interface Result {
  images: Record<'small' | 'big', { bytes: number; layers: number[] }>;
  options: Options;
  loopback: { small: Rounds; big: Rounds };
  concurrent: Concurrent[];
  blobReaders: BlobReaders;
  slowUpstream: { shaping: string; rounds: Rounds } | null;
  squidAuthProbe: { withToken: string[]; anonymous: string[] };
  phaseSeconds: Record<string, number>;
}

async function bench(root: string, opts: Options): Promise<Result> {
  // How long each phase took, for sizing the run counts against the time `npm run bench` may take.
  const phaseSeconds: Record<string, number> = {};
  const phase = async <T>(name: string, body: () => Promise<T>): Promise<T> => {
    process.stderr.write(`${name}...\n`);
    const started = performance.now();
    const result = await body();
    phaseSeconds[name] = Math.round((performance.now() - started) / 100) / 10;
    return result;
  };
  const { b, up } = await phase(`set-up: registry, ${opts.smallMb} MB and ${opts.bigMb} MB images, push`, () => setUp(root, opts));
  try {
    const squidAuthProbe = await phase('squid auth probe', () => probeSquidAuth(b, up));
    const small = await phase('small image rounds', () => measureRounds(b, up, b.small, SMALL, opts.runs, 'small'));
    const big = await phase('big image rounds', () => measureRounds(b, up, b.big, BIG, opts.bigRuns, 'big'));
    const concurrent: Concurrent[] = [];
    for (const peer of PEERS) {
      concurrent.push(
        await phase(`${opts.clients} concurrent cold pulls of the small image through ${peer}`, () => measureConcurrent(b, up, peer, b.small, SMALL)),
      );
    }
    const blobReaders = await phase(`${opts.clients} concurrent cold GETs of the big blob through regcache`, () => measureBlobReaders(b, up, b.big, BIG));
    const slowUpstream = opts.netem ? await phase('slow upstream rounds', () => measureSlowUpstream(b)) : null;
    const bytes = (image: Image): number => blobsOf(image).reduce((sum, x) => sum + x.size, 0);
    return {
      images: {
        small: { bytes: bytes(b.small), layers: b.small.layers.map((l) => l.size) },
        big: { bytes: bytes(b.big), layers: b.big.layers.map((l) => l.size) },
      },
      options: opts,
      loopback: { small, big },
      concurrent,
      blobReaders,
      slowUpstream,
      squidAuthProbe,
      phaseSeconds,
    };
  } finally {
    for (const r of [...running]) await r.stop();
    await up.registry.stop();
  }
}

// ---- report ----

type Verdict = 'PASS' | 'FAIL';
const verdict = (ok: boolean): Verdict => (ok ? 'PASS' : 'FAIL');

/** "1" when every run fetched every blob once, else the range over runs and blobs. */
function getsLabel(runs: number[][]): string {
  const all = runs.flat();
  if (all.length === 0) return '-';
  const [lo, hi] = [Math.min(...all), Math.max(...all)];
  return lo === hi ? String(lo) : `${lo}-${hi}`;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)];
}

/** Median of the runs that succeeded; NaN when none did. */
const medianOf = (xs: number[]): number => (xs.length === 0 ? NaN : median(xs));
const fixed = (x: number, digits: number, suffix = ''): string => (Number.isFinite(x) ? `${x.toFixed(digits)}${suffix}` : '-');

function roundsTable(r: Rounds, bytes: number): string[] {
  const direct = medianOf(of(r.seconds, 'direct'));
  return [
    ...table(
      ['path', 'median s', 'min s', 'max s', 'MB/s', 'vs direct', 'upstream GETs/blob', 'failed'],
      (Object.keys(r.seconds) as Mode[]).map((mode) => {
        const s = of(r.seconds, mode);
        const m = medianOf(s);
        return [
          mode,
          fixed(m, 3),
          fixed(Math.min(...s), 3),
          fixed(Math.max(...s), 3),
          fixed(bytes / 1e6 / m, 1),
          fixed(m / direct, 2, 'x'),
          getsLabel(of(r.upstreamGets, mode)),
          `${of(r.failures, mode).length}/${r.runs}`,
        ];
      }),
    ),
    ...failureLines((Object.keys(r.failures) as Mode[]).flatMap((mode) => of(r.failures, mode).map((f) => `${mode}: ${f}`))),
  ];
}

/** Each distinct failure once, with how often it happened; times and counts only cover what succeeded. */
function failureLines(failures: string[]): string[] {
  const counts = new Map<string, number>();
  for (const f of failures) counts.set(f, (counts.get(f) ?? 0) + 1);
  return [...counts].map(([f, n]) => `  failed${n > 1 ? ` (${n}x)` : ''}: ${f}`);
}

interface Target {
  what: string;
  value: string;
  result: Verdict;
}

function targets(r: Result): Target[] {
  const out: Target[] = [];
  for (const size of ['small', 'big'] as const) {
    const rounds = r.loopback[size];
    const mb = `${size} ${(r.images[size].bytes / 1e6).toFixed(0)} MB`;
    const med = (m: Mode): number => medianOf(of(rounds.seconds, m));
    const warm = med('regcache warm') / med('direct');
    const cold = med('regcache cold') / med('direct');
    out.push(
      { what: `warm <= ${TARGETS.warmRatio.toFixed(2)}x direct (${mb})`, value: fixed(warm, 2, 'x'), result: verdict(warm <= TARGETS.warmRatio) },
      {
        // A squid that failed every run leaves nothing to compare with: FAIL, not a vacuous PASS.
        what: `warm below squid warm (${mb})`,
        value: `${fixed(med('regcache warm'), 3, ' s')} vs ${fixed(med('squid warm'), 3, ' s')}`,
        result: verdict(med('regcache warm') < med('squid warm')),
      },
      { what: `cold <= ${TARGETS.coldRatio.toFixed(2)}x direct (${mb})`, value: fixed(cold, 2, 'x'), result: verdict(cold <= TARGETS.coldRatio) },
      {
        // Issue 24: ahead of distribution's pull-through on warm pulls, of every peer on cold ones.
        what: `warm <= ${TARGETS.warmVsPullThrough.toFixed(2)}x pull-through warm (${mb})`,
        value: fixed(med('regcache warm') / med('pull-through warm'), 3, 'x'),
        result: verdict(med('regcache warm') <= TARGETS.warmVsPullThrough * med('pull-through warm')),
      },
      {
        what: `cold <= the best peer's cold (${mb})`,
        value: `${fixed(med('regcache cold'), 3, ' s')} vs ${fixed(Math.min(med('squid cold'), med('pull-through cold')), 3, ' s')}`,
        result: verdict(med('regcache cold') <= Math.min(med('squid cold'), med('pull-through cold'))),
      },
    );
  }
  const rc = r.concurrent.find((c) => c.peer === 'regcache')!;
  const readers = r.blobReaders;
  out.push(
    {
      what: `one upstream fetch per blob, ${rc.clients} concurrent cold pulls`,
      value: `GETs per blob: ${rc.upstreamGets.join(', ') || '-'}`,
      result: verdict(rc.failedClients === 0 && rc.upstreamGets.length > 0 && rc.upstreamGets.every((n) => n === TARGETS.fetchesPerBlob)),
    },
    {
      what: `one upstream fetch, ${readers.clients} concurrent cold GETs of the ${(readers.blobBytes / 1e6).toFixed(0)} MB blob`,
      value: `GETs: ${readers.upstreamGets}`,
      result: verdict(readers.failedClients === 0 && readers.upstreamGets === TARGETS.fetchesPerBlob),
    },
    {
      what: `peak RSS <= ${TARGETS.concurrentRssMb} MB, ${readers.clients} clients on the ${(readers.blobBytes / 1e6).toFixed(0)} MB blob`,
      value: readers.peakRssMb === null ? 'regcache was gone' : `${readers.peakRssMb.toFixed(1)} MB`,
      result: verdict(readers.peakRssMb !== null && readers.peakRssMb <= TARGETS.concurrentRssMb),
    },
  );
  return out;
}

/** This tree's medians over each other build's (BENCH_PEER_COMPARE), same rounds: below 1 is faster. */
function comparedBuilds(r: Result): string[] {
  if (r.options.compare.length === 0) return [];
  const lines = ['', 'this build over the compared builds (median seconds, same rounds; below 1.00x is faster):'];
  for (const c of r.options.compare) {
    for (const size of ['small', 'big'] as const) {
      const s = r.loopback[size].seconds;
      const ratio = (m: 'cold' | 'warm'): string => fixed(medianOf(of(s, `regcache ${m}`)) / medianOf(of(s, `regcache@${c.label} ${m}`)), 3, 'x');
      lines.push(`  ${size} image, regcache / regcache@${c.label}: cold ${ratio('cold')}, warm ${ratio('warm')}`);
    }
  }
  return lines;
}

function report(r: Result, env: Record<string, string>): string {
  const o = r.options;
  const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(1)} MB`;
  const lines = [
    '',
    `regcache peer bench: direct vs regcache vs squid (ssl-bump, ufs cache) vs docker-registry pull-through, skopeo copy to dir:`,
    `  ${env.machine}; node ${env.node}, ${env.skopeo}, ${env.squid}, ${env.registry}, regcache ${env.git}`,
    `  small image ${mb(r.images.small.bytes)} (${r.images.small.layers.length} layers + config), ${o.runs} runs; big image ${mb(r.images.big.bytes)} (1 layer + config), ${o.bigRuns} runs`,
    `  runs interleaved in a rotating order, after ${o.warmup} warm-up round(s) not counted; cold = a fresh proxy with an empty cache each run, warm = its second pull;`,
    '  upstream GETs from its access log',
    '',
    `small image, upstream on loopback:`,
    ...roundsTable(r.loopback.small, r.images.small.bytes),
    '',
    `big image, upstream on loopback:`,
    ...roundsTable(r.loopback.big, r.images.big.bytes),
    '',
    `${o.clients} concurrent cold pulls of the small image (fresh proxy each):`,
  ];
  const oneCold = (peer: Peer): number => medianOf(of(r.loopback.small.seconds, `${peer} cold`));
  const rss = (c: Concurrent): string => {
    if (c.peakRssMb === null) return '-';
    return c.peer === 'squid' ? `${c.peakRssMb.main.toFixed(1)} (+helpers ${c.peakRssMb.withChildren.toFixed(1)})` : c.peakRssMb.main.toFixed(1);
  };
  const readers = r.blobReaders;
  lines.push(
    ...table(
      ['proxy', 'wall s', 'vs one cold pull', 'upstream GETs per blob', 'peak RSS MB', 'failed clients'],
      r.concurrent.map((c) => [
        c.peer,
        fixed(c.wallSeconds ?? NaN, 2),
        fixed((c.wallSeconds ?? NaN) / oneCold(c.peer), 1, 'x'),
        c.upstreamGets.join(', ') || '-',
        rss(c),
        `${c.failedClients}/${c.clients}`,
      ]),
    ),
    ...failureLines(r.concurrent.flatMap((c) => c.failures.map((f) => `${c.peer}: ${f}`))),
    `  peak RSS is VmHWM of the proxy process; for squid of its one worker (-N: no kids), "+helpers" adds the`,
    `  peaks of its ${(r.concurrent.find((c) => c.peer === 'squid')?.peakRssMb?.processes ?? 1) - 1} helper processes (certificate generator, unlinkd): an upper bound.`,
    '',
    `${readers.clients} concurrent cold GETs of the ${mb(readers.blobBytes)} blob through a fresh regcache, clients in the bench process`,
    `  hashing what they get (no disk): ${readers.wallSeconds.toFixed(2)} s, ${readers.upstreamGets} upstream GET, regcache peak RSS ${fixed(readers.peakRssMb ?? NaN, 1, ' MB')}, ${readers.failedClients}/${readers.clients} clients failed`,
    ...failureLines(readers.failures),
  );
  if (r.slowUpstream !== null) {
    lines.push(
      '',
      `small image, upstream behind ${r.slowUpstream.shaping} (network namespace, its egress):`,
      ...roundsTable(r.slowUpstream.rounds, r.images.small.bytes),
    );
  }
  const p = r.squidAuthProbe;
  lines.push(
    '',
    'squid and registry blobs: blob URLs get refresh_pattern override-expire ignore-no-store ignore-private (cached a year',
    '  whatever the headers; this docker-registry also sends max-age=31536000), collapsed_forwarding on. Probe, one',
    `  blob GET twice with "Authorization: Bearer", then twice without: ${p.withToken.join(', ')} / ${p.anonymous.join(', ')}. squid 5`,
    '  never stores a response to a request with credentials (unless it says public/s-maxage/must-revalidate; no',
    '  option overrides that): behind token auth (Docker Hub, ghcr.io) it caches no blobs. This upstream is anonymous.',
    '',
    'targets (regcache):',
    ...table(
      ['target', 'measured', 'result'],
      targets(r).map((t) => [t.what, t.value, t.result]),
    ).map((l) => `  ${l}`),
    ...comparedBuilds(r),
    '',
    `phases: ${Object.entries(r.phaseSeconds)
      .map(([name, sec]) => `${name.replace(/:.*/, '')} ${sec.toFixed(0)} s`)
      .join(', ')}`,
    '',
  );
  return lines.join('\n');
}

async function versionOf(command: string, args: string[]): Promise<string> {
  const res = await run(command, args).catch(() => null);
  return res?.code === 0 ? (res.stdout || res.stderr).split('\n')[0]!.trim() : `${command} ?`;
}

async function describeEnvironment(): Promise<Record<string, string>> {
  const m = describeMachine();
  const rev = (await run('git', ['rev-parse', '--short', 'HEAD'])).stdout.trim() || '?';
  const dirty = (await run('git', ['status', '--porcelain', '--untracked-files=no'])).stdout.trim() !== '';
  return {
    machine: `${m.cpus} CPUs (${m.cpuModel}), ${m.ramGb} GiB RAM, ${m.kernel}`,
    node: process.version,
    skopeo: await versionOf('skopeo', ['--version']),
    squid: await squidVersion(),
    registry: (await versionOf('docker-registry', ['--version'])).replace(/^docker-registry github.com\/docker\/distribution /, 'docker-registry '),
    git: dirty ? `${rev}+dirty` : rev,
  };
}

function docsSection(text: string, date: string, env: Record<string, string>, o: Options): string {
  const sizes = `BENCH_PEER_SMALL_MB=${o.smallMb} BENCH_PEER_BIG_MB=${o.bigMb} BENCH_PEER_RUNS=${o.runs} BENCH_PEER_BIG_RUNS=${o.bigRuns} BENCH_PEER_CLIENTS=${o.clients} BENCH_PEER_WARMUP=${o.warmup}`;
  return [
    '## Peers: squid and a pull-through registry (bench/peer-bench.ts)',
    '',
    `- Date: ${date}`,
    `- Machine: ${env.machine}`,
    `- Versions: node ${env.node}, ${env.skopeo}, ${env.squid}, ${env.registry}, regcache ${env.git}`,
    '',
    '```text',
    text.trim(),
    '```',
    '',
    `Reproduce (as root: it installs squid-openssl and iproute2 when missing): \`npm run bench\`, or after \`npm run build\`,`,
    `\`${sizes}${o.netem ? ' BENCH_NETEM=1' : ''} node --import tsx bench/peer-bench.ts\`${o.netem ? '' : ' (add `BENCH_NETEM=1` for the slow-upstream table)'}.`,
  ].join('\n');
}

/** Failures that are not a peer's result but regcache's own (or the upstream's, under direct): they fail the bench. */
function ownFailures(r: Result): string[] {
  const rounds = [r.loopback.small, r.loopback.big, ...(r.slowUpstream === null ? [] : [r.slowUpstream.rounds])];
  const own: Mode[] = ['direct', 'regcache cold', 'regcache warm'];
  return [
    ...rounds.flatMap((x) => own.flatMap((m) => of(x.failures, m).map((f) => `${x.image} ${m}: ${f}`))),
    ...r.concurrent.filter((c) => c.peer === 'regcache').flatMap((c) => c.failures.map((f) => `regcache concurrent: ${f}`)),
    ...r.blobReaders.failures.map((f) => `blob readers: ${f}`),
  ];
}

let ownFailed = 0;
process.exitCode = await runBench('peer-bench', 'peer-', async (root) => {
  const opts = parseOptions();
  const env = await describeEnvironment();
  const date = new Date().toISOString();
  const result = await bench(root, opts);
  ownFailed = ownFailures(result).length;
  const text = report(result, env);
  const doc = await writeDocsSection('peer-bench', docsSection(text, date, env, opts));
  return {
    text: `${text}docs: ${path.relative(process.cwd(), doc)} (peer-bench section)\n`,
    json: { environment: env, ...result, targets: TARGETS, verdicts: targets(result) },
  };
});
if (ownFailed > 0) {
  process.stderr.write(`peer-bench: ${ownFailed} direct or regcache run(s) failed (listed in the report)\n`);
  process.exitCode = 1;
}
