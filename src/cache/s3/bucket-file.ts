// Stored content in a bucket, opened for reading (a ContentFile): sequential reads, as a HIT makes them
// (verified-file-reader.ts reads the whole object in order), are served from one ranged GET kept open
// and read only as fast as the reader asks (the response body is paused between reads: TCP pushes back
// on the bucket), so a slow client holds one connection and a stream buffer, never the object in memory.
// A read at another position starts a new ranged GET there.
import type { Readable } from 'node:stream';
import type { Bucket } from './bucket.js';
import type { ContentFile } from '../content-store.js';

export class BucketFile implements ContentFile {
  private body: AsyncIterator<Buffer> | null = null;
  private source: Readable | null = null;
  private position = 0; // the next byte `body` gives
  private leftover: Buffer | null = null;

  constructor(
    private readonly bucket: Bucket,
    private readonly key: string,
    readonly size: number,
    private readonly onClose: () => void = () => undefined, // the store's count of reads open (bucket-eviction.ts)
  ) {}

  async read(buffer: Buffer, length: number, position: number): Promise<number> {
    if (position >= this.size || length === 0) return 0;
    if (this.body === null || position !== this.position) await this.reopen(position);
    let filled = 0;
    while (filled < length) {
      let chunk = this.leftover;
      this.leftover = null;
      if (chunk === null) {
        const next = await this.body!.next();
        if (next.done) break;
        chunk = next.value;
      }
      const take = Math.min(chunk.length, length - filled);
      chunk.copy(buffer, filled, 0, take);
      filled += take;
      if (take < chunk.length) this.leftover = chunk.subarray(take);
    }
    this.position += filled;
    return filled;
  }

  async close(): Promise<void> {
    this.onClose();
    await this.drop();
  }

  private async drop(): Promise<void> {
    this.source?.destroy();
    this.source = null;
    this.body = null;
  }

  private async reopen(position: number): Promise<void> {
    await this.drop();
    const source = await this.bucket.read(this.key, position, this.size - 1);
    if (!source) throw new Error(`${this.key} is gone from the bucket`);
    this.source = source;
    this.body = (source as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    this.position = position;
    this.leftover = null;
  }
}
