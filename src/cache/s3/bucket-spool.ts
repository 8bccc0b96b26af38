// A fill's spool when the store is a bucket: the bytes go to a local spool file (CACHE_DIR/spool, which
// this replica's readers follow as for the local store) and, as whole parts accumulate, from that file to
// a multipart upload of the content's key. The disk is the queue: a bucket slower than upstream costs
// disk, not memory (one part buffer per upload in flight). Nothing is readable in the bucket until
// `publish`, which the store calls only after the fill verified the digest and `sync` uploaded the last
// part; a fill that fails is `abort`ed, and the bucket drops the parts.
import type { Bucket, UploadedPart } from './bucket.js';
import type { SpoolFile } from '../content-files.js';
import type { Spool } from '../content-store.js';

// S3's parts are 5 MiB at least (but the last); 8 MiB keeps 10,000 parts (its limit) above 80 GB.
export const PART_SIZE = 8 * 1024 * 1024;
// Parts uploaded at once per fill: enough to overlap two requests' latency, 16 MiB of buffers at most.
const PARTS_IN_FLIGHT = 2;

export class BucketSpool implements Spool {
  private uploadId: Promise<string> | null = null;
  private readonly parts: UploadedPart[] = [];
  private readonly inFlight = new Set<Promise<void>>();
  private written = 0; // bytes in the spool file
  private queued = 0; // bytes handed to part uploads (a multiple of PART_SIZE until the last part)
  private failure: Error | null = null;

  constructor(
    private readonly file: SpoolFile,
    private readonly bucket: Bucket,
    /** Where the content will live (bucket-layout.ts). */
    readonly key: string,
    private readonly partSize = PART_SIZE,
  ) {}

  get name(): string {
    return this.file.name;
  }

  /** Where the local bytes are (the store removes the file after the commit). */
  get path(): string {
    return this.file.file;
  }

  async write(chunks: Buffer[], position: number): Promise<number> {
    if (this.failure) throw this.failure; // the fill fails now, not after the whole body
    const n = await this.file.write(chunks, position);
    this.written = Math.max(this.written, position + n);
    this.uploadWholeParts();
    return n;
  }

  read(buffer: Buffer, length: number, position: number): Promise<number> {
    return this.file.read(buffer, length, position);
  }

  /** Every byte uploaded but the completing step: the last part, after the parts in flight. */
  async sync(): Promise<void> {
    await this.settleParts();
    if (this.uploadId !== null && this.written > this.queued) {
      this.startPart(this.queued, this.written);
      await this.settleParts();
    }
  }

  /** Makes the object visible in the bucket: called once the bytes are verified and synced. */
  async publish(): Promise<void> {
    if (this.uploadId === null) {
      // Smaller than one part: one PUT now, after verification, rather than a multipart upload.
      const data = Buffer.alloc(this.written);
      let read = 0;
      while (read < this.written) {
        const n = await this.file.read(data.subarray(read), this.written - read, read);
        if (n === 0) throw new Error(`the spool file ${this.name} ended after ${read} of ${this.written} bytes`);
        read += n;
      }
      await this.bucket.put(this.key, data);
      return;
    }
    const parts = [...this.parts].sort((a, b) => a.partNumber - b.partNumber);
    await this.bucket.completeUpload(this.key, await this.uploadId, parts);
  }

  /** Drops the upload: its parts are never readable. */
  async abort(): Promise<void> {
    if (this.uploadId === null) return;
    await Promise.allSettled([...this.inFlight]);
    // no upload was created: nothing to abort.
    const id = await this.uploadId.catch(() => null);
    if (id !== null) await this.bucket.abortUpload(this.key, id);
  }

  close(): Promise<void> {
    return this.file.close();
  }

  private uploadWholeParts(): void {
    while (!this.failure && this.written - this.queued >= this.partSize && this.inFlight.size < PARTS_IN_FLIGHT) {
      this.startPart(this.queued, this.queued + this.partSize);
    }
  }

  private startPart(start: number, end: number): void {
    if (this.uploadId === null) {
      this.uploadId = this.bucket.createUpload(this.key);
      // Awaited by each part once it has read its bytes from disk, and by abort: a bucket that refuses at
      // once rejects before anyone awaits it, which would end the process as unhandled (the soak's stopped
      // gateway did). The parts and abort still see the rejection.
      this.uploadId.catch(() => undefined);
    }
    this.queued = end;
    const partNumber = Math.ceil(end / this.partSize);
    const upload = (async () => {
      const data = Buffer.allocUnsafe(end - start);
      let read = 0;
      while (read < data.length) {
        const n = await this.file.read(data.subarray(read), data.length - read, start + read);
        if (n === 0) throw new Error(`the spool file ${this.name} ended at ${start + read}`);
        read += n;
      }
      this.parts.push(await this.bucket.uploadPart(this.key, await this.uploadId!, partNumber, data));
    })()
      .catch((err: Error) => {
        this.failure ??= err;
      })
      .finally(() => {
        this.inFlight.delete(upload);
        this.uploadWholeParts(); // more whole parts may have been written meanwhile
      });
    this.inFlight.add(upload);
  }

  private async settleParts(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    if (this.failure) throw this.failure;
  }
}
