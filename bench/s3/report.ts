// The S3 bench's medians and ratios, and its report for stdout and docs/benchmarks.md.
import type { Machine } from '../load/machine.js';
import { markdownTable, textTable } from '../load/report.js';
import { median } from '../measure.js';
import type { Usage } from './usage.js';

export const PULL_KEYS = [
  'local:blobCold',
  's3:blobCold',
  'local:blobWarm',
  's3:blobWarm',
  's3:blobSecond',
  's3:blobRedirect',
  'local:imageCold',
  's3:imageCold',
  'local:imageWarm',
  's3:imageWarm',
  's3:imageSecond',
  's3:imageRedirect',
] as const;
export type PullKey = (typeof PULL_KEYS)[number];

/** What each S3 row is compared with: the local store's same operation (a second replica: the local warm HIT). */
const BASELINE: Record<PullKey, PullKey> = {
  'local:blobCold': 'local:blobCold',
  's3:blobCold': 'local:blobCold',
  'local:blobWarm': 'local:blobWarm',
  's3:blobWarm': 'local:blobWarm',
  's3:blobSecond': 'local:blobWarm',
  's3:blobRedirect': 'local:blobWarm',
  'local:imageCold': 'local:imageCold',
  's3:imageCold': 'local:imageCold',
  'local:imageWarm': 'local:imageWarm',
  's3:imageWarm': 'local:imageWarm',
  's3:imageSecond': 'local:imageWarm',
  's3:imageRedirect': 'local:imageWarm',
};

const LABEL: Record<PullKey, [string, string]> = {
  'local:blobCold': ['cold (MISS)', 'local'],
  's3:blobCold': ['cold (MISS)', 'S3, replica A'],
  'local:blobWarm': ['warm (HIT), same replica', 'local'],
  's3:blobWarm': ['warm (HIT), same replica', 'S3, replica A'],
  's3:blobSecond': ["warm (HIT), second replica after A's cold", 'S3, replica B'],
  's3:blobRedirect': ['warm (HIT), redirected to the bucket (S3_REDIRECT)', 'S3, replica C'],
  'local:imageCold': ['cold (MISS)', 'local'],
  's3:imageCold': ['cold (MISS)', 'S3, replica A'],
  'local:imageWarm': ['warm (HIT), same replica', 'local'],
  's3:imageWarm': ['warm (HIT), same replica', 'S3, replica A'],
  's3:imageSecond': ["warm (HIT), second replica after A's cold", 'S3, replica B'],
  's3:imageRedirect': ['warm (HIT), redirected to the bucket (S3_REDIRECT)', 'S3, replica C'],
};

export interface Sample {
  seconds: number; // the client's, start to last byte
  firstByteMs: number | null; // the client's, start to first byte of the body (curl's; null for skopeo)
  bytes: number; // delivered to the client
  usage: Usage;
  visibleAfterMs?: number; // cold: from the client's last byte to the replica's 'fill committed' (the last one, for an image)
}

/** A follower's fill; times in seconds from the leader's request. */
export interface FollowSample {
  leaderSeconds: number;
  followerAskedSeconds: number;
  followerFirstByteSeconds: number;
  followerSeconds: number;
  bytes: number; // both clients'
  usage: Usage; // both replicas (or the one)
  followerLine: { cache: string; coalesced: boolean };
}

export interface Samples {
  pulls: Partial<Record<PullKey, Sample[]>>;
  follow: { local: FollowSample[]; s3: FollowSample[] };
}

export interface RawResult {
  date: string;
  machine: Machine;
  loadAverage: { before: number[]; after: number[] };
  options: { mb: number; imageMb: number; runs: number; fillLease: string | null };
  blob: { digest: string; bytes: number };
  image: { bytes: number; layers: number };
  s3: { startMs: number; memoryMb: Record<string, number | null> };
  localFollowDelayMs: number;
  samples: Samples;
  commands: string[];
}

interface Costs {
  regcacheNsPerByte: number;
  peakRssMb: number; // the largest replica's, median over rounds
  radosgwNsPerByte: number;
  osdNsPerByte: number;
  monNsPerByte: number;
  upstreamNsPerByte: number;
  clientsNsPerByte: number;
  allNsPerByte: number; // every party above and ceph-mon
  coresUsed: number; // every party's CPU seconds over the operation's wall time, median
}

export interface PullSummary extends Costs {
  medianSeconds: number;
  mbPerSecond: number;
  firstByteMs: number | null;
  timeVsLocal: number; // median over rounds of this row's time / its baseline's in the same round
  cpuVsLocal: number; // regcache ns/B against the baseline's, medians
  visibleAfterMs: number | null;
}

export interface FollowSummary extends Costs {
  leaderSeconds: number;
  followerAskedSeconds: number;
  followerFirstByteSeconds: number;
  followerSeconds: number;
  followerVsLeader: number; // median over rounds of the follower's time to last byte / the leader's
  followerLine: { cache: string; coalesced: boolean };
}

export interface S3BenchResult extends RawResult {
  summary: {
    pulls: Partial<Record<PullKey, PullSummary>>;
    follow: { local: FollowSummary; s3: FollowSummary; s3VsLocal: number };
  };
}

const allCpu = (c: Usage['cpuSeconds']): number => c.regcache + c.radosgw + c['ceph-osd'] + c['ceph-mon'] + c.upstream + c.clients;

/** CPU per byte delivered of each party, medians; `wall` gives each sample's wall time in seconds. */
function costs<T extends { bytes: number; usage: Usage }>(samples: T[], wall: (s: T) => number): Costs {
  const nsPerByte = (pick: (u: Usage['cpuSeconds']) => number): number => median(samples.map((s) => (pick(s.usage.cpuSeconds) * 1e9) / s.bytes));
  return {
    allNsPerByte: nsPerByte(allCpu),
    coresUsed: median(samples.map((s) => allCpu(s.usage.cpuSeconds) / wall(s))),
    regcacheNsPerByte: nsPerByte((c) => c.regcache),
    peakRssMb: median(samples.map((s) => Math.max(...s.usage.peakRssMb))),
    radosgwNsPerByte: nsPerByte((c) => c.radosgw),
    osdNsPerByte: nsPerByte((c) => c['ceph-osd']),
    monNsPerByte: nsPerByte((c) => c['ceph-mon']),
    upstreamNsPerByte: nsPerByte((c) => c.upstream),
    clientsNsPerByte: nsPerByte((c) => c.clients),
  };
}

/** Median over rounds of a[i] / b[i]: the ratio within each round, so that load that drifts over the run cancels. */
const pairedRatio = (a: number[], b: number[]): number => median(a.map((x, i) => x / b[i]!));

function followSummary(samples: FollowSample[]): FollowSummary {
  const med = (pick: (s: FollowSample) => number): number => median(samples.map(pick));
  return {
    ...costs(samples, (s) => s.followerSeconds),
    leaderSeconds: med((s) => s.leaderSeconds),
    followerAskedSeconds: med((s) => s.followerAskedSeconds),
    followerFirstByteSeconds: med((s) => s.followerFirstByteSeconds),
    followerSeconds: med((s) => s.followerSeconds),
    followerVsLeader: pairedRatio(
      samples.map((s) => s.followerSeconds),
      samples.map((s) => s.leaderSeconds),
    ),
    followerLine: samples[0]!.followerLine,
  };
}

export function summarize(raw: RawResult): S3BenchResult {
  const pulls: Partial<Record<PullKey, PullSummary>> = {};
  for (const key of PULL_KEYS) {
    const samples = raw.samples.pulls[key];
    const base = raw.samples.pulls[BASELINE[key]];
    if (!samples || !base) continue;
    const c = costs(samples, (s) => s.seconds);
    const medianSeconds = median(samples.map((s) => s.seconds));
    const visible = samples.filter((s) => s.visibleAfterMs !== undefined).map((s) => s.visibleAfterMs!);
    pulls[key] = {
      ...c,
      medianSeconds,
      mbPerSecond: samples[0]!.bytes / 1e6 / medianSeconds,
      firstByteMs: samples[0]!.firstByteMs === null ? null : median(samples.map((s) => s.firstByteMs!)),
      timeVsLocal: pairedRatio(
        samples.map((s) => s.seconds),
        base.map((s) => s.seconds),
      ),
      cpuVsLocal: c.regcacheNsPerByte / costs(base, (s) => s.seconds).regcacheNsPerByte,
      visibleAfterMs: visible.length > 0 ? median(visible) : null,
    };
  }
  const { local, s3 } = raw.samples.follow;
  const follow = {
    local: followSummary(local),
    s3: followSummary(s3),
    s3VsLocal: pairedRatio(
      s3.map((s) => s.followerSeconds),
      local.map((s) => s.followerSeconds),
    ),
  };
  return { ...raw, summary: { pulls, follow } };
}

const f0 = (n: number): string => (Number.isFinite(n) ? n.toFixed(0) : '-');
const f1 = (n: number): string => (Number.isFinite(n) ? n.toFixed(1) : '-');
const f2 = (n: number): string => (Number.isFinite(n) ? n.toFixed(2) : '-');
const x = (n: number): string => (Number.isFinite(n) ? `${n.toFixed(2)}x` : '-');
const mb = (bytes: number): string => (bytes / 1e6).toFixed(0);

function pullTable(r: S3BenchResult, kind: 'blob' | 'image'): string[][] {
  const rows = [
    [
      'operation',
      'store',
      'median s',
      'MB/s',
      'first byte ms',
      'time vs local',
      'regcache CPU ns/B',
      'CPU vs local',
      'regcache peak RSS MB',
      'radosgw ns/B',
      'ceph-osd ns/B',
      'upstream ns/B',
      'client ns/B',
      'all CPU ns/B',
      'cores used',
      'stored after last byte ms',
    ],
  ];
  for (const key of PULL_KEYS.filter((k) => k.includes(`:${kind}`))) {
    const p = r.summary.pulls[key];
    if (!p) continue;
    rows.push([
      ...LABEL[key],
      f2(p.medianSeconds),
      f0(p.mbPerSecond),
      p.firstByteMs === null ? '' : f1(p.firstByteMs),
      key.startsWith('local:') ? 'baseline' : x(p.timeVsLocal),
      f2(p.regcacheNsPerByte),
      key.startsWith('local:') ? 'baseline' : x(p.cpuVsLocal),
      f0(p.peakRssMb),
      f2(p.radosgwNsPerByte),
      f2(p.osdNsPerByte),
      f2(p.upstreamNsPerByte),
      f2(p.clientsNsPerByte),
      f2(p.allNsPerByte),
      f2(p.coresUsed),
      p.visibleAfterMs === null ? '' : f0(p.visibleAfterMs),
    ]);
  }
  return rows;
}

function followTable(r: S3BenchResult): string[][] {
  const rows = [
    [
      'follower',
      'store',
      'leader last byte s',
      'follower asked s',
      'follower first byte s',
      'follower last byte s',
      'follower vs leader',
      'regcache CPU ns/B',
      'regcache peak RSS MB',
      'radosgw ns/B',
      'ceph-osd ns/B',
      'all CPU ns/B',
      'cores used',
    ],
  ];
  const row = (label: string, store: string, f: FollowSummary): string[] => [
    label,
    store,
    f2(f.leaderSeconds),
    f2(f.followerAskedSeconds),
    f2(f.followerFirstByteSeconds),
    f2(f.followerSeconds),
    x(f.followerVsLeader),
    f2(f.regcacheNsPerByte),
    f0(f.peakRssMb),
    f2(f.radosgwNsPerByte),
    f2(f.osdNsPerByte),
    f2(f.allNsPerByte),
    f2(f.coresUsed),
  ];
  const { local, s3 } = r.summary.follow;
  rows.push(row('a second client on the leading replica (joins the fill)', 'local', local));
  rows.push(row("a client on replica B (waits for A's commit, reads the bucket)", 'S3', s3));
  return rows;
}

function header(r: S3BenchResult): string {
  const m = r.machine;
  const load = (l: number[]): string => l.map(f1).join(' / ');
  return (
    `${m.cpus} CPUs (${m.cpuModel}), ${m.ramGiB.toFixed(1)} GiB RAM, ${m.kernel}; node ${m.node}, ${m.registry}, regcache ${m.regcache}; ` +
    `Ceph RADOS Gateway (single node, bluestore on a sparse file, started by test/harness/s3-server.ts in ${(r.s3.startMs / 1000).toFixed(1)} s). ` +
    `Load average (1 / 5 / 15 min) ${load(r.loadAverage.before)} before the run, ${load(r.loadAverage.after)} after: anything above what the bench itself adds is other processes competing for the same cores.`
  );
}

function notes(r: S3BenchResult): string[] {
  const f = r.summary.follow;
  const mem = r.s3.memoryMb;
  const lease = r.options.fillLease ?? "regcache's default, 30s";
  return [
    `${r.options.runs} interleaved rounds (the order of the four parts, local pulls, S3 pulls and the two followers, rotated each round); medians. "time vs local" is the median over rounds of the row's time over the local store's same operation in the same round (for a second replica: the local warm HIT on the replica that fetched), so that load drifting over the run cancels. MB = 10^6 bytes.`,
    `Blob: ${mb(r.blob.bytes)} MB of incompressible data, one GET with curl through the replica's proxy port (CONNECT, intercepted: TLS with a minted leaf, VERIFY_ON_READ on), a fresh replica and a fresh cache (local dir or bucket prefix) per round. Image: skopeo copy of a ${mb(r.image.bytes)} MB image (${r.image.layers} layers and a config) through the same replica, every byte checked.`,
    `Every cold row is a MISS that fetched upstream once (the registry's count of GETs is checked), every warm row a HIT in regcache's log. "stored after last byte": from the client's last byte to the replica's 'fill committed' (with S3: the last part, the upload's completion and the entry object), after which other replicas see it (negative: before the client had exited).`,
    `CPU per byte: CPU seconds (user + system, /proc ticks of 10 ms) during the operation over the bytes delivered to clients; regcache's is the replica's that served (both, for a follower); radosgw and ceph-osd are the S3 server (ceph-mon, not shown: at most ${f2(Math.max(f.s3.monNsPerByte, ...Object.values(r.summary.pulls).map((q) => q.monNsPerByte)))} ns/B in any row); upstream is the docker-registry; client is curl or skopeo; all CPU is every one of them together, and cores used that CPU over the operation's wall time (for a follower: until its last byte): near 2, the 2 cores were the limit; well below, the bench got only part of them or waited on something else. regcache peak RSS: VmHWM of the serving replica during that operation alone (reset through /proc/<pid>/clear_refs before it). Ceph's own RSS at the end: radosgw ${f0(mem.gateway ?? NaN)} MB, ceph-osd ${f0(mem.osd ?? NaN)} MB, ceph-mon ${f0(mem.mon ?? NaN)} MB.`,
    `Followers: the leader's client asks replica A for the blob (cold); the follower asks once A's fill lock is in the bucket (S3, replica B, S3_FILL_LEASE ${lease}: B looks for the commit every 1/20 of the lease, 100 ms-1 s) or ${r.localFollowDelayMs} ms after the leader (local: a second client of the same replica). All times from the leader's request; "follower vs leader" is the follower's last byte over the leader's. The S3 follower's last byte came ${x(f.s3VsLocal)} as late as the local follower's. The follower's request line: local ${f.local.followerLine.cache}${f.local.followerLine.coalesced ? ' (coalesced)' : ''}, S3 ${f.s3.followerLine.cache}${f.s3.followerLine.coalesced ? ' (coalesced)' : ''}.`,
    "S3_REDIRECT rows: replica C (S3_REDIRECT=true, on A's bucket prefix) answers each blob GET 307 to a presigned URL of the gateway, which the client follows directly (curl --location --noproxy for it; skopeo reaches http:// directly with only HTTPS_PROXY set): the bytes go from radosgw to the client, regcache's CPU per byte is only the lookups, access checks, HEADs and signatures (and, for the image, the manifest it still serves).",
    "first byte: curl's time to the first byte of the body (TCP, CONNECT, TLS with regcache, the request, and what regcache does before answering).",
    'Everything (curl and skopeo, the upstream registry, the replicas, the mon, OSD and gateway) shares the same cores, and the machine is shared with other work: read the ratios, not the absolute MB/s.',
  ];
}

/** What the figures mean for a fleet, where the time went, and what a real S3 would change. */
function interpretation(r: S3BenchResult): string {
  const p = r.summary.pulls;
  const f = r.summary.follow;
  const get = (key: PullKey): PullSummary => p[key]!;
  const [localCold, s3Cold, localWarm, s3Warm, second, redirect] = [
    get('local:blobCold'),
    get('s3:blobCold'),
    get('local:blobWarm'),
    get('s3:blobWarm'),
    get('s3:blobSecond'),
    get('s3:blobRedirect'),
  ];
  const ceph = (q: { radosgwNsPerByte: number; osdNsPerByte: number }): string => f2(q.radosgwNsPerByte + q.osdNsPerByte);
  const cores = [...Object.values(p), f.local, f.s3].map((q) => q.coresUsed);
  const load = (l: number[]): string => f1(l[0]!);
  return [
    `**Reading it.** For a fleet the row that matters is the second replica's. With the local store a replica that did not fetch a blob fetches it upstream again ` +
      `(a cold MISS: ${f2(localCold.medianSeconds)} s here from a registry on loopback; from Docker Hub a download over the WAN and, for a whole image, a pull counted against its rate limit); ` +
      `with the S3 store it is a HIT at ${f0(second.mbPerSecond)} MB/s, ${x(second.timeVsLocal)} the time of a local warm HIT on the replica that fetched (the image: ${x(get('s3:imageSecond').timeVsLocal)}). ` +
      `A warm HIT on the replica that fetched costs about as much (${x(s3Warm.timeVsLocal)}): every HIT reads the bucket again, the local tier being off here (LOCAL_TIER_MAX_SIZE, decision #89, not measured by this bench). ` +
      `A cold pull through S3 took ${x(s3Cold.timeVsLocal)} the local one's time, and its content was in the bucket for every replica ${f0(s3Cold.visibleAfterMs ?? NaN)} ms after the client's last byte. ` +
      `A client that lands on another replica during a fill got its last byte ${x(f.s3.followerVsLeader)} as late as the leader's client (it waits for the commit, then reads the bucket: decision #84), ` +
      `where a second client of the leading replica finished with the leader (${x(f.local.followerVsLeader)}); and the S3 leader's own client took ${f2(f.s3.leaderSeconds)} s against the local leader's ${f2(f.local.leaderSeconds)} s, its replica uploading meanwhile.`,
    '',
    `**Redirected (S3_REDIRECT).** A warm blob through a redirecting replica took ${x(redirect.timeVsLocal)} the time of a local warm HIT (a streamed S3 HIT: ${x(s3Warm.timeVsLocal)}), ` +
      `its replica spending ${f2(redirect.regcacheNsPerByte)} ns/B of CPU against ${f2(s3Warm.regcacheNsPerByte)} for a HIT it streams: the bytes went from the gateway to the client. ` +
      `The image (three layers and a config redirected, the manifest still served by the replica; each 307 adds a round trip and a connection to the gateway): ${x(get('s3:imageRedirect').timeVsLocal)} against ${x(get('s3:imageWarm').timeVsLocal)} streamed, regcache ${f2(get('s3:imageRedirect').regcacheNsPerByte)} ns/B against ${f2(get('s3:imageWarm').regcacheNsPerByte)}.`,
    '',
    `**Where the time went.** In this run the bench had about one core's worth of CPU (cores used ${f2(Math.min(...cores))}-${f2(Math.max(...cores))} in every row; load average ${load(r.loadAverage.before)} before, ${load(r.loadAverage.after)} after, with other suites running), ` +
      `so the wall times follow the CPU of all parties together: an S3 warm HIT cost ${f2(s3Warm.allNsPerByte)} ns/B against ${f2(localWarm.allNsPerByte)} for a local one ` +
      `(regcache ${f2(s3Warm.regcacheNsPerByte)} against ${f2(localWarm.regcacheNsPerByte)}, reading the bucket over HTTP rather than a file, plus radosgw and the OSD ${ceph(s3Warm)}), ` +
      `a cold S3 fill ${f2(s3Cold.allNsPerByte)} against ${f2(localCold.allNsPerByte)} (regcache ${f2(s3Cold.regcacheNsPerByte)} against ${f2(localCold.regcacheNsPerByte)}: the part uploads on top of the fill; radosgw and the OSD ${ceph(s3Cold)}). ` +
      `On a machine with cores to spare, or with the gateway elsewhere, the S3 rows should be closer to the local ones than these ratios say; regcache's own CPU per byte (${x(s3Warm.cpuVsLocal)} per HIT, ${x(s3Cold.cpuVsLocal)} per cold byte) is what carries over.`,
    '',
    `**With a real S3** the gateway's and the OSD's CPU leave the machine, but every request crosses a network: a HIT is a lookup, a HEAD and one ranged GET, so its first byte waits for those ` +
      `round trips (S3's first-byte latency is tens to a few hundred milliseconds, against ${f1(s3Warm.firstByteMs ?? NaN)} ms through RGW here and ${f1(localWarm.firstByteMs ?? NaN)} ms from the local store), ` +
      `and a HIT's throughput is what one GET stream from the bucket carries. A cold fill uploads its parts while it downloads: with an upload slower than the download the client is not held, ` +
      `but the commit is (the "stored after last byte" column grows), and so are followers on other replicas, who also wait for their poll (every second with the default S3_FILL_LEASE). ` +
      `Requests are billed (a part upload is a PUT, a HIT a HEAD and a GET). S3_REDIRECT takes the bytes of warm blob HITs off the replicas altogether (each costs a HEAD and a redirect instead: decision #88); the local tier (LOCAL_TIER_MAX_SIZE) makes a replica's repeated HITs local ones.`,
  ].join('\n');
}

export function textReport(r: S3BenchResult): string {
  return [
    '',
    'regcache S3 bench: the S3 store (Ceph RGW) beside the local store',
    `  ${header(r)}`,
    '',
    `One ${mb(r.blob.bytes)} MB blob (curl)`,
    textTable(pullTable(r, 'blob')),
    '',
    `A ${mb(r.image.bytes)} MB image (skopeo copy)`,
    textTable(pullTable(r, 'image')),
    '',
    `A follower of a ${mb(r.blob.bytes)} MB fill`,
    textTable(followTable(r)),
    '',
    ...notes(r).map((n) => `  ${n}`),
    '',
  ].join('\n');
}

export function markdownSection(r: S3BenchResult): string {
  return [
    '## S3 store beside the local store: cold, warm, a second replica, a follower (bench/s3-bench.ts)',
    '',
    `Measured ${r.date} on ${header(r)}`,
    '',
    `Reproduce: ${r.commands.map((c) => `\`${c}\``).join(', or this bench alone: ')} (\`BENCH_S3_MB=${r.options.mb} BENCH_S3_IMAGE_MB=${r.options.imageMb} BENCH_S3_RUNS=${r.options.runs}\`).`,
    '',
    `### One ${mb(r.blob.bytes)} MB blob (curl)`,
    '',
    markdownTable(pullTable(r, 'blob')),
    '',
    `### A ${mb(r.image.bytes)} MB image (skopeo copy)`,
    '',
    markdownTable(pullTable(r, 'image')),
    '',
    `### A follower of a ${mb(r.blob.bytes)} MB fill`,
    '',
    markdownTable(followTable(r)),
    '',
    ...notes(r).map((n) => `- ${n}`),
    '',
    interpretation(r),
  ].join('\n');
}
