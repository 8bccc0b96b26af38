// The CPU bench's floors: what this CPU's OpenSSL needs per byte to encrypt (AES-256-GCM, the cipher TLS 1.3
// picks here) and to hash (SHA-256), from `openssl speed` at 16 KiB blocks (a full TLS record, the size of
// the hash updates on the hot paths), turned into ns per byte. openssl speed divides by the user CPU time it
// got, so other load on the machine does not inflate it (much: shared caches and a busy sibling thread do).
import { run } from '../../test/harness/proc.js';

export type Floor = 'aes-256-gcm' | 'sha256';

const BLOCK = 16 * 1024;

/** CPU ns per byte of one `openssl speed -evp <algorithm>` run of `seconds` at 16 KiB blocks. */
export async function opensslNsPerByte(algorithm: Floor, seconds = 1): Promise<number> {
  const r = await run('openssl', ['speed', '-mr', '-evp', algorithm, '-bytes', String(BLOCK), '-seconds', String(seconds)], { timeoutMs: 60_000 });
  // -mr prints "+F:<n>:<name>:<bytes per second>" for the one block size asked for.
  const bytesPerSecond = Number(/^\+F:\d+:[^:]+:([\d.]+)/m.exec(r.stdout)?.[1]);
  if (r.code !== 0 || !(bytesPerSecond > 0)) throw new Error(`openssl speed -evp ${algorithm}: exit ${r.code}, no result: ${r.stderr.trim().slice(0, 300)}`);
  return 1e9 / bytesPerSecond;
}

export async function opensslVersion(): Promise<string> {
  // "OpenSSL 3.0.19 27 Jan 2026 (Library: ...)": the name and version are enough.
  return (await run('openssl', ['version']).catch(() => null))?.stdout.trim().split(' ').slice(0, 2).join(' ') || 'openssl ?';
}
