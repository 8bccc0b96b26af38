// Sends bytes [start, end] of a stored content file to a response. Verified, it hashes the whole file on
// the way and holds back the last byte it sends until the file has hashed to its digest (as FillReader
// does for fills): a file that changed on disk after it was stored cuts the client instead of completing
// a wrong body, and a range costs a read of the whole file. Given the files this process has verified
// (VERIFY_ON_READ=once: trusted-files.ts), a file that is still what it was when it hashed right is read
// as a range only, its last byte held until an fstat shows it still unchanged (else the client is cut and
// the file hashed in full next time); one that is not is hashed as above and trusted afterwards.
// Unverified (VERIFY_ON_READ=off), it reads the range only. Chunks are read into a ring of reused
// buffers (ring-writer.ts) and written straight to the response; it reads only while a buffer is free,
// so a slow client costs nothing but an open file.
import crypto from 'node:crypto';
import type { Writable } from 'node:stream';
import type { ContentFile } from './content-store.js';
import { RingWriter } from './ring-writer.js';
import { unchangedSince, type TrustedFiles } from './trusted-files.js';

// A read and a write per MiB, two buffers (one read into while the other is sent): 1 MiB chunks cut a HIT's
// CPU per byte by about a fifth against 256 KiB x 4 (fewer thread-pool reads and response writes for the
// same bytes; docs/benchmarks.md, 2026-12-06), for 2 MiB held per big read in flight instead of 1.
export const FILE_CHUNK = 1024 * 1024;
export const FILE_RING_BUFFERS = 2;

/** The stored bytes are not the content their digest names (changed or cut short on disk). */
export class CorruptContentError extends Error {
  override name = 'CorruptContentError';
}

export interface VerifiedRead {
  size: number; // bytes the file must hold (the index's size; the caller has checked the file's)
  digest: string; // "sha256:<hex>" the whole file must hash to
  start: number; // first byte to deliver
  end: number; // last byte to deliver (inclusive), held back until the digest matched
}

/** A trusted file changed while it was read: what was sent may not be its content. */
export class ChangedContentError extends Error {
  override name = 'ChangedContentError';
}

export interface SendOptions {
  verify: boolean; // hash the whole file (VERIFY_ON_READ); false: read the range only, as it is
  trusted?: TrustedFiles | null; // with verify (VERIFY_ON_READ=once): skip the hash of a file verified before and unchanged since
  onBytes: (n: number) => void; // bytes handed to the destination (the request's log line and metrics)
}

export class VerifiedFileReader {
  /** Takes ownership of file: sendTo closes it. */
  constructor(
    private readonly file: ContentFile,
    private readonly want: VerifiedRead,
  ) {}

  /**
   * Sends the range and ends the destination; resolves once it finished, or as soon as the destination
   * closed early (the client left). Rejects with CorruptContentError when the file is not its content, or
   * with a read's error, leaving the destination to the caller (cut it: its body is short). The file is
   * closed before it settles.
   */
  async sendTo(destination: Writable, options: SendOptions): Promise<void> {
    const { start, end, digest } = this.want;
    const startedMs = Date.now();
    const trusted = options.verify ? (options.trusted ?? null) : null;
    const trust = trusted?.trusts(digest, this.file.identity) === true;
    const hash = options.verify && !trust;
    const ring = new RingWriter(destination, Math.min(FILE_CHUNK, hash ? this.want.size : end - start + 1), FILE_RING_BUFFERS);
    let complete: boolean;
    try {
      if (hash) {
        complete = await this.sendVerified(ring, options.onBytes, async () => {
          // Trusted only if nothing changed the file while it was hashed.
          const identity = this.file.identity;
          if (!trusted || !identity) return;
          const now = await this.file.restat!().catch(() => null); // not known: not trusted, the read goes on
          if (now?.key === identity.key) trusted.record(digest, identity, startedMs);
        });
      } else if (trust) {
        complete = await this.sendTrusted(ring, options.onBytes, trusted!);
      } else {
        complete = await this.sendRange(ring, options.onBytes, start, end);
      }
    } finally {
      await this.file.close().catch(() => undefined); // a local file's close waits for a read in flight
    }
    if (complete) await ring.end();
  }

  /** Hashes the whole file, sends the range but its last byte, then that byte once the digest matched. */
  private async sendVerified(ring: RingWriter, onBytes: (n: number) => void, matched: () => Promise<void>): Promise<boolean> {
    const { size, start, end, digest } = this.want;
    const hash = crypto.createHash('sha256');
    let scratch: Buffer | null = null; // for chunks outside the range: hashed, never sent
    let held = -1; // the byte at `end`
    let position = 0;
    while (position < size) {
      const from = position;
      const length = Math.min(FILE_CHUNK, size - from);
      const inRange = from <= end && from + length > start;
      const buffer = inRange ? await ring.next() : (scratch ??= Buffer.allocUnsafe(FILE_CHUNK));
      if (!buffer) return false;
      const bytesRead = await this.read(buffer, length, from);
      if (ring.stopped) return false;
      hash.update(buffer.subarray(0, bytesRead));
      position += bytesRead;
      if (!inRange) continue;
      if (end < position) held = buffer[end - from]!;
      const first = Math.max(start, from) - from;
      const stop = Math.min(end, position) - from; // exclusive: the byte at `end` is held
      if (stop > first) onBytes(stop - first);
      ring.write(buffer, first, stop);
    }
    const actual = 'sha256:' + hash.digest('hex');
    if (actual !== digest) throw new CorruptContentError(`the stored bytes hash to ${actual}, not ${digest}`);
    await matched();
    const last = await ring.next();
    if (!last) return false;
    last[0] = held;
    onBytes(1);
    ring.write(last, 0, 1);
    return true;
  }

  /**
   * A file verified before: the range but its last byte, then that byte once an fstat shows the file as it
   * was when it was verified (a change while it was read cuts the client, as a failed hash would).
   */
  private async sendTrusted(ring: RingWriter, onBytes: (n: number) => void, trusted: TrustedFiles): Promise<boolean> {
    const { start, end, digest } = this.want;
    if (!(await this.sendRange(ring, onBytes, start, end - 1))) return false;
    const now = await this.file.restat!();
    if (!unchangedSince(this.file.identity!, now)) {
      trusted.forget(digest);
      throw new ChangedContentError(`the stored file of ${digest} changed while it was read (it was verified before; it is hashed again next time)`);
    }
    return this.sendRange(ring, onBytes, end, end);
  }

  /** Sends bytes [start, end] as the file has them. */
  private async sendRange(ring: RingWriter, onBytes: (n: number) => void, start: number, end: number): Promise<boolean> {
    let position = start;
    while (position <= end) {
      const buffer = await ring.next();
      if (!buffer) return false;
      const bytesRead = await this.read(buffer, Math.min(buffer.length, end + 1 - position), position);
      if (ring.stopped) return false;
      position += bytesRead;
      onBytes(bytesRead);
      ring.write(buffer, 0, bytesRead);
    }
    return true;
  }

  private async read(buffer: Buffer, length: number, position: number): Promise<number> {
    const bytesRead = await this.file.read(buffer, length, position);
    if (bytesRead === 0) throw new CorruptContentError(`the stored file of ${this.want.digest} ends after ${position} of ${this.want.size} bytes`);
    return bytesRead;
  }
}
