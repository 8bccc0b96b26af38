// Part 2 of the load bench: many concurrent connections through regcache's proxy port at once, three
// kinds mixed, for a bounded time and request count:
//   HIT     keep-alive CONNECT + TLS to the allowlisted registry, GETs of cached manifests/small blobs
//   MISS    keep-alive CONNECT + TLS to an allowlisted fake registry, each GET a digest never seen before
//   tunnel  CONNECT to a host off the allowlist (tunnelled byte for byte), TLS, one GET, close; per request
// Every body is hashed against its digest; any non-200, reset, wrong byte or timeout is an error. Then
// regcache's peak RSS, CPU, open descriptors, health and log are read.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { startRegcache, type Regcache } from '../../test/harness/regcache.js';
import { sleep } from '../../test/harness/proc.js';
import { ProxyClient } from '../../test/support/proxy-client.js';
import { treeCpuSeconds, treeMemoryMb, treeOpenFds } from '../measure.js';
import { REGISTRY_HOST, REPO, type BenchSetup } from './bench-setup.js';
import { expectDigest } from './digest-check.js';
import { runLoad, type ClassPlan, type ClassResult, type PlannedRequest } from './load-plan.js';
import { startMissUpstream } from './miss-upstream.js';
import { openFilesLimit } from './open-files.js';
import { checkHealth, type RegcacheHealth } from './regcache-health.js';
import { startTunnelTarget } from './tunnel-target.js';

const MISS_HOST = 'miss.bench'; // allowlisted: regcache caches what it fetches from there
const TUNNEL_HOST = 'tunnel.bench'; // not allowlisted: tunnelled
const MISS_REPO = 'bench/miss';
const MISS_BLOB_BYTES = { min: 1000, max: 8000 };
const TUNNEL_BODY_BYTES = 2000;

export interface MixedOptions {
  seconds: number;
  connections: number;
  shares: { hit: number; miss: number; tunnel: number }; // of the connections
  maxRequests: number;
  missBlobs: number; // distinct digests the upstream holds: at most this many MISSes
  rssBoundMb: number;
  timeoutMs: number;
}

export interface Sample {
  s: number; // seconds since the load started
  rssMb: number;
  fds: number;
}

export interface MixedClass extends ClassResult {
  requestsPerSecond: number;
}

export interface MixedResult {
  options: MixedOptions;
  hitObjects: number; // distinct cached objects the HIT class cycles through
  setupWallSeconds: number; // opening the keep-alive connections, before the timed phase
  wallSeconds: number;
  classes: MixedClass[];
  total: { requests: number; errors: number; requestsPerSecond: number };
  generator: { cpuSeconds: number; openFilesLimit: number };
  regcache: {
    idleRssMb: number;
    peakRssMb: number; // VmHWM over the whole process life (priming included)
    rssAfterMb: number;
    cpuSeconds: number; // during the load
    openFilesLimit: number;
    maxOpenFds: number; // sampled every second during the load
    samples: Sample[];
    health: RegcacheHealth;
  };
  upstream: { missGets: number; tunnelGets: number };
  consistency: string[]; // disagreements between what the generator saw and what regcache/upstreams logged
  rssVerdict: 'PASS' | 'FAIL';
}

/** Both the generator and regcache hold about one descriptor per connection, regcache more (upstream sockets, files). */
export const openFilesNeeded = (connections: number): number => 4 * connections;

export async function benchMixedLoad(s: BenchSetup, opts: MixedOptions): Promise<MixedResult> {
  const dir = path.join(s.root, 'mixed');
  const missCert = await s.ca.issue([MISS_HOST], dir, 'miss');
  const tunnelCert = await s.ca.issue([TUNNEL_HOST], dir, 'tunnel');
  process.stderr.write(`mixed load: ${opts.missBlobs} blobs for the MISS upstream...\n`);
  const missUpstream = await startMissUpstream(missCert, opts.missBlobs, MISS_BLOB_BYTES);
  const tunnelTarget = await startTunnelTarget(tunnelCert, TUNNEL_BODY_BYTES);
  let rc: Regcache | null = null;
  try {
    rc = await startRegcache({
      dir: path.join(dir, 'regcache'),
      env: {
        ...s.regcacheEnv,
        ADDITIONAL_REGISTRIES: `${REGISTRY_HOST} ${MISS_HOST}`,
        CONNECT_TO: [
          `${REGISTRY_HOST}:443:127.0.0.1:${s.registry.port}`,
          `${MISS_HOST}:443:127.0.0.1:${missUpstream.registry.port}`,
          `${TUNNEL_HOST}:443:127.0.0.1:${tunnelTarget.port}`,
        ].join(' '),
      },
    });
    return await run(s, opts, rc, missUpstream.digests, tunnelTarget.digest, () => ({
      missGets: missUpstream.registry.seen.filter((r) => r.method === 'GET').length,
      tunnelGets: tunnelTarget.requests(),
    }));
  } finally {
    await rc?.stop();
    await missUpstream.close();
    await tunnelTarget.close();
  }
}

async function run(
  s: BenchSetup,
  opts: MixedOptions,
  rc: Regcache,
  missDigests: string[],
  tunnelDigest: string,
  upstreamCounts: () => MixedResult['upstream'],
): Promise<MixedResult> {
  const pid = rc.daemon.pid;
  const needed = openFilesNeeded(opts.connections);
  const limits = { generator: await openFilesLimit('self'), regcache: await openFilesLimit(pid) };
  if (limits.generator < needed || limits.regcache < needed) {
    throw new Error(
      `open files limit too low for ${opts.connections} connections: need ${needed}, bench/generator have ${limits.generator}, regcache ${limits.regcache} (bench/run.sh raises it as root; or run \`ulimit -n ${needed}\` first: node raises its soft limit to the hard one)`,
    );
  }

  // The HIT set: the image's manifest and blobs, fetched once through regcache (MISSes) and committed.
  const hitSet: PlannedRequest[] = [
    { path: `/v2/${REPO}/manifests/${s.image.manifestDigest}`, digest: s.image.manifestDigest },
    ...[s.image.config, ...s.image.layers].map((b) => ({ path: `/v2/${REPO}/blobs/${b.digest}`, digest: b.digest })),
  ];
  const headers = { accept: s.image.manifestMediaType };
  const proxied = new ProxyClient(rc.proxyUrl, rc.caFile);
  try {
    for (const r of hitSet) await expectDigest(`https://${REGISTRY_HOST}${r.path}`, r.digest, headers, proxied.agent);
  } finally {
    await proxied.close();
  }
  for (const r of hitSet) await rc.waitForLog((l) => l.msg === 'fill committed' && l.digest === r.digest, `${r.digest} to be committed`);

  const regcacheCa = await readFile(rc.caFile, 'utf8');
  const split = splitConnections(opts);
  const classes: ClassPlan[] = [
    {
      name: 'HIT',
      connections: split.hit,
      endpoint: { port: rc.port, connect: `${REGISTRY_HOST}:443`, servername: REGISTRY_HOST, ca: regcacheCa },
      keepAlive: true,
      headers,
      requests: hitSet,
      once: false,
    },
    {
      name: 'MISS',
      connections: split.miss,
      endpoint: { port: rc.port, connect: `${MISS_HOST}:443`, servername: MISS_HOST, ca: regcacheCa },
      keepAlive: true,
      headers: {},
      requests: missDigests.map((digest) => ({ path: `/v2/${MISS_REPO}/blobs/${digest}`, digest })),
      once: true,
    },
    {
      name: 'tunnel',
      connections: split.tunnel,
      endpoint: { port: rc.port, connect: `${TUNNEL_HOST}:443`, servername: TUNNEL_HOST, ca: s.ca.certPem },
      keepAlive: false,
      headers: {},
      requests: [{ path: '/hello', digest: tunnelDigest }],
      once: false,
    },
  ];

  // regcache's whole process tree: with WORKERS > 1 the primary and its workers.
  const idleRssMb = (await treeMemoryMb(pid))?.now ?? NaN;
  const upstreamBefore = upstreamCounts();
  let sampling = true;
  const samples: Sample[] = []; // each second: whether RSS levels off, and how many descriptors are open
  const t0 = Date.now();
  const sampler = (async () => {
    while (sampling) {
      const fds = await treeOpenFds(pid);
      samples.push({ s: Math.round((Date.now() - t0) / 1000), rssMb: Math.round(((await treeMemoryMb(pid))?.now ?? NaN) * 10) / 10, fds });
      await sleep(1000);
    }
  })();
  process.stderr.write(`mixed load: ${opts.connections} connections (HIT ${split.hit}, MISS ${split.miss}, tunnel ${split.tunnel}) for ${opts.seconds} s...\n`);
  const cpu0 = (await treeCpuSeconds(pid)) ?? NaN;
  let load;
  try {
    load = await runLoad({ classes, durationMs: opts.seconds * 1000, maxRequests: opts.maxRequests, timeoutMs: opts.timeoutMs });
  } finally {
    sampling = false;
    await sampler;
  }
  const cpu1 = (await treeCpuSeconds(pid)) ?? NaN;
  const mem = await treeMemoryMb(pid);
  const health = await checkHealth(rc);
  const upstreamAfter = upstreamCounts();
  const upstream = { missGets: upstreamAfter.missGets - upstreamBefore.missGets, tunnelGets: upstreamAfter.tunnelGets - upstreamBefore.tunnelGets };

  const wallSeconds = load.wallMs / 1000;
  const mixed: MixedClass[] = load.classes.map((c) => ({ ...c, requestsPerSecond: c.requests / wallSeconds }));
  const byName = (name: string): MixedClass => mixed.find((c) => c.name === name)!;
  const total = { requests: mixed.reduce((n, c) => n + c.requests, 0), errors: mixed.reduce((n, c) => n + c.errors, 0), requestsPerSecond: 0 };
  total.requestsPerSecond = total.requests / wallSeconds;

  // With no errors, regcache's own log and the upstreams must agree with the generator's counts.
  const consistency: string[] = [];
  if (total.errors === 0) {
    const logged = (cache: string): number => (health.requestLines[`${cache} 200`] ?? 0) - (cache === 'MISS' ? hitSet.length : 0); // the priming MISSes
    const expect = (what: string, got: number, want: number): void => void (got !== want && consistency.push(`${what}: ${got}, expected ${want}`));
    expect('regcache logged HIT 200', logged('HIT'), byName('HIT').requests);
    expect('regcache logged MISS 200', logged('MISS'), byName('MISS').requests);
    const others = Object.entries(health.requestLines).filter(([k]) => !['HIT 200', 'MISS 200'].includes(k) && !k.startsWith('ADMIN ')); // ADMIN: start-up warm-up, /healthz
    expect(
      `request lines other than HIT/MISS 200 (${others.map(([k, v]) => `${k} x${v}`).join(', ')})`,
      others.reduce((n, [, v]) => n + v, 0),
      0,
    );
    expect('regcache logged tunnels', health.tunnelsClosed, byName('tunnel').requests);
    expect('upstream GETs for MISSes (one per digest)', upstream.missGets, byName('MISS').requests);
    expect('tunnel target GETs', upstream.tunnelGets, byName('tunnel').requests);
  }

  const peakRssMb = mem?.peak ?? NaN;
  return {
    options: opts,
    hitObjects: hitSet.length,
    setupWallSeconds: load.setupWallMs / 1000,
    wallSeconds,
    classes: mixed,
    total,
    generator: { cpuSeconds: load.cpuSeconds, openFilesLimit: load.openFilesLimit },
    regcache: {
      idleRssMb,
      peakRssMb,
      rssAfterMb: mem?.now ?? NaN,
      cpuSeconds: cpu1 - cpu0,
      openFilesLimit: limits.regcache,
      maxOpenFds: Math.max(0, ...samples.map((x) => x.fds)),
      samples,
      health,
    },
    upstream,
    consistency,
    rssVerdict: peakRssMb <= opts.rssBoundMb ? 'PASS' : 'FAIL',
  };
}

/** Connections per class by their shares; rounding leftovers go to HIT. */
function splitConnections(opts: MixedOptions): { hit: number; miss: number; tunnel: number } {
  const sum = opts.shares.hit + opts.shares.miss + opts.shares.tunnel;
  const miss = Math.round((opts.connections * opts.shares.miss) / sum);
  const tunnel = Math.round((opts.connections * opts.shares.tunnel) / sum);
  return { hit: opts.connections - miss - tunnel, miss, tunnel };
}
