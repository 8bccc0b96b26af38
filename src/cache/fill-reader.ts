// Sends a Fill's bytes [start, end] to a response, following the spool file as it grows. Chunks are read
// into a ring of reused buffers (ring-writer.ts) and written straight to the response; it reads only
// while a buffer is free, so a slow client costs disk, never memory. The last byte it sends is held back
// until the fill is verified: no client, ranged or not, ever receives a complete unverified body.
import type { Writable } from 'node:stream';
import type { Fill } from './fill.js';
import { RingWriter } from './ring-writer.js';

const CHUNK = 256 * 1024;

export class FillReader {
  /** The caller must have called fill.acquire() successfully; sendTo releases it. */
  constructor(
    private readonly fill: Fill,
    private readonly start: number,
    private readonly endInclusive: number | null,
  ) {}

  /**
   * Sends the range and ends the destination; resolves once it finished, or as soon as the destination
   * closed early (the client left; the fill goes on for the others). Rejects with the fill's error when it
   * fails before it is verified (at once, even while writes are in flight), or with a read's error: the
   * destination is then left to the caller, which may continue it elsewhere or cut it. onBytes counts
   * what was handed to the destination.
   */
  async sendTo(destination: Writable, onBytes: (n: number) => void): Promise<void> {
    const { fill } = this;
    const want = this.endInclusive === null ? null : this.endInclusive - this.start + 1;
    const size = fill.expectedSize === null ? CHUNK : (want ?? fill.expectedSize - this.start);
    const ring = new RingWriter(destination, Math.max(1, Math.min(CHUNK, size)));
    const changed = (): void => ring.wakeUp();
    fill.on('progress', changed);
    fill.on('settled', changed);
    let complete = false;
    try {
      complete = await this.send(ring, onBytes);
    } finally {
      fill.off('progress', changed);
      fill.off('settled', changed);
      fill.release();
    }
    if (complete) await ring.end();
  }

  private async send(ring: RingWriter, onBytes: (n: number) => void): Promise<boolean> {
    const { fill } = this;
    let position = this.start;
    for (;;) {
      if (ring.stopped) return false;
      if (fill.state === 'failed' && !fill.verified) throw fill.error ?? new Error('fill failed'); // no more unverified bytes
      const verified = fill.verified;
      const stop = Math.min(this.endInclusive === null ? Infinity : this.endInclusive + 1, fill.written);
      const limit = verified ? stop : stop - 1;
      if (position < limit) {
        const buffer = ring.take();
        if (buffer) {
          const n = await fill.read(buffer, position, Math.min(buffer.length, limit - position));
          if (ring.stopped) return false;
          if (n === 0) throw new Error(`the spool file of ${fill.digest} ends after ${position} of ${fill.written} bytes written`);
          position += n;
          onBytes(n);
          ring.write(buffer, 0, n);
          continue;
        }
      } else if (verified) {
        return true;
      }
      await ring.wait(); // a write called back, the fill grew or settled, or the client left
    }
  }
}
