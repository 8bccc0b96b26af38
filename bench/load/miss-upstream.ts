// The upstream for the load bench's MISSes: test/support's fake registry holding many distinct small
// blobs, so that every MISS request names a digest regcache has never seen. Random bytes (not a seeded
// stream): thousands are made in a fraction of a second, and only their digests must be known.
import { createHash, randomBytes, randomInt } from 'node:crypto';
import type { TlsFiles } from '../../test/harness/https-server.js';
import { FakeRegistry } from '../../test/support/fake-registry.js';

export interface MissUpstream {
  registry: FakeRegistry;
  digests: string[];
  close(): Promise<void>;
}

export async function startMissUpstream(tls: TlsFiles, count: number, sizes: { min: number; max: number }): Promise<MissUpstream> {
  const registry = new FakeRegistry();
  const digests: string[] = [];
  for (let i = 0; i < count; i++) {
    const data = randomBytes(randomInt(sizes.min, sizes.max + 1));
    const digest = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    registry.add({ digest, data, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
    digests.push(digest);
  }
  await registry.start(tls);
  return { registry, digests, close: () => registry.close() };
}
