// What WORKERS does to a pull on this machine (issue 24, item 2): one image pulled by skopeo direct from
// a docker-registry over TLS, and through regcache with each WORKERS value (PULL_WORKERS, default "1 2"),
// cold (a fresh process and an empty cache) and warm (a process whose cache holds the image), every
// measurement once per round in a rotating order (PULL_WORKERS_RUNS, default 4; PULL_WORKERS_MB, 150).
// Prints medians, ratios to direct, and regcache's CPU (the process tree: primary and workers) per pull.
// Run once built: `node --import tsx bench/workers/pull-workers.ts`.
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { makeImage, pushImage } from '../../test/harness/images.js';
import { createTestCA } from '../../test/harness/pki.js';
import { run } from '../../test/harness/proc.js';
import { startRegcache, type Regcache } from '../../test/harness/regcache.js';
import { startRegistry } from '../../test/harness/registry.js';
import { skopeoCopyToDir } from '../../test/harness/skopeo.js';
import { checkPulledImage, envInt, median, treeCpuSeconds } from '../measure.js';

const HOST = 'registry.bench';
const REPO = 'bench/workers';
const runs = envInt('PULL_WORKERS_RUNS', 4);
const mb = envInt('PULL_WORKERS_MB', 150);
const counts = (process.env.PULL_WORKERS ?? '1 2')
  .trim()
  .split(/[\s,]+/)
  .map(Number);

const root = await mkdtemp(path.join(os.tmpdir(), 'regcache-pull-workers-'));
const caDir = path.join(root, 'test-ca');
await mkdir(caDir);
const ca = await createTestCA(caDir, 'pull-workers CA');
const registry = await startRegistry({ dir: path.join(root, 'registry'), tls: await ca.issue([HOST, '127.0.0.1'], caDir, 'registry'), caFile: ca.certFile });
const total = mb * 1_000_000;
const sizes = [Math.round(total * 0.5), Math.round(total * 0.3)];
sizes.push(total - sizes[0]! - sizes[1]!);
const image = await makeImage(path.join(root, 'image'), { layers: sizes.map((size, i) => ({ size, seed: `pw-${mb}-${i}` })), gzipLevel: 0 });
await pushImage(registry.url, REPO, 'v1', image, { caFile: ca.certFile });
const directCerts = path.join(root, 'certs-direct');
await mkdir(directCerts);
await copyFile(ca.certFile, path.join(directCerts, 'ca.crt'));
const proxyCerts = path.join(root, 'certs-proxy');
const rcCaDir = path.join(root, 'rc-ca');
const env = { ADDITIONAL_REGISTRIES: HOST, UPSTREAM_CA_FILE: ca.certFile, CONNECT_TO: `${HOST}:443:127.0.0.1:${registry.port}`, LOG_LEVEL: 'info' };
const running = new Set<Regcache>();
const start = async (name: string, workers: number, cacheDir: string): Promise<Regcache> => {
  const rc = await startRegcache({ dir: path.join(root, name), cacheDir, caDir: rcCaDir, env: { ...env, WORKERS: String(workers) } });
  running.add(rc);
  return rc;
};
const stop = async (rc: Regcache): Promise<void> => {
  await rc.stop();
  running.delete(rc);
};

async function pull(rc: Regcache | null): Promise<{ s: number; cpu: number }> {
  const out = path.join(root, 'pulled');
  await rm(out, { recursive: true, force: true });
  await run('sync', []);
  const cpu0 = rc ? ((await treeCpuSeconds(rc.daemon.pid)) ?? NaN) : 0;
  const t0 = performance.now();
  const r = await skopeoCopyToDir(rc ? `${HOST}/${REPO}:v1` : `127.0.0.1:${registry.port}/${REPO}:v1`, out, {
    dir: path.join(root, 'skopeo'),
    env: rc ? { HTTPS_PROXY: rc.proxyUrl } : {},
    certDir: rc ? proxyCerts : directCerts,
    timeoutMs: 600_000,
  });
  const s = (performance.now() - t0) / 1000;
  const cpu = rc ? ((await treeCpuSeconds(rc.daemon.pid)) ?? NaN) - cpu0 : 0;
  if (r.code !== 0) throw new Error(`pull failed: ${r.stderr}`);
  const bad = await checkPulledImage(out, image);
  if (bad) throw new Error(bad);
  return { s, cpu };
}

try {
  // warm processes, one per WORKERS value, each with its own primed cache
  const warm = new Map<number, Regcache>();
  for (const w of counts) {
    const rc = await start(`warm-${w}`, w, path.join(root, `warm-cache-${w}`));
    if (!warm.size) {
      await mkdir(proxyCerts);
      await copyFile(rc.caFile, path.join(proxyCerts, 'ca.crt'));
    }
    await pull(rc);
    warm.set(w, rc);
  }
  const items = ['direct', ...counts.flatMap((w) => [`cold W=${w}`, `warm W=${w}`])];
  const res: Record<string, { s: number[]; cpu: number[] }> = Object.fromEntries(items.map((k) => [k, { s: [], cpu: [] }]));
  for (let i = 0; i < runs; i++) {
    const order = items.map((_, k) => items[(i + k) % items.length]!);
    for (const item of order) {
      let r: { s: number; cpu: number };
      if (item === 'direct') r = await pull(null);
      else {
        const w = Number(item.split('=')[1]);
        if (item.startsWith('warm')) r = await pull(warm.get(w)!);
        else {
          const cache = path.join(root, 'cold-cache');
          await rm(cache, { recursive: true, force: true });
          const rc = await start(`cold-${w}-${i}`, w, cache);
          r = await pull(rc);
          await stop(rc);
        }
      }
      res[item]!.s.push(r.s);
      res[item]!.cpu.push(r.cpu);
    }
    process.stderr.write(`round ${i + 1}/${runs}: ${order.map((k) => `${k} ${res[k]!.s.at(-1)!.toFixed(2)}`).join(', ')}\n`);
  }
  const direct = median(res.direct!.s);
  console.log(
    `pull of ${mb} MB (3 layers), ${runs} rounds, medians; load average ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(' ')}`,
  );
  for (const k of items) {
    const m = median(res[k]!.s);
    const cpu = median(res[k]!.cpu);
    console.log(
      `${k.padEnd(10)} ${m.toFixed(2)} s  ${(m / direct).toFixed(2)}x direct  regcache CPU ${cpu.toFixed(2)} s (${((cpu * 1e9) / total).toFixed(2)} ns/B)  all: ${res[k]!.s.map((x) => x.toFixed(2)).join(' ')}`,
    );
  }
} finally {
  await Promise.all([...running].map((rc) => rc.stop()));
  await registry.stop();
  await rm(root, { recursive: true, force: true });
}
