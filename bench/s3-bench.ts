// The S3 bench (issue 16's Benchmark): the S3 store (CACHE_STORE=s3://..., a private Ceph RADOS Gateway
// started by the harness) beside the local store (CACHE_DIR), in one run, interleaved rounds:
//   1. one big blob (BENCH_S3_MB, default 256 MB) with curl through a replica's proxy port (CONNECT,
//      intercepted): cold (MISS: fetched upstream, stored), warm (HIT) on the same replica, and with S3 a
//      second replica's warm HIT of what the first stored;
//   2. the same three for a whole small image pulled with skopeo (BENCH_S3_IMAGE_MB, default 50 MB, three
//      layers and a config); for both, a warm pull through a third replica with S3_REDIRECT=true (307s to
//      the gateway, followed by the client);
//   3. a follower: a client on replica B asking for a blob while replica A is filling it (B waits for A's
//      commit, then reads the bucket), beside a second client on the same local replica (which streams the
//      leader's fill): time to last byte against the leader's.
// Each with regcache's CPU per byte and peak RSS, and the CPU of radosgw, ceph-osd, the upstream registry
// and the clients, all sharing the machine's cores. Medians of BENCH_S3_RUNS (default 5) rounds; the S3
// figures as ratios against the local store's in the same round. S3_FILL_LEASE is regcache's default
// unless BENCH_S3_FILL_LEASE is set.
// Exits non-zero only when something broke (wrong bytes, not the HIT/MISS expected, a second upstream
// fetch); then docs/benchmarks.md is left as it was. Results: stdout, bench/results/s3-<time>.json and the
// s3-bench section of docs/benchmarks.md. Run by `npm run bench`, or once built:
// `node --import tsx bench/s3-bench.ts`.
import { copyFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { makeImage, pushImage, type Image } from '../test/harness/images.js';
import { sleep, waitFor } from '../test/harness/proc.js';
import { startRegcache, type Regcache } from '../test/harness/regcache.js';
import { s3ClientConfig, startS3Server, type S3Server } from '../test/harness/s3-server.js';
import { startBlobRegistry, type BlobRegistry } from './blob-registry.js';
import { describeMachine } from './load/machine.js';
import { envInt, runBench, writeDocsSection } from './measure.js';
import { curlThrough, expectServed, seconds, skopeoThrough, waitCommitted, type Transfer } from './s3/clients.js';
import { markdownSection, summarize, textReport, type FollowSample, type PullKey, type S3BenchResult, type Sample, type Samples } from './s3/report.js';
import { cephPids, UsageMeter } from './s3/usage.js';

const HOST = 'registry.bench';
const BLOB_REPO = 'bench/s3-blob';
const IMAGE_REPO = 'bench/s3-image';
const BUCKET = 'regcache-bench';
// The local follower is asked this long after the leader (the S3 follower once A's lock is in the bucket).
const LOCAL_FOLLOW_DELAY_MS = 100;
const COMMANDS = ['npm run bench', 'npm run --silent build && node --import tsx bench/s3-bench.ts'];

export interface Options {
  mb: number;
  imageMb: number;
  runs: number;
  fillLease: string | null; // S3_FILL_LEASE for the replicas; null: regcache's default
}

function parseOptions(): Options {
  const lease = process.env.BENCH_S3_FILL_LEASE?.trim();
  return { mb: envInt('BENCH_S3_MB', 256), imageMb: envInt('BENCH_S3_IMAGE_MB', 50), runs: envInt('BENCH_S3_RUNS', 5), fillLease: lease ? lease : null };
}

const log = (line: string): void => void process.stderr.write(`${line}\n`);

interface Setup {
  root: string;
  upstream: BlobRegistry;
  image: Image;
  s3: S3Server;
  client: S3Client; // the bench's own, to see fill locks appear
  meter: UsageMeter;
  opts: Options;
  certDir: string | null; // regcache's CA for skopeo, once the first replica made it
}

type Store = { kind: 'local' } | { kind: 's3'; prefix: string };

const running = new Set<Regcache>();

async function startReplica(s: Setup, name: string, store: Store, env: Record<string, string> = {}): Promise<Regcache> {
  const s3Env: Record<string, string> =
    store.kind === 's3'
      ? { ...s.s3.env, CACHE_STORE: `s3://${BUCKET}/${store.prefix}`, ...(s.opts.fillLease !== null ? { S3_FILL_LEASE: s.opts.fillLease } : {}), ...env }
      : {};
  const rc = await startRegcache({
    dir: path.join(s.root, 'proxies', name),
    caDir: path.join(s.root, 'regcache-ca'),
    env: { ...s.upstream.regcacheEnv, ...s3Env },
  });
  running.add(rc);
  if (s.certDir === null) {
    const dir = path.join(s.root, 'certs-proxy');
    await mkdir(dir, { recursive: true });
    await copyFile(rc.caFile, path.join(dir, 'ca.crt')); // only the CA: skopeo takes a *.key for a client key
    s.certDir = dir;
  }
  return rc;
}

async function stopReplicas(...rcs: Regcache[]): Promise<void> {
  for (const rc of rcs) {
    if (!rc.daemon.isRunning()) throw new Error(`regcache exited during the bench; log: ${rc.logFile}`);
    await rc.stop();
    running.delete(rc);
  }
}

const blobUrl = (s: Setup): string => `https://${HOST}/v2/${BLOB_REPO}/blobs/${s.upstream.blob.digest}`;
const imageBlobs = (image: Image): { digest: string; size: number }[] => [image.config, ...image.layers];

/** One client transfer served by `rc`, its usage measured, its log lines checked; cold ones wait for the commit. */
async function measured(s: Setup, rc: Regcache, what: string, kind: 'blob' | 'image', want: 'MISS' | 'HIT' | 'REDIRECT'): Promise<Sample> {
  const since = (await rc.logs()).length;
  const done = await s.meter.start([rc.daemon.pid]);
  const t: Transfer =
    kind === 'blob'
      ? await curlThrough(rc, blobUrl(s), s.upstream.blob.size, want === 'REDIRECT' ? new URL(s.s3.endpoint).hostname : undefined)
      : await skopeoThrough(rc, `${HOST}/${IMAGE_REPO}:v1`, s.image, { certDir: s.certDir!, scratch: path.join(s.root, 'skopeo') });
  const usage = await done();
  const blobs = kind === 'blob' ? [s.upstream.blob] : imageBlobs(s.image);
  await expectServed(rc, since, blobs, want, what);
  const sample: Sample = { seconds: seconds(t), firstByteMs: kind === 'blob' ? t.firstByteAt - t.startedAt : null, bytes: t.bytes, usage };
  if (want === 'MISS')
    sample.visibleAfterMs =
      (await waitCommitted(
        rc,
        blobs.map((b) => b.digest),
        what,
      )) - t.doneAt;
  return sample;
}

const push = (samples: Samples, key: PullKey, sample: Sample): void => void (samples.pulls[key] ??= []).push(sample);

/** A fresh local replica: the blob cold and warm, then the image cold and warm. */
async function localPulls(s: Setup, i: number, samples: Samples): Promise<void> {
  const rc = await startReplica(s, `local-${i}`, { kind: 'local' });
  push(samples, 'local:blobCold', await measured(s, rc, 'local blob cold', 'blob', 'MISS'));
  push(samples, 'local:blobWarm', await measured(s, rc, 'local blob warm', 'blob', 'HIT'));
  push(samples, 'local:imageCold', await measured(s, rc, 'local image cold', 'image', 'MISS'));
  push(samples, 'local:imageWarm', await measured(s, rc, 'local image warm', 'image', 'HIT'));
  await stopReplicas(rc);
}

/**
 * Replicas A and B on a fresh prefix, and C with S3_REDIRECT: on A the blob cold and warm, then on B warm,
 * then through C (redirected); the same for the image.
 */
async function s3Pulls(s: Setup, i: number, samples: Samples): Promise<void> {
  const store: Store = { kind: 's3', prefix: `pull-${i}/` };
  const a = await startReplica(s, `s3-a-${i}`, store);
  const b = await startReplica(s, `s3-b-${i}`, store);
  const c = await startReplica(s, `s3-c-${i}`, store, { S3_REDIRECT: 'true' });
  push(samples, 's3:blobCold', await measured(s, a, 'S3 blob cold (A)', 'blob', 'MISS'));
  push(samples, 's3:blobWarm', await measured(s, a, 'S3 blob warm (A)', 'blob', 'HIT'));
  push(samples, 's3:blobSecond', await measured(s, b, 'S3 blob warm (B)', 'blob', 'HIT'));
  push(samples, 's3:blobRedirect', await measured(s, c, 'S3 blob redirected (C)', 'blob', 'REDIRECT'));
  push(samples, 's3:imageCold', await measured(s, a, 'S3 image cold (A)', 'image', 'MISS'));
  push(samples, 's3:imageWarm', await measured(s, a, 'S3 image warm (A)', 'image', 'HIT'));
  push(samples, 's3:imageSecond', await measured(s, b, 'S3 image warm (B)', 'image', 'HIT'));
  push(samples, 's3:imageRedirect', await measured(s, c, 'S3 image redirected (C)', 'image', 'REDIRECT'));
  await stopReplicas(a, b, c);
}

/** The blob asked of `leader` and, once `ready` resolves, of `follower` (the same replica or another). */
async function followed(s: Setup, leader: Regcache, follower: Regcache, ready: () => Promise<void>, what: string): Promise<FollowSample> {
  const replicas = leader === follower ? [leader] : [leader, follower];
  const marks = await Promise.all(replicas.map(async (rc) => (await rc.logs()).length));
  const done = await s.meter.start(replicas.map((rc) => rc.daemon.pid));
  const size = s.upstream.blob.size;
  const leading = curlThrough(leader, blobUrl(s), size);
  // A failure of the leader must not leave its rejection unhandled while the follower is awaited.
  leading.catch(() => undefined);
  await ready();
  const [lead, follow] = await Promise.all([leading, curlThrough(follower, blobUrl(s), size)]);
  const usage = await done();
  const lines = (await Promise.all(replicas.map((rc, k) => rc.requests(marks[k]))))
    .flat()
    .filter((l) => l.kind === 'blob' && l.method === 'GET' && l.digest === s.upstream.blob.digest);
  // The leader's line: a MISS that did not join a fill; the follower's: a HIT (B, after A's commit) or a
  // coalesced MISS (the same replica, streaming the leader's fill).
  const leads = lines.filter((l) => l.cache === 'MISS' && l.coalesced !== true);
  if (lines.length !== 2 || leads.length !== 1 || !lines.every((l) => l.status === 200 && l.bytes === size)) {
    const got = lines.map((l) => `${l.cache}${l.coalesced === true ? ' coalesced' : ''}/${l.status}/${l.bytes} bytes`).join(', ');
    throw new Error(`${what}: the replicas logged [${got}], expected one MISS (the leader) and one more, 200, ${size} bytes each`);
  }
  const served = lines.find((l) => l !== leads[0])!;
  const from = (t: number): number => (t - lead.startedAt) / 1000;
  return {
    leaderSeconds: from(lead.doneAt),
    followerAskedSeconds: from(follow.startedAt),
    followerFirstByteSeconds: from(follow.firstByteAt),
    followerSeconds: from(follow.doneAt),
    bytes: lead.bytes + follow.bytes,
    usage,
    followerLine: { cache: String(served.cache), coalesced: served.coalesced === true },
  };
}

async function localFollow(s: Setup, i: number, samples: Samples): Promise<void> {
  const rc = await startReplica(s, `follow-local-${i}`, { kind: 'local' });
  const sample = await followed(s, rc, rc, () => sleep(LOCAL_FOLLOW_DELAY_MS), 'local follower');
  samples.follow.local.push(sample);
  await stopReplicas(rc);
}

async function s3Follow(s: Setup, i: number, samples: Samples): Promise<void> {
  const prefix = `follow-${i}/`;
  const a = await startReplica(s, `follow-a-${i}`, { kind: 's3', prefix });
  const b = await startReplica(s, `follow-b-${i}`, { kind: 's3', prefix });
  // B is asked once A's fill lock is in the bucket: A leads, B follows.
  const lockSeen = async (): Promise<void> =>
    waitFor(async () => ((await s.client.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: `${prefix}fills/` }))).KeyCount ?? 0) > 0, {
      timeoutMs: 60_000,
      what: "replica A's fill lock in the bucket",
      intervalMs: 20,
    });
  samples.follow.s3.push(await followed(s, a, b, lockSeen, 'S3 follower'));
  await stopReplicas(a, b);
}

const UNITS = [localPulls, s3Pulls, localFollow, s3Follow];

async function bench(root: string, opts: Options): Promise<S3BenchResult> {
  const machine = await describeMachine();
  const loadBefore = os.loadavg();
  log(`setting up: registry, ${opts.mb} MB blob and a ${opts.imageMb} MB image, push; Ceph RGW...`);
  const upstream = await startBlobRegistry(root, { host: HOST, repo: BLOB_REPO, mb: opts.mb, name: 's3-bench' });
  let s3: S3Server | null = null;
  let client: S3Client | null = null;
  try {
    const total = opts.imageMb * 1_000_000;
    const sizes = [Math.round(total * 0.5), Math.round(total * 0.3)];
    const image = await makeImage(path.join(root, 'image'), {
      layers: [...sizes, total - sizes[0]! - sizes[1]!].map((size, k) => ({ size, seed: `s3-bench-${opts.imageMb}-${k}` })),
      gzipLevel: 0,
    });
    await pushImage(upstream.registry.url, IMAGE_REPO, 'v1', image, { caFile: upstream.ca.certFile });
    s3 = await startS3Server();
    client = new S3Client(s3ClientConfig(s3));
    const meter = new UsageMeter(await cephPids(), upstream.registry.pid);
    const s: Setup = { root, upstream, image, s3, client, meter, opts, certDir: null };
    const samples: Samples = { pulls: {}, follow: { local: [], s3: [] } };
    for (let i = 0; i < opts.runs; i++) {
      // Rotate the order each round, so that no unit always follows the same one.
      const order = UNITS.map((_, k) => UNITS[(i + k) % UNITS.length]!);
      for (const unit of order) await unit(s, i, samples);
      const last = (key: PullKey): string => `${samples.pulls[key]!.at(-1)!.seconds.toFixed(2)} s`;
      const follower = (f: FollowSample[]): string => `${f.at(-1)!.followerSeconds.toFixed(2)} s (leader ${f.at(-1)!.leaderSeconds.toFixed(2)} s)`;
      log(
        `round ${i + 1}/${opts.runs}: blob cold local ${last('local:blobCold')}, S3 ${last('s3:blobCold')}; warm local ${last('local:blobWarm')}, ` +
          `S3 ${last('s3:blobWarm')}, second replica ${last('s3:blobSecond')}; follower local ${follower(samples.follow.local)}, S3 ${follower(samples.follow.s3)}`,
      );
    }
    // One upstream fetch per fill: per round the blob's two cold pulls and two led fills, the image's two cold pulls.
    const expected = (digest: string): number => opts.runs * (digest === upstream.blob.digest ? 4 : 2);
    for (const b of [upstream.blob, ...imageBlobs(image)]) {
      const gets = await upstream.registry.countBlobGets(b.digest);
      if (gets !== expected(b.digest)) throw new Error(`the upstream registry served ${b.digest} ${gets} times, expected ${expected(b.digest)}`);
    }
    const cephMemory = await s3.memory();
    return summarize({
      date: new Date().toISOString(),
      machine,
      loadAverage: { before: loadBefore, after: os.loadavg() },
      options: opts,
      blob: { digest: upstream.blob.digest, bytes: upstream.blob.size },
      image: { bytes: imageBlobs(image).reduce((n, b) => n + b.size, 0), layers: image.layers.length },
      s3: { startMs: s3.timings.total, memoryMb: Object.fromEntries(Object.entries(cephMemory).map(([k, v]) => [k, v === null ? null : v / 1e6])) },
      localFollowDelayMs: LOCAL_FOLLOW_DELAY_MS,
      samples,
      commands: COMMANDS,
    });
  } finally {
    await Promise.all([...running].map((rc) => rc.stop()));
    running.clear();
    client?.destroy();
    await s3?.stop();
    await upstream.registry.stop();
  }
}

process.exitCode = await runBench('s3-bench', 's3-', async (root) => {
  const result = await bench(root, parseOptions());
  const doc = await writeDocsSection('s3-bench', markdownSection(result));
  return { text: `${textReport(result)}docs: ${path.relative(process.cwd(), doc)} (s3-bench section)\n`, json: { ...result } };
});
