// What both parts of the load bench share: a test CA, the real docker-registry (TLS) standing in for a
// public registry, and one pushed image whose manifest (a few KB) and small blobs are what HITs fetch.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { makeImage, pushImage, type Image } from '../../test/harness/images.js';
import { createTestCA, type IssuedCert, type TestCA } from '../../test/harness/pki.js';
import { startRegistry, type Registry } from '../../test/harness/registry.js';

export const REGISTRY_HOST = 'registry.bench'; // allowlisted, routed to the registry by CONNECT_TO
export const REPO = 'bench/load';

export interface BenchSetup {
  root: string;
  ca: TestCA;
  registry: Registry;
  registryCert: IssuedCert; // for REGISTRY_HOST and 127.0.0.1
  image: Image;
  /** Shared by every regcache the bench starts; each part adds its own. */
  regcacheEnv: Record<string, string>;
}

// 16 layers of 1 to 64 KB: a manifest of about 3.5 KB, and small blobs for the mixed load's HITs.
const LAYER_SIZES = Array.from({ length: 16 }, (_, i) => 1000 * 2 ** (i % 7));

export async function setUpBench(root: string): Promise<BenchSetup> {
  const caDir = path.join(root, 'test-ca');
  await mkdir(caDir);
  const ca = await createTestCA(caDir, 'regcache load bench CA');
  const registryCert = await ca.issue([REGISTRY_HOST, '127.0.0.1'], caDir, 'registry');
  const registry = await startRegistry({ dir: path.join(root, 'registry'), tls: registryCert, caFile: ca.certFile });
  try {
    const image = await makeImage(path.join(root, 'image'), { layers: LAYER_SIZES.map((size, i) => ({ size, seed: `load-bench-${i}` })), gzipLevel: 0 });
    await pushImage(registry.url, REPO, 'v1', image, { caFile: ca.certFile });
    return {
      root,
      ca,
      registry,
      registryCert,
      image,
      regcacheEnv: { UPSTREAM_CA_FILE: ca.certFile, LOG_LEVEL: 'info' }, // info: what operators run; request lines are info
    };
  } catch (err) {
    await registry.stop();
    throw err;
  }
}
