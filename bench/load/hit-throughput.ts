// Part 1 of the load bench: requests/s and latency of one small cached manifest fetched by digest, under
// a closed loop of keep-alive connections, for each way of serving it, one after another in one run:
//   registry-http     docker-registry from its own disk, plain HTTP, wrk        (baseline)
//   mirror-http       regcache's mirror port (HIT), plain HTTP, wrk
//   pull-through-http docker-registry in pull-through mode (cached), plain HTTP, wrk
//   registry-tls      docker-registry over TLS, the bench's node generator      (baseline of the next)
//   intercepted-tls   regcache's proxy port: CONNECT + TLS (HIT), the node generator
// wrk cannot speak through a CONNECT proxy, hence the node generator for the intercepted path. Each
// server's CPU is read from /proc; the clients run on the same 2 cores and compete with it.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Agent } from 'undici';
import { freePort } from '../../test/harness/ports.js';
import { startRegcache, type Regcache } from '../../test/harness/regcache.js';
import { ProxyClient } from '../../test/support/proxy-client.js';
import { cpuSeconds, exitedChildrenCpuSeconds } from '../measure.js';
import { REGISTRY_HOST, REPO, type BenchSetup } from './bench-setup.js';
import { expectDigest } from './digest-check.js';
import type { Endpoint } from './http1-connection.js';
import { runLoad } from './load-plan.js';
import { startRegistryServer, type RegistryServer } from './registry-server.js';
import { runWrk } from './wrk.js';

export interface HitOptions {
  seconds: number;
  warmupSeconds: number;
  connections: number;
  wrkThreads: number;
}

export const HIT_ROWS = ['registry-http', 'mirror-http', 'pull-through-http', 'registry-tls', 'intercepted-tls'] as const;
export type HitRowId = (typeof HIT_ROWS)[number];

export const HIT_ROW_LABEL: Record<HitRowId, string> = {
  'registry-http': 'docker-registry, own disk (baseline)',
  'mirror-http': 'regcache mirror port, HIT',
  'pull-through-http': 'docker-registry pull-through, cached',
  'registry-tls': 'docker-registry, own disk, TLS (baseline)',
  'intercepted-tls': 'regcache CONNECT + TLS, HIT',
};

/** Which row each row is compared with. */
export const HIT_BASELINE: Record<HitRowId, HitRowId> = {
  'registry-http': 'registry-http',
  'mirror-http': 'registry-http',
  'pull-through-http': 'registry-http',
  'registry-tls': 'registry-tls',
  'intercepted-tls': 'registry-tls',
};

export interface HitRow {
  id: HitRowId;
  client: string;
  requests: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p99: number };
  errors: number;
  errorDetail: string | null;
  serverCpuSeconds: number;
  clientCpuSeconds: number;
  ratioToBaseline: number; // requests/s over the baseline's
  p99RatioToBaseline: number;
  regcache: boolean; // a regcache row: its errors fail the bench
}

export interface HitResult {
  manifest: { digest: string; bytes: number; mediaType: string };
  options: HitOptions;
  rows: HitRow[];
  skipped: Partial<Record<HitRowId, string>>; // rows that could not be measured, and why
  regcacheLog: Record<string, number>; // "<cache> <status>" of every manifest request regcache logged
}

/** A row's figures, before it is set beside its baseline. */
export type Measured = Omit<HitRow, 'id' | 'ratioToBaseline' | 'p99RatioToBaseline' | 'regcache'>;

/** What a row fetches over and over. */
export interface HitTarget {
  path: string;
  digest: string;
  headers: Record<string, string>;
}

/** wrk on one URL: a warm-up, then the timed run; `serverCpu` reads the server's CPU seconds (null: exited). */
export async function wrkRow(
  id: string,
  url: string,
  headers: Record<string, string>,
  opts: HitOptions,
  serverCpu: () => Promise<number | null>,
): Promise<Measured> {
  const wrk = { url, headers, threads: opts.wrkThreads, connections: opts.connections };
  await runWrk({ ...wrk, seconds: opts.warmupSeconds });
  const [server0, client0] = [await serverCpu(), await exitedChildrenCpuSeconds()];
  const r = await runWrk({ ...wrk, seconds: opts.seconds });
  const [server1, client1] = [await serverCpu(), await exitedChildrenCpuSeconds()];
  if (server1 === null || server0 === null) throw new Error(`${id}: the server exited during the run`);
  const detail = r.errors > 0 ? `socket errors ${JSON.stringify(r.socketErrors)}, non-2xx/3xx ${r.non2xx3xx}` : null;
  return {
    client: `wrk -t${opts.wrkThreads} -c${opts.connections}`,
    requests: r.requests,
    requestsPerSecond: r.requestsPerSecond,
    latencyMs: { p50: r.latencyMs.p50, p99: r.latencyMs.p99 },
    errors: r.errors,
    errorDetail: detail,
    serverCpuSeconds: server1 - server0,
    clientCpuSeconds: client1 - client0,
  };
}

/** The bench's node generator (TLS, through CONNECT when the endpoint says so), keep-alive connections. */
export async function nodeRow(id: string, endpoint: Endpoint, target: HitTarget, opts: HitOptions, serverCpu: () => Promise<number | null>): Promise<Measured> {
  const plan = (seconds: number) => ({
    classes: [
      {
        name: id,
        connections: opts.connections,
        endpoint,
        keepAlive: true,
        headers: target.headers,
        requests: [{ path: target.path, digest: target.digest }],
        once: false,
      },
    ],
    durationMs: seconds * 1000,
    maxRequests: Number.MAX_SAFE_INTEGER,
    timeoutMs: 10_000,
  });
  await runLoad(plan(opts.warmupSeconds));
  const server0 = await serverCpu();
  const r = await runLoad(plan(opts.seconds));
  const server1 = await serverCpu();
  if (server1 === null || server0 === null) throw new Error(`${id}: the server exited during the run`);
  const c = r.classes[0]!;
  return {
    client: `node, ${opts.connections} keep-alive conns`,
    requests: c.requests,
    requestsPerSecond: c.requests / (r.wallMs / 1000),
    latencyMs: { p50: c.latencyMs.p50, p99: c.latencyMs.p99 },
    errors: c.errors,
    errorDetail: c.errors > 0 ? `${JSON.stringify(c.errorsByKind)}: ${c.errorSamples.join('; ')}` : null,
    serverCpuSeconds: server1 - server0,
    clientCpuSeconds: r.cpuSeconds,
  };
}

/** Starts the servers of part 1, measures every row, and stops them again whatever happens. */
export async function benchHitThroughput(s: BenchSetup, opts: HitOptions): Promise<HitResult> {
  const stops: (() => Promise<void>)[] = [];
  try {
    return await measureRows(s, opts, (stop) => stops.push(stop));
  } finally {
    await Promise.all(stops.map((stop) => stop()));
  }
}

async function measureRows(s: BenchSetup, opts: HitOptions, track: (stop: () => Promise<void>) => void): Promise<HitResult> {
  const digest = s.image.manifestDigest;
  const manifestPath = `/v2/${REPO}/manifests/${digest}`;
  const headers = { accept: s.image.manifestMediaType };
  const dir = (name: string): string => path.join(s.root, 'hit', name);
  const storageDir = s.registry.storageDir;

  const servers: Partial<Record<HitRowId, RegistryServer>> = {};
  servers['registry-http'] = await startRegistryServer({ dir: dir('registry-http'), storageDir });
  track(() => servers['registry-http']!.stop());
  servers['registry-tls'] = await startRegistryServer({ dir: dir('registry-tls'), storageDir, tls: { ...s.registryCert, caFile: s.ca.certFile } });
  track(() => servers['registry-tls']!.stop());
  const skipped: HitResult['skipped'] = {};
  try {
    servers['pull-through-http'] = await startRegistryServer({
      dir: dir('pull-through-http'),
      storageDir: dir('pull-through-storage'),
      pullThrough: { remoteUrl: s.registry.url, caFile: s.ca.certFile },
    });
    track(() => servers['pull-through-http']!.stop());
  } catch (err) {
    skipped['pull-through-http'] = (err as Error).message.split('\n')[0]!;
  }

  const rc: Regcache = await startRegcache({
    dir: dir('regcache'),
    env: {
      ...s.regcacheEnv,
      ADDITIONAL_REGISTRIES: REGISTRY_HOST,
      CONNECT_TO: `${REGISTRY_HOST}:443:127.0.0.1:${s.registry.port}`,
      MIRROR_PORT: String(await freePort()),
    },
  });
  track(() => rc.stop());
  const mirrorUrl = `http://127.0.0.1:${rc.mirrorPort}${manifestPath}?ns=${REGISTRY_HOST}`;

  // Prime and check: every server answers the same bytes; regcache's first GET is its only MISS.
  const testCa = new Agent({ connect: { ca: s.ca.certPem } });
  const proxied = new ProxyClient(rc.proxyUrl, rc.caFile);
  try {
    await expectDigest(servers['registry-http'].url + manifestPath, digest, headers);
    await expectDigest(servers['registry-tls'].url + manifestPath, digest, headers, testCa);
    await expectDigest(mirrorUrl, digest, headers);
    await expectDigest(`https://${REGISTRY_HOST}${manifestPath}`, digest, headers, proxied.agent);
    if (servers['pull-through-http']) {
      await expectDigest(servers['pull-through-http'].url + manifestPath, digest, headers).catch((err: Error) => {
        skipped['pull-through-http'] = err.message;
      });
    }
  } finally {
    await testCa.close();
    await proxied.close();
  }

  const registryPort = Number(new URL(servers['registry-tls'].url).port);
  const regcacheCa = await readFile(rc.caFile, 'utf8');
  const measured: Partial<Record<HitRowId, Measured>> = {};
  for (const id of HIT_ROWS) {
    if (skipped[id]) continue;
    process.stderr.write(`HIT throughput: ${id}...\n`);
    const cpuOf = (pid: number) => () => cpuSeconds(pid);
    const manifest = { path: manifestPath, digest, headers };
    if (id === 'registry-http') measured[id] = await wrkRow(id, servers[id]!.url + manifestPath, headers, opts, cpuOf(servers[id]!.daemon.pid));
    else if (id === 'pull-through-http') measured[id] = await wrkRow(id, servers[id]!.url + manifestPath, headers, opts, cpuOf(servers[id]!.daemon.pid));
    else if (id === 'mirror-http') measured[id] = await wrkRow(id, mirrorUrl, headers, opts, cpuOf(rc.daemon.pid));
    else if (id === 'registry-tls')
      measured[id] = await nodeRow(id, { port: registryPort, servername: REGISTRY_HOST, ca: s.ca.certPem }, manifest, opts, cpuOf(servers[id]!.daemon.pid));
    else
      measured[id] = await nodeRow(
        id,
        { port: rc.port, connect: `${REGISTRY_HOST}:443`, servername: REGISTRY_HOST, ca: regcacheCa },
        manifest,
        opts,
        cpuOf(rc.daemon.pid),
      );
  }

  const regcacheLog: Record<string, number> = {};
  for (const line of await rc.requests()) {
    if (line.digest !== digest) continue;
    const key = `${line.cache} ${line.status}`;
    regcacheLog[key] = (regcacheLog[key] ?? 0) + 1;
  }
  if (!rc.daemon.isRunning()) throw new Error(`regcache exited during the HIT runs; log: ${rc.logFile}`);

  const rows: HitRow[] = [];
  for (const id of HIT_ROWS) {
    const m = measured[id];
    if (!m) continue;
    const base = measured[HIT_BASELINE[id]];
    rows.push({
      id,
      ...m,
      ratioToBaseline: base ? m.requestsPerSecond / base.requestsPerSecond : NaN,
      p99RatioToBaseline: base ? m.latencyMs.p99 / base.latencyMs.p99 : NaN,
      regcache: id === 'mirror-http' || id === 'intercepted-tls',
    });
  }
  return { manifest: { digest, bytes: s.image.manifest.length, mediaType: s.image.manifestMediaType }, options: opts, rows, skipped, regcacheLog };
}
