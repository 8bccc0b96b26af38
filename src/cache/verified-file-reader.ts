// A Readable over a stored content file that serves bytes [start, end] of it while hashing the whole
// file, and holds back the last byte it delivers until the file has hashed to its digest (as FillReader
// does for fills): a file that changed on disk after it was stored cuts the client instead of
// completing a wrong body. A range therefore costs a read of the whole file. It reads only when its
// consumer asks (_read), so a slow client costs nothing but an open file.
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import type { ContentFile } from './content-store.js';

const CHUNK = 256 * 1024;

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

export class VerifiedFileReader extends Readable {
  private readonly hash = crypto.createHash('sha256');
  private readonly scratch = Buffer.allocUnsafe(CHUNK); // for chunks outside the range: hashed, never pushed
  private position = 0; // next byte of the file to read
  private held: Buffer | null = null;
  private reading = false;

  /** Takes ownership of file: it is closed when the reader ends or is destroyed. */
  constructor(
    private readonly file: ContentFile,
    private readonly want: VerifiedRead,
  ) {
    super({ highWaterMark: CHUNK });
  }

  override _read(): void {
    void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      const { size, start, end } = this.want;
      while (this.position < size) {
        const from = this.position;
        const length = Math.min(CHUNK, size - from);
        const inRange = from <= end && from + length > start;
        const buffer = inRange ? Buffer.allocUnsafe(length) : this.scratch;
        const bytesRead = await this.file.read(buffer, length, from);
        if (this.destroyed) return;
        if (bytesRead === 0) throw new CorruptContentError(`the stored file of ${this.want.digest} ends after ${from} of ${size} bytes`);
        const chunk = buffer.subarray(0, bytesRead);
        this.hash.update(chunk);
        this.position += bytesRead;
        if (!inRange) continue;
        if (end < this.position) this.held = Buffer.from(chunk.subarray(end - from, end - from + 1)); // a copy: the rest is not kept
        const first = Math.max(start, from) - from;
        const stop = Math.min(end, this.position) - from; // exclusive: the byte at `end` is held
        if (stop > first && !this.push(chunk.subarray(first, stop))) return; // resume on the next _read
      }
      const actual = 'sha256:' + this.hash.digest('hex');
      if (actual !== this.want.digest) throw new CorruptContentError(`the stored bytes hash to ${actual}, not ${this.want.digest}`);
      if (this.held) this.push(this.held);
      this.push(null);
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.reading = false;
    }
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    // A local file's close waits for a read in flight.
    this.file.close().then(
      () => callback(err),
      () => callback(err),
    );
  }
}
