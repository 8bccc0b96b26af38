// The soak (issue 25): real parts, mixed pulls, faults on a seeded schedule, invariants checked as every
// answer completes and again at the end, and a report. `runSoak` is what `npm run soak` (test/soak/main.ts,
// SOAK_MINUTES, default 10) and the one-minute run in `npm test` (test/soak.test.ts) call.
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, rm, statfs, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, ListMultipartUploadsCommand, S3Client } from '@aws-sdk/client-s3';
import { run, sleep, waitFor } from '../harness/proc.js';
import { listKeys, s3ClientConfig, startS3Server, type S3Server } from '../harness/s3-server.js';
import { makeTmpDir, removeTmpDir } from '../harness/tmp.js';
import { startTokenAuthUpstream, type TokenAuthUpstream } from '../support/upstream-fixture.js';
import { eachAtOnce } from '../../src/cache/each-at-once.js';
import { REFRESH_MS } from '../../src/cache/s3/s3-store.js';
import { buildCatalogue, type Catalogue, type Item } from './catalogue.js';
import { GAVE_UP, Ledger, NodeClient, PASSWORD, skopeoPull, USER, type Op, type Target } from './clients.js';
import { FaultUpstream } from './fault-upstream.js';
import { Faults, type FaultEvent } from './faults.js';
import { Monitor, type Flatness, FD_SLACK, RSS_RATIO, RSS_SLACK } from './monitor.js';
import { plot } from './png.js';
import { newSeed, Rng } from './rng.js';
import {
  BUCKET,
  FLEET_GRACE_MS,
  FLEET_LEASE_MS,
  FLEET_MAX_BYTES,
  FLEET_SWEEP_MS,
  LOCAL_MAX_BYTES,
  LOCAL_WORKER_STALL_MS,
  LOCAL_TMPFS_BYTES,
  PREFIX,
  startFleet,
  startLocal,
  type Fleet,
  type Node,
} from './systems.js';

export interface SoakOptions {
  minutes: number;
  seed?: number;
  /** Where the report (report.json, report.md, resources.png) goes; default a directory under the OS temp dir. */
  outDir?: string;
  log?: (line: string) => void;
  /** Awaited once everything is up and before the load: the suite's runner lets the soak set up beside its last files. */
  untilAlone?: () => Promise<void>;
}

export interface InvariantResult {
  name: string;
  passed: boolean;
  /** How many times it was checked. */
  checks: number;
  detail: string;
}

export interface SoakReport {
  seed: number;
  minutes: number;
  wallSeconds: number;
  catalogue: { images: number; privateImages: number; digests: number; bytes: number };
  requests: number;
  bytes: number;
  byTarget: Record<string, number>;
  byOp: Record<string, number>;
  errors: Record<string, number>;
  /** Per operation: the median and 95th percentile of its requests' time, ms (errors included). */
  latency: Record<string, { p50: number; p95: number }>;
  /** regcache's warn/error/fatal lines by message. */
  logged: Record<string, number>;
  faults: Record<string, number>;
  faultEvents: FaultEvent[];
  upstreamGets: { local: number; fleet: number };
  invariants: InvariantResult[];
  resources: Flatness[];
  outDir: string;
  png: string;
}

const PUBLIC_IMAGES = 48;
const PRIVATE_IMAGES = 12;
const NODE_CLIENTS = 6;
const SAMPLE_MS = 2000;
// How long after its last upstream byte a fill may still be committing (the bucket's timeouts: two 10 s attempts per request).
const FILL_COMMIT_MS = 60_000;
// The watchdog asks every quarter of its limit, so a stall is seen up to a quarter late; then the kill and
// the exit, on a loaded machine.
const WATCHDOG_SLACK_MS = 5_000;

export async function runSoak(options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? ((line: string) => process.stderr.write(line + '\n'));
  const seed = options.seed ?? newSeed();
  log(`soak: seed ${seed} (replay with SOAK_SEED=${seed}), ${options.minutes} min`);
  const began = Date.now();
  const root = await makeTmpDir('regcache-soak');
  const outDir = options.outDir ?? path.join(os.tmpdir(), `regcache-soak-report-${seed}`);
  await mkdir(outDir, { recursive: true });
  const cacheDir = path.join(root, 'local-cache');
  let mounted = false;
  let unmountAtExit = () => undefined as unknown;
  const stops: (() => Promise<unknown>)[] = [];
  try {
    // The upstream: docker-registry with token auth, a test token server, the catalogue pushed.
    const privateRepos = Array.from({ length: PRIVATE_IMAGES }, (_, i) => `team/private-${PUBLIC_IMAGES + i}`);
    const hub: TokenAuthUpstream = await startTokenAuthUpstream(root, ['registry.test'], ['soak-seed-layer'], { users: { [USER]: PASSWORD }, privateRepos });
    stops.push(
      () => hub.upstream.registry.stop(),
      () => hub.tokens.stop(),
    );
    // Pushed while the rest starts (nothing below needs the images before the load): the soak runs alone,
    // so its set-up is wall time the whole suite waits for.
    const pushing = buildCatalogue(hub, path.join(root, 'images'), seed, { public: PUBLIC_IMAGES, private: PRIVATE_IMAGES }).then((c) => {
      log(`soak: ${c.items.length} images, ${c.blobs.size} digests, ${mib(c.bytes)} MiB pushed (${secondsSince(began)} s)`);
      return c;
    });
    // Awaited below; if a start-up step throws first, the push's own failure (the upstream stopped under
    // it) says nothing more.
    pushing.catch(() => undefined);

    const tls = await hub.upstream.ca.issue(['registry.test'], root, 'fault-upstream');
    const upstreams = [0, 1].map(() => new FaultUpstream(tls, { port: hub.upstream.registry.port, caFile: hub.upstream.ca.certFile }));
    for (const u of upstreams) await u.start();
    stops.push(...upstreams.map((u) => () => u.stop()));
    const [localUpstream, fleetUpstream] = upstreams as [FaultUpstream, FaultUpstream];
    const upstreamInfo = { caBundle: hub.caBundle, tokenPort: hub.tokens.port };

    // Local: WORKERS=2 on a tmpfs of its own.
    await mkdir(cacheDir, { recursive: true });
    const mount = await run('mount', ['-t', 'tmpfs', '-o', `size=${LOCAL_TMPFS_BYTES}`, 'tmpfs', cacheDir]);
    if (mount.code !== 0) throw new Error(`the soak mounts a tmpfs for the local CACHE_DIR (root needed): ${mount.stderr}`);
    mounted = true;
    unmountAtExit = () => execFileSync('umount', ['-l', cacheDir]); // a crash skips the finally below
    process.once('exit', unmountAtExit);
    // The two configurations start side by side (each mostly waits on its own processes).
    const startingLocal = startLocal(root, cacheDir, upstreamInfo, localUpstream).then((node) => {
      log(`soak: local configuration up (${secondsSince(began)} s)`);
      stops.push(() => node.stop());
      return node;
    });
    // Fleet: two replicas on Ceph RGW, haproxy in front.
    const startingFleet = startS3Server().then(async (s3) => {
      log(`soak: radosgw up (${secondsSince(began)} s)`);
      stops.push(() => s3.stop());
      const s3Client = new S3Client(s3ClientConfig(s3));
      stops.push(async () => s3Client.destroy());
      const fleet = await startFleet(root, s3, upstreamInfo, fleetUpstream);
      log(`soak: fleet up (${secondsSince(began)} s)`);
      stops.push(...fleet.replicas.map((r) => () => r.stop()), () => fleet.balancer.stop());
      return { s3, s3Client, fleet };
    });
    // Both settle before either failure is thrown: what the other started is then in `stops`.
    const [localStart, fleetStart] = await Promise.allSettled([startingLocal, startingFleet]);
    if (localStart.status === 'rejected') throw localStart.reason;
    if (fleetStart.status === 'rejected') throw fleetStart.reason;
    const local = localStart.value;
    const { s3, s3Client, fleet }: { s3: S3Server; s3Client: S3Client; fleet: Fleet } = fleetStart.value;
    const catalogue = await pushing;
    log(`soak: everything up (${secondsSince(began)} s)`);
    if (options.untilAlone) {
      await options.untilAlone();
      log(`soak: the machine to itself (${secondsSince(began)} s)`);
    }

    const localCa = path.join(local.caDir, 'ca.crt');
    const fleetCa = path.join(fleet.replicas[0]!.caDir, 'ca.crt');
    const targets: Target[] = [
      { name: 'local-proxy', config: 'local', kind: 'proxy', url: `http://127.0.0.1:${local.ports.proxy}`, caFile: localCa },
      { name: 'local-mirror', config: 'local', kind: 'mirror', url: `http://127.0.0.1:${local.ports.mirror}`, caFile: localCa },
      { name: 'fleet-proxy', config: 'fleet', kind: 'proxy', url: fleet.balancer.proxyUrl, caFile: fleetCa },
      ...fleet.replicas.map((r): Target => ({
        name: `fleet-mirror-${r.name.slice(-1)}`,
        config: 'fleet',
        kind: 'mirror',
        url: `http://127.0.0.1:${r.ports.mirror}`,
        caFile: fleetCa,
      })),
    ];
    const certDirs = { local: await certDir(root, 'local', localCa), fleet: await certDir(root, 'fleet', fleetCa) };

    const t0 = Date.now();
    const monitor = new Monitor(t0, () => processes(local, fleet, hub), SAMPLE_MS);
    monitor.start();
    const deadline = t0 + options.minutes * 60_000;
    const ledger = new Ledger();
    ledger.onViolation = (v) => log(`soak: VIOLATION ${v.invariant} ${v.target} ${v.op}: ${v.detail}`);
    const faults = new Faults(
      { gapMs: [2000, 6000], windowMs: [3000, 9000] },
      { upstreams, local, fleet, s3, s3Client, ballastFile: path.join(cacheDir, 'ballast'), catalogue, recent: (config) => ledger.recent[config] },
    );
    const faulting = faults.run(deadline, {
      upstream: new Rng(seed, 'faults-upstream'),
      local: new Rng(seed, 'faults-local'),
      fleet: new Rng(seed, 'faults-fleet'),
    });
    const loading = load(deadline, seed, catalogue, targets, certDirs, ledger, hub.tokens.service, root);
    const progress = setInterval(
      () => log(`soak: ${secondsSince(t0)} s, ${ledger.outcomes.length} requests, ${faults.events.length} faults, ${ledger.violations.length} violations`),
      15_000,
    );
    await Promise.all([faulting, loading]);
    clearInterval(progress);
    faults.stop();
    log(`soak: load and faults over (${secondsSince(t0)} s); recovering and checking`);

    // Every fault undone (a lane that failed mid-window may have left one).
    for (const u of upstreams) u.mode = 'ok';
    s3.resumeGateway();
    await s3.startGateway().catch(() => undefined); // running already: fine
    await rm(path.join(cacheDir, 'ballast'), { force: true });
    for (const node of [local, ...fleet.replicas]) if (!node.current.daemon.isRunning()) await node.start();

    const invariants: InvariantResult[] = [];
    invariants.push(
      {
        name: 'every complete answer is the bytes its digest names',
        passed: !ledger.violations.some((v) => v.invariant === 'wrong-bytes'),
        checks: ledger.checks.bytes,
        detail: violations(ledger, 'wrong-bytes'),
      },
      {
        name: 'private content never reaches a client without access',
        passed: !ledger.violations.some((v) => v.invariant === 'private-leak'),
        checks: ledger.checks.privacy,
        detail: violations(ledger, 'private-leak'),
      },
    );
    const gaveUp = ledger.outcomes.filter((o) => o.error !== null && GAVE_UP.has(o.error));
    invariants.push({
      name: "no client left waiting: every request answered or failed before its client's time limit",
      passed: gaveUp.length === 0,
      checks: ledger.outcomes.length,
      detail: gaveUp
        .slice(0, 5)
        .map((o) => `${o.target} ${o.op} began ${new Date(o.at).toISOString()}, gave up after ${o.ms} ms`)
        .join('; '),
    });
    invariants.push(...(await quiesceAndCheck(local, fleet, s3Client, faults.events, log)));
    invariants.push(await noCrash([local, ...fleet.replicas], faults.events));
    invariants.push(await upstreamFetches('local', [local], localUpstream, faults.events));
    invariants.push(await upstreamFetches('fleet', fleet.replicas, fleetUpstream, faults.events));
    await monitor.sample();
    await monitor.stop();
    const resources = monitor.flatness();
    // The soak's own process is sampled and plotted but not judged: its RSS follows the soak's phases (the
    // ledger grows with every request, the checks at the end read listings, logs and the bucket), not
    // anything of regcache's; judged, it failed a run whose regcache processes were flat (2026-12-06).
    const judged = resources.filter((r) => r.judged && r.pid !== process.pid);
    invariants.push({
      name: `RSS and descriptors flat after warm-up (last third's median RSS <= ${RSS_RATIO}x the middle third's + ${mib(RSS_SLACK)} MiB; peak descriptors <= middle third's + ${FD_SLACK})`,
      passed: judged.length > 0 && judged.every((r) => r.flat),
      checks: judged.length,
      detail:
        judged.length === 0
          ? 'no process lived long enough to judge'
          : judged
              .filter((r) => !r.flat)
              .map((r) => `${r.role} ${r.pid}: RSS ${mib(r.rssWarm)} -> ${mib(r.rssEnd)} MiB, fds ${r.fdsWarm} -> ${r.fdsEnd}`)
              .join('; '),
    });

    const png = path.join(outDir, 'resources.png');
    await writeFile(png, resourcePlot(monitor));
    const report: SoakReport = {
      seed,
      minutes: options.minutes,
      wallSeconds: secondsSince(began),
      catalogue: { images: catalogue.items.length, privateImages: PRIVATE_IMAGES, digests: catalogue.blobs.size, bytes: catalogue.bytes },
      requests: ledger.outcomes.length,
      bytes: ledger.bytes,
      byTarget: countBy(ledger.outcomes, (o) => o.target),
      byOp: countBy(ledger.outcomes, (o) => o.op),
      errors: countBy(
        ledger.outcomes.filter((o) => o.error),
        (o) => o.error!,
      ),
      latency: latencies(ledger),
      logged: await loudLines([local, ...fleet.replicas]),
      faults: faults.byKind(),
      faultEvents: faults.events,
      upstreamGets: { local: localUpstream.gets.length, fleet: fleetUpstream.gets.length },
      invariants,
      resources,
      outDir,
      png,
    };
    await writeFile(
      path.join(outDir, 'report.json'),
      JSON.stringify(
        { ...report, violations: ledger.violations, outcomes: ledger.outcomes, gets: { local: localUpstream.gets, fleet: fleetUpstream.gets } },
        null,
        2,
      ),
    );
    await writeFile(path.join(outDir, 'report.md'), reportMarkdown(report));
    log(`soak: report in ${outDir}`);
    return report;
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    if (mounted) {
      process.off('exit', unmountAtExit);
      await run('umount', ['-l', cacheDir]);
    }
    if (process.env.REGCACHE_KEEP_TMP === '1') log(`soak: keeping ${root}`);
    else await removeTmpDir(root);
  }
}

/** The pool: NODE_CLIENTS node clients and one skopeo, each drawing its own stream of operations. */
async function load(
  deadline: number,
  seed: number,
  catalogue: Catalogue,
  targets: Target[],
  certDirs: Record<'local' | 'fleet', string>,
  ledger: Ledger,
  service: string,
  root: string,
): Promise<void> {
  const publicItems = catalogue.items.filter((i) => !i.private);
  const privateItems = catalogue.items.filter((i) => i.private);
  // Most pulls go to a hot set (warm HITs), the rest anywhere (cold, and eviction keeps the hot set moving).
  const choose = (rng: Rng, items: Item[]) => (rng.chance(0.6) ? items[rng.int(Math.min(8, items.length))]! : rng.pick(items));
  const nodeLoop = async (n: number): Promise<void> => {
    const rng = new Rng(seed, `client-${n}`);
    const client = new NodeClient(catalogue, ledger, rng, service, deadline);
    try {
      while (Date.now() < deadline) {
        const target = rng.pick(targets);
        const op = rng.weighted<Exclude<Op, 'skopeo'>>({
          image: 25,
          blob: 25,
          manifest: 5,
          range: 15,
          abandon: 10,
          'private-creds': 8,
          'private-anonymous': 6,
          'private-elsewhere': 4,
        });
        const isPrivate = op.startsWith('private');
        await client.run(target, op, choose(rng, isPrivate ? privateItems : publicItems), choose(rng, publicItems));
      }
    } finally {
      await client.close();
    }
  };
  const skopeoLoop = async (): Promise<void> => {
    const rng = new Rng(seed, 'skopeo');
    const scratch = path.join(root, 'skopeo');
    await mkdir(scratch, { recursive: true });
    const proxies = targets.filter((t) => t.kind === 'proxy');
    while (Date.now() < deadline) {
      const target = rng.pick(proxies);
      const isPrivate = rng.chance(0.25);
      const access = isPrivate ? rng.chance(0.6) : false;
      await skopeoPull(target, choose(rng, isPrivate ? privateItems : publicItems), access, certDirs[target.config], scratch, ledger);
    }
  };
  await Promise.all([...Array.from({ length: NODE_CLIENTS }, (_, n) => nodeLoop(n)), skopeoLoop()]);
}

/**
 * After the load: waits for running fills to end, then checks what must hold at rest. No spool file left
 * (every fill ended, none orphaned), no live fill lock in the bucket, no multipart upload but those of
 * replicas that were killed (the lifecycle rule's), `regcache cache verify` finding only what the soak
 * damaged and clean on a second pass, and each store within CACHE_MAX_SIZE.
 */
async function quiesceAndCheck(local: Node, fleet: Fleet, s3Client: S3Client, events: FaultEvent[], log: (line: string) => void): Promise<InvariantResult[]> {
  const began = Date.now();
  const nodes = [local, ...fleet.replicas];
  const spools = async () => (await Promise.all(nodes.map(async (n) => (await n.spoolFiles()).map((f) => `${n.name}: ${f}`)))).flat();
  await waitFor(async () => (await spools()).length === 0, { timeoutMs: 90_000, what: 'spool files to go', intervalMs: 500 }).catch(() => undefined);
  const leftSpools = await spools();
  const spoolResult: InvariantResult = {
    name: 'no spool file left once every fill ended',
    passed: leftSpools.length === 0,
    checks: nodes.length,
    detail: leftSpools.join(', '),
  };

  // With every fill over, the checks that follow read different things and run side by side (the soak
  // runs alone: its wall time is the suite's); each says when it ended, for the next one who trims this.
  const timed = async <T>(what: string, check: () => Promise<T>): Promise<T> => {
    const result = await check();
    log(`soak: checked ${what} (${((Date.now() - began) / 1000).toFixed(1)} s after the load)`);
    return result;
  };
  // The bucket first settles for a lease and a probe period: fills whose replica was killed lapse, and what
  // a gateway stopped at the end left half done finishes or is aborted. A fleet verify run before that (CI,
  // seed 1079393262) found orphans on its second pass too: content such a fill completed between the passes.
  const bucketSettled = sleep(Math.max(FLEET_LEASE_MS + 1000, 6000));
  const [bucketRest, localVerify, fleetVerify, localBound, fleetBound] = await Promise.all([
    timed('fill locks and multipart uploads', () => bucketSettled.then(() => bucketAtRest(s3Client, events))),
    timed('cache verify (local)', () => verifyTwice(local, 'local', events)),
    timed('cache verify (fleet)', () => bucketSettled.then(() => verifyTwice(fleet.replicas[0]!, 'fleet', events))),
    timed('the local bound', () => localWithinBound(local)),
    timed('the bucket bound', () => fleetWithinBound(fleet, s3Client)),
  ]);
  return [spoolResult, ...bucketRest, localVerify, fleetVerify, localBound, fleetBound];
}

/**
 * No live fill lock once a lease passed with no fill running, and no multipart upload but those of a
 * replica killed (or stopped) while it filled, which the lifecycle rule reclaims: a failed fill's own
 * upload is aborted, after the bucket came back if it was down.
 */
async function bucketAtRest(s3Client: S3Client, events: FaultEvent[]): Promise<InvariantResult[]> {
  const lockKeys = [...(await listKeys(s3Client, BUCKET, PREFIX, 'fills/')).keys()];
  const live: string[] = [];
  // One GET each, a hundred or more of them.
  await eachAtOnce(lockKeys, 8, async (key) => {
    const out = await s3Client.send(new GetObjectCommand({ Bucket: BUCKET, Key: PREFIX + key })).catch(() => null); // deleted since the list: not live
    const body = out?.Body ? (JSON.parse(Buffer.from(await out.Body.transformToByteArray()).toString()) as { expires: number }) : null;
    if (body && body.expires > Date.now()) live.push(key);
  });
  const uploads = (await s3Client.send(new ListMultipartUploadsCommand({ Bucket: BUCKET, Prefix: PREFIX }))).Uploads ?? [];
  const stops = events.filter((e) => e.lane === 'fleet' && (e.kind === 'kill-replica' || e.kind === 'sigterm-restart') && !e.skipped);
  const hung = events.filter((e) => e.lane === 'fleet' && (e.kind === 'gateway-pause' || e.kind === 'gateway-stop') && !e.skipped);
  const unexplained = uploads.filter((u) => {
    const at = u.Initiated?.getTime() ?? 0;
    const byStop = stops.some((e) => at <= e.start + 1000);
    const byHang = hung.some((e) => at >= e.start - 15_000 && at <= e.end + 5000); // a create the gateway did but never answered
    return !byStop && !byHang;
  });
  return [
    {
      name: 'no live fill lock left in the bucket',
      passed: live.length === 0,
      checks: 1 + lockKeys.length,
      detail: `${lockKeys.length} lock objects, live: ${live.join(', ') || 'none'}`,
    },
    {
      name: 'no multipart upload left but those of replicas killed or stopped mid-fill (the lifecycle rule) or created unanswered by a hung gateway',
      passed: unexplained.length === 0,
      checks: 1 + uploads.length,
      detail: `${uploads.length} left, ${unexplained.length} unexplained${unexplained.length ? ': ' + unexplained.map((u) => `${u.Key} at ${u.Initiated?.toISOString()}`).join(', ') : ''}`,
    },
  ];
}

/** cache verify: the first pass may find only what the soak damaged (never re-read since); the second is clean. */
async function verifyTwice(node: Node, lane: 'local' | 'fleet', events: FaultEvent[]): Promise<InvariantResult> {
  const damaged = new Set(events.filter((e) => e.lane === lane && e.digest && (e.kind === 'flip-byte' || e.kind === 'truncate')).map((e) => e.digest!));
  const first = await node.cache<{ checked: number; corrupt: string[]; missing: string[]; orphans: number }>('verify');
  const second = await node.cache<{ checked: number; corrupt: string[]; missing: string[]; orphans: number }>('verify');
  const found = first.out ? [...first.out.corrupt, ...first.out.missing] : [];
  const stray = found.filter((d) => !damaged.has(d));
  const clean = second.code === 0 && second.out !== null && second.out.corrupt.length === 0 && second.out.missing.length === 0 && second.out.orphans === 0;
  return {
    name: `regcache cache verify (${lane}): finds only what the soak damaged, then clean`,
    passed: first.out !== null && stray.length === 0 && clean,
    checks: (first.out?.checked ?? 0) + (second.out?.checked ?? 0),
    detail: `first pass ${first.out ? `${first.out.checked} checked, ${first.out.corrupt.length} corrupt, ${first.out.missing.length} missing, ${first.out.orphans} orphans` : first.stderr}; damaged by the soak ${damaged.size}; not damaged by it: ${stray.join(', ') || 'none'}; second pass ${second.out ? `${second.out.checked} checked, ${second.out.corrupt.length} corrupt, ${second.out.missing.length} missing, ${second.out.orphans} orphans` : second.stderr}`,
  };
}

/** The local bound: the index's total, and the bytes on its disk. */
async function localWithinBound(local: Node): Promise<InvariantResult> {
  const du = await local.cache<{ totalBytes: number; maxBytes: number }>('du');
  const disk = await statfs(local.cacheDir);
  const used = (disk.blocks - disk.bfree) * disk.bsize;
  return {
    name: 'local store within CACHE_MAX_SIZE',
    passed: du.out !== null && du.out.totalBytes <= LOCAL_MAX_BYTES && used <= LOCAL_MAX_BYTES + 8 * 1024 * 1024,
    checks: 2,
    detail: `entries ${mib(du.out?.totalBytes ?? NaN)} MiB, disk used ${mib(used)} MiB (index and journal included), bound ${mib(LOCAL_MAX_BYTES)} MiB`,
  };
}

/** The fleet's bound: the entries' total once the sweeper ran, and the bucket's content once evicted bytes passed their grace. */
async function fleetWithinBound(fleet: Fleet, s3Client: S3Client): Promise<InvariantResult> {
  let contentBytes = Infinity;
  let fleetDu: { code: number; out: { totalBytes: number } | null; stderr: string } = { code: -1, out: null, stderr: '' };
  // The entries' total is a replica's view: it drops what another replica's sweep evicted at its next index
  // refresh (every 30 s, REFRESH_MS), so it is waited for as the bucket's content is (seen: entries 45.9 MiB
  // on replica 0 while the bucket held 33.8 MiB of content, its last refresh older than the last sweep).
  await waitFor(
    async () => {
      contentBytes = [...(await listKeys(s3Client, BUCKET, PREFIX, 'content/')).values()].reduce((a, b) => a + b, 0);
      if (contentBytes > FLEET_MAX_BYTES) return false;
      fleetDu = await fleet.replicas[0]!.cache<{ totalBytes: number }>('du');
      return fleetDu.out !== null && fleetDu.out.totalBytes <= FLEET_MAX_BYTES;
    },
    { timeoutMs: FLEET_GRACE_MS + 6 * FLEET_SWEEP_MS + REFRESH_MS + 20_000, what: 'the bucket within its bound', intervalMs: 1000 },
  ).catch(() => undefined); // not within it: the result below says by how much
  return {
    name: 'fleet bucket within CACHE_MAX_SIZE (once evicted bytes passed S3_EVICT_GRACE)',
    passed: contentBytes <= FLEET_MAX_BYTES && fleetDu.out !== null && fleetDu.out.totalBytes <= FLEET_MAX_BYTES,
    checks: 2,
    detail: `content objects ${mib(contentBytes)} MiB, entries ${mib(fleetDu.out?.totalBytes ?? NaN)} MiB, bound ${mib(FLEET_MAX_BYTES)} MiB`,
  };
}

/**
 * Each blob fetched upstream at most once per fill attempt: per digest, the complete-body GETs (200, no
 * Range) are at most the fills the configuration logged (committed or failed), plus its answers served
 * uncached (BYPASS), plus the GETs in flight when one of its processes was killed or stopped (no line).
 * And no two such GETs of one digest overlap unless a fault explains it (a killed leader, a hung bucket
 * whose lease lapsed): two overlapping leaders are the bug the fill locks exist to prevent.
 */
async function upstreamFetches(config: 'local' | 'fleet', nodes: Node[], upstream: FaultUpstream, events: FaultEvent[]): Promise<InvariantResult> {
  const lines = (await Promise.all(nodes.flatMap((n) => n.runs.map((r) => r.logs())))).flat();
  const attempts = new Map<string, number>();
  for (const l of lines) {
    const isFill = l.msg === 'fill committed' || l.msg.startsWith('fill failed');
    const isBypass = l.msg === 'request' && l.cache === 'BYPASS';
    if ((isFill || isBypass) && typeof l.digest === 'string') attempts.set(l.digest, (attempts.get(l.digest) ?? 0) + 1);
  }
  const kills = events.filter(
    (e) => e.lane === config && !e.skipped && ['kill-worker', 'stop-worker', 'kill-primary', 'sigterm-restart', 'kill-replica'].includes(e.kind),
  );
  // What lets two GETs of one blob overlap: a leader killed or stopped (its lease lapses, or its fill dies
  // with it), a hung bucket (leases lapse), a failed fill (its waiters fetch on their own), a full disk
  // (answers served uncached, beside a fill).
  const excusing = [
    'kill-worker',
    'stop-worker',
    'kill-primary',
    'sigterm-restart',
    'kill-replica',
    'gateway-pause',
    'gateway-stop',
    'upstream-reset',
    'upstream-error',
    'disk-full',
  ];
  const excuses = events.filter((e) => !e.skipped && (e.lane === config || e.lane === 'upstream') && excusing.includes(e.kind));
  const full = upstream.gets.filter((g) => g.kind === 'blob' && g.status === 200 && !g.range);
  const byDigest = new Map<string, typeof full>();
  for (const g of full) byDigest.set(g.digest, [...(byDigest.get(g.digest) ?? []), g]);
  const over: string[] = [];
  const overlaps: string[] = [];
  for (const [digest, gets] of byDigest) {
    // A fill lasts from its GET's start to its commit, which may be well after its last byte (parts, the
    // entry; longer with the bucket slow or hung): a kill in that span leaves no line for it.
    const inFlightAtKill = gets.filter((g) =>
      kills.some((k) => {
        const struck = k.at ?? k.start;
        return g.start <= struck + 500 && (g.end === 0 || struck <= g.end + FILL_COMMIT_MS);
      }),
    ).length;
    const allowed = (attempts.get(digest) ?? 0) + inFlightAtKill;
    if (gets.length > allowed) over.push(`${digest.slice(7, 19)}: ${gets.length} GETs, ${allowed} attempts`);
    const sorted = [...gets].sort((a, b) => a.start - b.start);
    for (let i = 1; i < sorted.length; i++) {
      const [a, b] = [sorted[i - 1]!, sorted[i]!];
      const aEnd = a.end || Date.now();
      if (b.start >= aEnd) continue;
      const excused = excuses.some((e) => e.start <= aEnd && e.end + 2 * FLEET_LEASE_MS >= a.start);
      if (!excused) overlaps.push(`${digest.slice(7, 19)} at ${new Date(b.start).toISOString()}`);
    }
  }
  return {
    name: `each blob fetched upstream at most once per fill attempt (${config}), and never by two leaders at once unless a fault explains it`,
    passed: over.length === 0 && overlaps.length === 0,
    checks: byDigest.size,
    detail: `${full.length} complete upstream GETs of ${byDigest.size} blobs; over: ${over.join(', ') || 'none'}; unexplained overlaps: ${overlaps.join(', ') || 'none'}`,
  };
}

/**
 * No regcache process ended unless the soak ended it: every tree that exited was killed or stopped by a
 * fault, and the workers that exited (the primary logs each) number at most the workers killed or stopped;
 * and a worker the soak stopped (alive, answering nothing) was killed by its primary's watchdog in time.
 */
async function noCrash(nodes: Node[], events: FaultEvent[]): Promise<InvariantResult> {
  const crashes = nodes.flatMap((n) => n.crashes);
  const lines = (await Promise.all(nodes.flatMap((n) => n.runs.map((r) => r.logs())))).flat();
  const exitLines = lines.filter((l) => l.msg.startsWith('worker exited'));
  const workerExits = exitLines.length;
  const kills = events.filter((e) => (e.kind === 'kill-worker' || e.kind === 'stop-worker') && !e.skipped);
  const workerKills = kills.length;
  const stops = kills.filter((e) => e.kind === 'stop-worker');
  const stallLimit = LOCAL_WORKER_STALL_MS + WATCHDOG_SLACK_MS;
  const lateStops = stops.filter((e) => e.goneAfterMs === undefined || e.goneAfterMs > stallLimit);
  // With the stack (the 60-minute soak of 2026-12-05 saw one worker "crashed: Request aborted" and no more).
  const fatal = lines
    .filter((l) => l.level === 'fatal')
    .map(
      (l) =>
        `${l.msg}${l.error ? `: ${String(l.error)}` : ''}${
          typeof l.stack === 'string'
            ? ` (${l.stack
                .split('\n')
                .slice(1, 8)
                .map((f) => f.trim())
                .join(' < ')})`
            : ''
        }`,
    );
  return {
    name: `no regcache process ended unless the soak ended it (no crash, no fatal line); a stopped worker killed by its primary within WORKER_STALL_TIMEOUT + ${WATCHDOG_SLACK_MS / 1000} s`,
    passed: crashes.length === 0 && workerExits <= workerKills && fatal.length === 0 && lateStops.length === 0,
    checks: nodes.reduce((n, node) => n + node.runs.length, 0) + workerExits,
    detail: `${crashes.join('; ') || 'no tree exited unasked'}; workers exited ${workerExits} (${formatCounts(countBy(exitLines, (l) => (l.signal ? `signal ${String(l.signal)}` : `code ${String(l.code)}`)))}), killed or stopped ${workerKills}; stopped ones gone after ${stops.map((e) => (e.goneAfterMs === undefined ? 'never' : `${e.goneAfterMs} ms`)).join(', ') || '-'}; fatal lines: ${fatal.join('; ') || 'none'}`,
  };
}

/** Log lines at warn and above, by message: what regcache said while it was being hurt (report only). */
export async function loudLines(nodes: Node[]): Promise<Record<string, number>> {
  const lines = (await Promise.all(nodes.flatMap((n) => n.runs.map((r) => r.logs())))).flat();
  return countBy(
    lines.filter((l) => l.level === 'warn' || l.level === 'error' || l.level === 'fatal'),
    (l) => `${l.level}: ${l.msg}`,
  );
}

async function processes(local: Node, fleet: Fleet, hub: TokenAuthUpstream): Promise<{ role: string; pid: number }[]> {
  const out: { role: string; pid: number }[] = [];
  if (local.current.daemon.isRunning()) {
    const { primary, workers } = await local.pids().catch(() => ({ primary: local.current.daemon.pid, workers: [] as number[] }));
    out.push({ role: 'local primary', pid: primary }, ...workers.map((pid) => ({ role: 'local worker', pid })));
  }
  for (const r of fleet.replicas) if (r.current.daemon.isRunning()) out.push({ role: r.name, pid: r.current.daemon.pid });
  out.push(
    { role: 'haproxy', pid: fleet.balancer.daemon.pid },
    { role: 'docker-registry', pid: hub.upstream.registry.pid },
    { role: 'soak (clients)', pid: process.pid },
  );
  return out;
}

function resourcePlot(monitor: Monitor): Buffer {
  const series = [...monitor.series.values()];
  const label = (s: (typeof series)[number]) => `${s.role} ${s.pid}`;
  return plot(
    [
      {
        title: 'RSS',
        yUnit: 'MIB',
        lines: series.map((s) => ({ label: label(s), points: s.samples.map((x) => ({ x: x.t / 1000, y: x.rssBytes / 2 ** 20 })) })),
      },
      { title: 'OPEN DESCRIPTORS', yUnit: 'FDS', lines: series.map((s) => ({ label: label(s), points: s.samples.map((x) => ({ x: x.t / 1000, y: x.fds })) })) },
    ],
    'S',
  );
}

export function reportMarkdown(r: SoakReport): string {
  const table = formatCounts;
  const judged = r.resources.filter((x) => x.judged);
  return [
    `Soak of ${r.minutes} min (seed ${r.seed}, \`SOAK_SEED=${r.seed} SOAK_MINUTES=${r.minutes} npm run soak\` replays it), ${r.wallSeconds} s wall in all.`,
    '',
    `- Catalogue: ${r.catalogue.images} images (${r.catalogue.privateImages} private), ${r.catalogue.digests} digests, ${mib(r.catalogue.bytes)} MiB.`,
    `- Requests: ${r.requests} (${mib(r.bytes)} MiB to clients); by target: ${table(r.byTarget)}; by operation: ${table(r.byOp)}.`,
    `- Time per request, median / 95th percentile (ms): ${Object.entries(r.latency)
      .map(([op, l]) => `${op} ${l.p50} / ${l.p95}`)
      .join(', ')}.`,
    `- Upstream content GETs: local ${r.upstreamGets.local}, fleet ${r.upstreamGets.fleet}.`,
    `- Faults injected: ${table(r.faults)}.`,
    `- Errors seen by clients (allowed; a wrong body is not): ${table(r.errors)}.`,
    `- regcache's warnings and errors: ${table(r.logged)}.`,
    `- Resources (${judged.length} processes judged of ${r.resources.length}; warm-up to end, per role): ${resourceSummary(judged)}.`,
    '',
    '| Invariant | Checks | Result |',
    '| --- | --- | --- |',
    ...r.invariants.map((i) => `| ${i.name} | ${i.checks} | ${i.passed ? 'held' : `**failed**: ${i.detail.replace(/\|/g, '/')}`} |`),
    '',
  ].join('\n');
}

/** Per role: how many processes, the RSS range, and the largest growth of RSS and descriptors of any one. */
function resourceSummary(judged: SoakReport['resources']): string {
  const roles = new Map<string, SoakReport['resources']>();
  for (const x of judged) roles.set(x.role, [...(roles.get(x.role) ?? []), x]);
  return (
    [...roles]
      .map(([role, xs]) => {
        const growth = xs.map((x) => x.rssEnd - x.rssWarm).sort((a, b) => a - b);
        const fds = Math.max(...xs.map((x) => x.fdsEnd - x.fdsWarm));
        return (
          `${role} x${xs.length} RSS ${mib(Math.min(...xs.map((x) => x.rssWarm)))}-${mib(Math.max(...xs.map((x) => x.rssEnd)))} MiB, ` +
          `growth median ${mib(growth[Math.floor(growth.length / 2)]!)} / max ${mib(growth.at(-1)!)} MiB, descriptors growth max ${fds}`
        );
      })
      .join('; ') || 'none'
  );
}

function latencies(ledger: Ledger): Record<string, { p50: number; p95: number }> {
  const byOp = new Map<string, number[]>();
  for (const o of ledger.outcomes) byOp.set(o.op, [...(byOp.get(o.op) ?? []), o.ms]);
  const at = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return Object.fromEntries(
    [...byOp].map(([op, ms]) => {
      const sorted = ms.sort((a, b) => a - b);
      return [op, { p50: at(sorted, 0.5), p95: at(sorted, 0.95) }];
    }),
  );
}

function violations(ledger: Ledger, kind: string): string {
  const found = ledger.violations.filter((v) => v.invariant === kind);
  return found.length === 0
    ? 'none'
    : found
        .slice(0, 10)
        .map((v) => `${v.target} ${v.op}: ${v.detail}`)
        .join('; ');
}

async function certDir(root: string, name: string, caFile: string): Promise<string> {
  const dir = path.join(root, `certs-${name}`);
  await mkdir(dir, { recursive: true });
  await copyFile(caFile, path.join(dir, 'ca.crt'));
  return dir;
}

/** "a 3, b 1": counts, largest first. */
function formatCounts(rows: Record<string, number>): string {
  return (
    Object.entries(rows)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none'
  );
}

function countBy<T>(items: T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const i of items) out[key(i)] = (out[key(i)] ?? 0) + 1;
  return out;
}

function mib(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

function secondsSince(t: number): number {
  return Math.round((Date.now() - t) / 1000);
}
