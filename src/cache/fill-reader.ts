// A Readable over a Fill's bytes [start, end], following the spool file as it grows.
import { Readable } from 'node:stream';
import type { Fill } from './fill.js';

const CHUNK = 256 * 1024;

export class FillReader extends Readable {
  private position: number;
  private reading = false;
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
    void this.pump();
  }

  private onChange(): void {
    if (!this.reading && !this.destroyed) void this.pump();
  }

  private async pump(): Promise<void> {
    if (this.reading) return;
    this.reading = true;
    try {
      while (!this.ended) {
        if (this.fill.state === 'failed') {
          this.destroy(this.fill.error ?? new Error('fill failed')); // stop at once: no more unverified bytes
          return;
        }
        const limit = this.endInclusive === null ? this.fill.readable : Math.min(this.fill.readable, this.endInclusive + 1);
        if (this.position < limit) {
          const buffer = Buffer.allocUnsafe(Math.min(CHUNK, limit - this.position));
          const n = await this.fill.read(buffer, this.position, buffer.length);
          if (this.destroyed) return;
          this.position += n;
          if (!this.push(n === buffer.length ? buffer : buffer.subarray(0, n))) return;
          continue;
        }
        if (this.fill.state === 'committed' || (this.endInclusive !== null && this.position > this.endInclusive)) {
          this.ended = true;
          this.push(null);
        }
        return; // otherwise wait for the next 'progress'
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
