// A Readable over a Fill's bytes [start, end], following the spool file as it grows. It reads only when
// its consumer asks (_read), so a slow client costs disk, never memory. The last byte it delivers is held
// back until the fill is verified: no client, ranged or not, ever receives a complete unverified body.
import { Readable } from 'node:stream';
import type { Fill } from './fill.js';

const CHUNK = 256 * 1024;

export class FillReader extends Readable {
  private position: number;
  private reading = false;
  private wanted = false; // the consumer asked for more and we have not pushed since
  private ended = false;

  /** The caller must have called fill.acquire() successfully; the reader releases it when done. */
  constructor(
    private readonly fill: Fill,
    start: number,
    private readonly endInclusive: number | null,
  ) {
    super({ highWaterMark: CHUNK });
    this.position = start;
    this.onChange = this.onChange.bind(this);
    fill.on('progress', this.onChange);
    fill.on('settled', this.onChange);
  }

  override _read(): void {
    this.wanted = true;
    void this.pump();
  }

  private onChange(): void {
    if (this.destroyed || this.reading) return;
    if (this.wanted || (this.fill.state === 'failed' && !this.fill.verified)) void this.pump(); // a bad fill cuts the client at once
  }

  private async pump(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      while (!this.ended) {
        if (this.fill.state === 'failed' && !this.fill.verified) {
          this.destroy(this.fill.error ?? new Error('fill failed')); // stop at once: no more unverified bytes
          return;
        }
        const verified = this.fill.verified;
        const stop = Math.min(this.endInclusive === null ? Infinity : this.endInclusive + 1, this.fill.written);
        const limit = verified ? stop : stop - 1;
        if (this.position < limit) {
          const buffer = Buffer.allocUnsafe(Math.min(CHUNK, limit - this.position));
          const n = await this.fill.read(buffer, this.position, buffer.length);
          if (this.destroyed) return;
          this.position += n;
          this.wanted = this.push(n === buffer.length ? buffer : buffer.subarray(0, n));
          if (!this.wanted) return; // resume on the next _read
          continue;
        }
        if (verified) {
          this.ended = true;
          this.push(null);
        }
        return; // otherwise wait for the next 'progress' or 'settled'
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.reading = false;
    }
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.fill.off('progress', this.onChange);
    this.fill.off('settled', this.onChange);
    this.fill.release();
    callback(err);
  }
}
