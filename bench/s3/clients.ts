// The S3 bench's clients and its checks of what regcache logged: one blob with curl through a replica's
// proxy port (CONNECT, intercepted), timed from the spawn to its exit with curl's own first-byte time; one
// image with skopeo copy through a replica, every pulled byte checked; and the request lines each served.
import { rm } from 'node:fs/promises';
import path from 'node:path';
import type { Image } from '../../test/harness/images.js';
import { run } from '../../test/harness/proc.js';
import type { Regcache } from '../../test/harness/regcache.js';
import { skopeoCopyToDir } from '../../test/harness/skopeo.js';
import { blobGetLines, checkPulledImage } from '../measure.js';

const TIMEOUT_MS = 600_000;

export interface Transfer {
  startedAt: number; // performance.now() when the client was started
  firstByteAt: number; // the same clock; for skopeo = startedAt (not known)
  doneAt: number; // when the client exited, every byte received
  bytes: number;
}

export const seconds = (t: Transfer): number => (t.doneAt - t.startedAt) / 1000;

/**
 * curl GET url through the replica's proxy port, the body to /dev/null; throws unless 200 with `size` bytes.
 * `direct`: follows a redirect (S3_REDIRECT) to that host without the proxy (as NO_PROXY would).
 */
export async function curlThrough(rc: Regcache, url: string, size: number, direct?: string): Promise<Transfer> {
  const args = ['-sS', '-o', '/dev/null', '--max-time', String(TIMEOUT_MS / 1000), '--proxy', rc.proxyUrl, '--cacert', rc.caFile];
  if (direct !== undefined) args.push('--location', '--noproxy', direct);
  args.push('-w', '%{http_code} %{size_download} %{time_starttransfer}', url);
  const startedAt = performance.now();
  const r = await run('curl', args, { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' }, timeoutMs: TIMEOUT_MS + 10_000 });
  const doneAt = performance.now();
  const [status, bytes, firstByte] = r.stdout.trim().split(' ').map(Number);
  if (r.code !== 0 || status !== 200 || bytes !== size)
    throw new Error(`curl ${url} through ${rc.proxyUrl}: exit ${r.code}, HTTP ${status}, ${bytes} of ${size} bytes: ${r.stderr.trim()}`);
  return { startedAt, firstByteAt: startedAt + firstByte! * 1000, doneAt, bytes };
}

/** skopeo copy of ref through the replica into a fresh dir: checked against the pushed image, then removed. */
export async function skopeoThrough(rc: Regcache, ref: string, image: Image, o: { certDir: string; scratch: string }): Promise<Transfer> {
  const out = path.join(o.scratch, 'pulled');
  await rm(out, { recursive: true, force: true });
  const startedAt = performance.now();
  const res = await skopeoCopyToDir(ref, out, {
    dir: path.join(o.scratch, 'skopeo'),
    env: { HTTPS_PROXY: rc.proxyUrl, NO_PROXY: '' },
    certDir: o.certDir,
    timeoutMs: TIMEOUT_MS,
  });
  const doneAt = performance.now();
  if (res.code !== 0) throw new Error(`skopeo copy ${ref} through ${rc.proxyUrl}: exit ${res.code}: ${res.stderr.trim()}`);
  const bad = await checkPulledImage(out, image);
  if (bad !== null) throw new Error(`skopeo copy ${ref}: ${bad}`);
  await rm(out, { recursive: true, force: true });
  return { startedAt, firstByteAt: startedAt, doneAt, bytes: [image.config, ...image.layers].reduce((n, b) => n + b.size, 0) };
}

/**
 * The blob GETs the replica logged since log line `since`: one per blob, each 200 with every byte, answered
 * `want`; REDIRECT: a HIT answered 307 with no body (S3_REDIRECT).
 */
export async function expectServed(
  rc: Regcache,
  since: number,
  blobs: { digest: string; size: number }[],
  want: 'HIT' | 'MISS' | 'REDIRECT',
  what: string,
): Promise<void> {
  const lines = await blobGetLines(
    rc,
    since,
    blobs.map((b) => b.digest),
    what,
  );
  const [cache, status] = want === 'REDIRECT' ? ['HIT', 307] : [want, 200];
  for (const b of blobs) {
    const got = lines.filter((l) => l.digest === b.digest);
    const bytes = want === 'REDIRECT' ? 0 : b.size;
    const ok =
      got.length === 1 && got[0]!.status === status && got[0]!.bytes === bytes && got[0]!.cache === cache && (want !== 'REDIRECT' || got[0]!.redirect === true);
    if (!ok)
      throw new Error(
        `${what}: regcache logged [${got.map((l) => `${l.cache}/${l.status}/${l.bytes} bytes`).join(', ')}] for ${b.digest}, expected one ${cache}/${status}/${bytes} bytes`,
      );
  }
}

/** Waits until the replica logged 'fill committed' for every digest; returns when the last was, on performance.now()'s clock. */
export async function waitCommitted(rc: Regcache, digests: string[], what: string): Promise<number> {
  let last = 0;
  for (const digest of digests) {
    const line = await rc.waitForLog((l) => l.msg === 'fill committed' && l.digest === digest, `${what}: the fill of ${digest} to commit`, 120_000);
    last = Math.max(last, Date.parse(String(line.time)) - performance.timeOrigin);
  }
  return last;
}
