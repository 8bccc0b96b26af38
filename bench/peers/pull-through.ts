// docker-registry in pull-through mode as a peer of regcache: the mirror architecture. Clients pull from it
// by its own address; it fetches what it lacks from the remote (proxy: remoteurl:) and keeps it in its
// filesystem storage. The remote is addressed by IP, so no name resolution is needed, and the remote's
// certificate must carry that IP.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { BlobFile } from '../../test/harness/images.js';
import { waitFor } from '../../test/harness/proc.js';
import { blobStoragePath, startRegistry, type Registry } from '../../test/harness/registry.js';

export interface PullThroughOptions {
  dir: string;
  /** https://<ip>:<port> of the upstream registry. */
  remoteUrl: string;
  /** CA of the remote's certificate (the only one trusted for it), also the CA of tls. */
  caFile: string;
  /** Its own serving certificate; must be valid for 127.0.0.1. */
  tls: { certFile: string; keyFile: string };
}

export interface PullThrough {
  registry: Registry;
  /** skopeo source reference of repo:tag through the mirror. */
  ref(repoAndTag: string): string;
  /**
   * Waits until these blobs are in its storage. distribution 2.8 serves a missing blob by copying
   * it from the remote to the client while a second, background fetch stores it, so a pull can end
   * before the blob is cached.
   */
  waitStored(blobs: BlobFile[], timeoutMs: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startPullThrough(o: PullThroughOptions): Promise<PullThrough> {
  const registry = await startRegistry({ dir: o.dir, tls: o.tls, caFile: o.caFile, proxy: { remoteUrl: o.remoteUrl, caFile: o.caFile } });
  const stored = async (size: number, digest: string): Promise<boolean> =>
    (await stat(path.join(registry.storageDir, blobStoragePath(digest))).catch(() => null))?.size === size;
  return {
    registry,
    ref: (repoAndTag) => `127.0.0.1:${registry.port}/${repoAndTag}`,
    async waitStored(blobs, timeoutMs) {
      await waitFor(async () => (await Promise.all(blobs.map((b) => stored(b.size, b.digest)))).every(Boolean), {
        timeoutMs,
        what: `the pull-through registry to store ${blobs.length} blobs`,
        intervalMs: 100,
      });
    },
    stop: () => registry.stop(),
  };
}
