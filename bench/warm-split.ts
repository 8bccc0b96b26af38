// Where a warm pull's time goes (issue 24's warm target): skopeo pulls one big one-layer image (BENCH_SPLIT_MB,
// default 1024 MB) from a real docker-registry over TLS, directly and as a regcache HIT, in alternating
// rounds (BENCH_SPLIT_RUNS, default 5, after the cold pull that fills regcache), and each pull's CPU is
// split between the client (skopeo, user and system, from /usr/bin/time) and the server that sent the
// bytes (docker-registry or regcache, from /proc/<pid>/stat). Direct is also what distribution's
// pull-through serves a warm pull with: a docker-registry reading its own storage. Medians on stdout and
// in the warm-split section of docs/benchmarks.md. In `npm run bench`; once built:
// `node --import tsx bench/warm-split.ts`.
import { copyFile, mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { startBlobRegistry } from './blob-registry.js';
import { cpuSeconds, describeMachine, envInt, median, writeDocsSection } from './measure.js';
import { startRegcache } from '../test/harness/regcache.js';
import { skopeoCopyToDir } from '../test/harness/skopeo.js';
import { makeTmpDir, removeTmpDir } from '../test/harness/tmp.js';

interface Pull {
  wall: number;
  clientCpu: number;
  serverCpu: number;
}

const mb = envInt('BENCH_SPLIT_MB', 1024);
const runs = envInt('BENCH_SPLIT_RUNS', 5);
const root = await makeTmpDir('regcache-warm-split');
const upstream = await startBlobRegistry(root, { host: 'registry.bench', repo: 'bench/big', mb, name: 'warm-split' });
const rc = await startRegcache({ dir: path.join(root, 'regcache'), env: upstream.regcacheEnv });
try {
  const certDir = async (name: string, caFile: string): Promise<string> => {
    const dir = path.join(root, name);
    await mkdir(dir, { recursive: true });
    await copyFile(caFile, path.join(dir, 'ca.crt')); // only ca.crt: skopeo takes any *.key there for a client key
    return dir;
  };
  const direct = {
    ref: `127.0.0.1:${upstream.registry.port}/bench/big:v1`,
    env: {},
    certDir: await certDir('direct-certs', upstream.ca.certFile),
    pid: upstream.registry.pid,
  };
  const viaRegcache = {
    ref: 'registry.bench/bench/big:v1',
    env: { HTTPS_PROXY: rc.proxyUrl },
    certDir: await certDir('regcache-certs', rc.caFile),
    pid: rc.daemon.pid,
  };

  const pull = async (src: typeof direct): Promise<Pull> => {
    const out = path.join(root, 'out');
    await rm(out, { recursive: true, force: true });
    const before = await cpuSeconds(src.pid);
    const started = performance.now();
    const r = await skopeoCopyToDir(src.ref, out, {
      dir: path.join(root, 'skopeo'),
      env: src.env,
      certDir: src.certDir,
      timeoutMs: 600_000,
      prefix: ['/usr/bin/time', '-f', 'CPU %U %S'],
    });
    const wall = (performance.now() - started) / 1000;
    if (r.code !== 0) throw new Error(`skopeo ${src.ref}: ${r.stderr.trim().slice(-500)}`);
    const times = /CPU ([\d.]+) ([\d.]+)/.exec(r.stderr);
    if (!times) throw new Error(`no CPU times from /usr/bin/time: ${r.stderr.slice(-200)}`);
    const serverCpu = (await cpuSeconds(src.pid))! - before!;
    await rm(out, { recursive: true, force: true });
    return { wall, clientCpu: Number(times[1]) + Number(times[2]), serverCpu };
  };

  await pull(viaRegcache); // the cold pull that fills regcache
  await rc.waitForLog((l) => l.msg === 'fill committed' && l.digest === upstream.blob.digest, 'the commit', 300_000);
  const results: Record<'direct' | 'regcache', Pull[]> = { direct: [], regcache: [] };
  for (let i = 0; i < runs; i++) {
    results.direct.push(await pull(direct));
    results.regcache.push(await pull(viaRegcache));
  }
  const col = (rows: Pull[], f: (p: Pull) => number): string => `${median(rows.map(f)).toFixed(2)} (${rows.map((p) => f(p).toFixed(2)).join(', ')})`;
  const row = (name: string, rows: Pull[]): string =>
    `| ${name} | ${col(rows, (p) => p.wall)} | ${col(rows, (p) => p.clientCpu)} | ${col(rows, (p) => p.serverCpu)} |`;
  const ratio = (f: (p: Pull) => number): string => (median(results.regcache.map(f)) / median(results.direct.map(f))).toFixed(3);
  const machine = describeMachine();
  const report = [
    '## A warm pull split between client and server (bench/warm-split.ts)',
    '',
    `${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${machine.cpus} CPUs (${machine.cpuModel}). One ${mb} MB layer, \`skopeo copy\` to a dir:,`,
    `${runs} alternating rounds after the cold pull; seconds, medians (every run in brackets). Client: skopeo's user + system`,
    "CPU; server: the CPU of the process that sent the bytes (docker-registry direct, as distribution's pull-through",
    'serves a warm pull; regcache for a HIT).',
    '',
    '| served by | wall | client CPU | server CPU |',
    '|---|---|---|---|',
    row('docker-registry (direct)', results.direct),
    row('regcache (HIT)', results.regcache),
    '',
    `regcache / direct: wall ${ratio((p) => p.wall)}, client CPU ${ratio((p) => p.clientCpu)}, server CPU ${ratio((p) => p.serverCpu)}.`,
  ].join('\n');
  console.log(report);
  await writeDocsSection('warm-split', report);
} finally {
  await rc.stop();
  await upstream.registry.stop();
  await removeTmpDir(root);
}
