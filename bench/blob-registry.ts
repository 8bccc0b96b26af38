// A real docker-registry over TLS holding one big blob (a one-layer image of incompressible data), for
// the benches that fetch a single blob: a test CA, the registry's certificate for the bench's host name
// and 127.0.0.1, and the pushed image (its local copy removed: the registry has its own).
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { makeImage, pushImage, type LayerFile } from '../test/harness/images.js';
import { createTestCA, type TestCA } from '../test/harness/pki.js';
import { startRegistry, type Registry } from '../test/harness/registry.js';

export interface BlobRegistry {
  registry: Registry;
  blob: LayerFile;
  ca: TestCA;
  /** What a regcache needs to intercept the host and reach this registry under its name. */
  regcacheEnv: Record<string, string>;
}

/** Under root: the CA in test-ca/, the registry in registry/; `repo:v1` holds one layer of `mb` MB (10^6 bytes). */
export async function startBlobRegistry(root: string, o: { host: string; repo: string; mb: number; name: string }): Promise<BlobRegistry> {
  const caDir = path.join(root, 'test-ca');
  await mkdir(caDir);
  const ca = await createTestCA(caDir, `regcache ${o.name} CA`);
  const tls = await ca.issue([o.host, '127.0.0.1'], caDir, 'registry');
  const registry = await startRegistry({ dir: path.join(root, 'registry'), tls, caFile: ca.certFile });
  // One layer of incompressible data in stored gzip framing; only its blob is fetched.
  const imageDir = path.join(root, 'image');
  const image = await makeImage(imageDir, { layers: [{ size: o.mb * 1_000_000, seed: `${o.name}-${o.mb}` }], gzipLevel: 0 });
  await pushImage(registry.url, o.repo, 'v1', image, { caFile: ca.certFile });
  await rm(imageDir, { recursive: true, force: true }); // the registry has its own copy: a GB less on disk
  const regcacheEnv = {
    ADDITIONAL_REGISTRIES: o.host,
    UPSTREAM_CA_FILE: ca.certFile,
    CONNECT_TO: `${o.host}:443:127.0.0.1:${registry.port}`,
    LOG_LEVEL: 'info', // what operators run: one line per request
    ...(process.env.BENCH_SCRUB_RATE ? { SCRUB_RATE: process.env.BENCH_SCRUB_RATE } : {}),
  };
  return { registry, blob: image.layers[0]!, ca, regcacheEnv };
}
