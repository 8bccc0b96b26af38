// One WORKERS value of the workers bench: regcache started with it, then, one after another, the warm
// aggregate MB/s of a big cached blob (warm-throughput.ts), HIT requests/s of a small cached manifest on
// the mirror port (wrk) and through CONNECT + TLS (the node generator), as the load bench's part 1 runs
// them, and then the load bench's 500-connection mixed load with its own regcache of the same WORKERS.
// regcache's CPU is its whole process tree's (the primary and its workers).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { freePort } from '../../test/harness/ports.js';
import { startRegcache } from '../../test/harness/regcache.js';
import type { Image } from '../../test/harness/images.js';
import { treeCpuSeconds } from '../measure.js';
import { REGISTRY_HOST, REPO, type BenchSetup } from '../load/bench-setup.js';
import { expectDigest } from '../load/digest-check.js';
import { nodeRow, wrkRow, type HitOptions, type Measured } from '../load/hit-throughput.js';
import { benchMixedLoad, type MixedOptions, type MixedResult } from '../load/mixed-load.js';
import { measureWarmThroughput, type WarmOptions, type WarmResult } from './warm-throughput.js';

export const BIG_REPO = 'bench/big'; // the image whose one big layer the warm clients download

export interface WorkersRun {
  workers: number;
  warm: WarmResult;
  hitMirror: Measured; // wrk on the mirror port
  hitIntercepted: Measured; // node generator, CONNECT + TLS
  servedBy: number[]; // the workers that logged HITs: every one of them should have
  mixed: MixedResult;
}

export interface WorkersOptions {
  hit: HitOptions;
  warm: WarmOptions;
  mixed: MixedOptions;
}

export async function runWithWorkers(s: BenchSetup, big: Image, workers: number, opts: WorkersOptions): Promise<WorkersRun> {
  const dir = path.join(s.root, `workers-${workers}`);
  const env = { ...s.regcacheEnv, WORKERS: String(workers) };
  const rc = await startRegcache({
    dir,
    env: {
      ...env,
      ADDITIONAL_REGISTRIES: REGISTRY_HOST,
      CONNECT_TO: `${REGISTRY_HOST}:443:127.0.0.1:${s.registry.port}`,
      MIRROR_PORT: String(await freePort()),
    },
  });
  let partial: Omit<WorkersRun, 'mixed'>;
  try {
    const layer = big.layers[0]!;
    const manifest = {
      path: `/v2/${REPO}/manifests/${s.image.manifestDigest}`,
      digest: s.image.manifestDigest,
      headers: { accept: s.image.manifestMediaType },
    };
    const mirror = (p: string) => `http://127.0.0.1:${rc.mirrorPort}${p}?ns=${REGISTRY_HOST}`;
    // Primed once (a MISS each) and committed: every request measured below is a HIT.
    await expectDigest(mirror(`/v2/${BIG_REPO}/blobs/${layer.digest}`), layer.digest, {});
    await expectDigest(mirror(manifest.path), manifest.digest, manifest.headers);
    for (const digest of [layer.digest, manifest.digest])
      await rc.waitForLog((l) => l.msg === 'fill committed' && l.digest === digest, `${digest} to be committed`, 60_000);
    const cpu = () => treeCpuSeconds(rc.daemon.pid);

    process.stderr.write(`workers ${workers}: warm MB/s, ${opts.warm.clients} curl clients, ${opts.warm.seconds} s...\n`);
    const warm = await measureWarmThroughput(
      {
        proxyPort: rc.port,
        caFile: rc.caFile,
        url: `https://${REGISTRY_HOST}/v2/${BIG_REPO}/blobs/${layer.digest}`,
        size: layer.size,
        regcachePid: rc.daemon.pid,
      },
      opts.warm,
    );
    process.stderr.write(`workers ${workers}: HIT requests/s, mirror port (wrk)...\n`);
    const hitMirror = await wrkRow('mirror-http', mirror(manifest.path), manifest.headers, opts.hit, cpu);
    process.stderr.write(`workers ${workers}: HIT requests/s, CONNECT + TLS (node)...\n`);
    const regcacheCa = await readFile(rc.caFile, 'utf8');
    const hitIntercepted = await nodeRow(
      'intercepted-tls',
      { port: rc.port, connect: `${REGISTRY_HOST}:443`, servername: REGISTRY_HOST, ca: regcacheCa },
      manifest,
      opts.hit,
      cpu,
    );
    if (!rc.daemon.isRunning()) throw new Error(`regcache (WORKERS=${workers}) exited; log: ${rc.logFile}`);
    const servedBy = [...new Set((await rc.requests()).filter((l) => l.cache === 'HIT').map((l) => Number(l.worker ?? 0)))].sort();
    partial = { workers, warm, hitMirror, hitIntercepted, servedBy };
  } finally {
    await rc.stop();
  }
  process.stderr.write(`workers ${workers}: mixed load...\n`);
  const mixed = await benchMixedLoad({ ...s, root: dir, regcacheEnv: env }, opts.mixed);
  return { ...partial, mixed };
}
