// One upstream download being written to the store. Bytes go to a spool file while being hashed; any
// number of readers follow the file at their own pace (a slow client never slows the fill or the others,
// and memory stays bounded: the disk is the buffer). The fill commits only when the sha256 matches the
// digest; readers are held back by one byte until then, so no client ever sees a complete bad body.
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { ContentKind, ContentStore } from './content-store.js';

export type FillState = 'filling' | 'committed' | 'failed';

export class FillError extends Error {
  constructor(
    message: string,
    readonly reason: 'digest-mismatch' | 'truncated' | 'upstream' | 'store',
  ) {
    super(message);
    this.name = 'FillError';
  }
}

export class Fill extends EventEmitter {
  written = 0;
  state: FillState = 'filling';
  error: FillError | null = null;
  private readers = 0;
  private closed = false;

  private constructor(
    readonly kind: ContentKind,
    readonly digest: string,
    readonly mediaType: string,
    readonly expectedSize: number | null,
    private readonly spoolFile: string,
    private readonly fd: fs.FileHandle,
  ) {
    super();
    this.setMaxListeners(0); // one listener per waiting reader
  }

  /** Opens the spool file and starts copying body into it; the returned Fill is readable at once. */
  static async start(
    store: ContentStore,
    kind: ContentKind,
    digest: string,
    mediaType: string,
    expectedSize: number | null,
    body: Readable,
  ): Promise<Fill> {
    const spoolFile = store.newSpoolFile();
    const fd = await fs.open(spoolFile, 'wx+', 0o600);
    const fill = new Fill(kind, digest, mediaType, expectedSize, spoolFile, fd);
    void fill.run(store, body);
    return fill;
  }

  get settled(): boolean {
    return this.state !== 'filling';
  }

  /** Bytes readers may have now: all of them once committed, all but the last while unverified. */
  get readable(): number {
    return this.state === 'committed' ? this.written : Math.max(0, this.written - 1);
  }

  /** Registers a reader; false when the fill is over and its file closed (look in the store instead). */
  acquire(): boolean {
    if (this.closed) return false;
    this.readers++;
    return true;
  }

  release(): void {
    this.readers--;
    this.closeIfIdle();
  }

  read(buffer: Buffer, position: number, length: number): Promise<number> {
    return this.fd.read(buffer, 0, length, position).then((r) => r.bytesRead);
  }

  private async run(store: ContentStore, body: Readable): Promise<void> {
    const hash = crypto.createHash('sha256');
    try {
      try {
        for await (const chunk of body as AsyncIterable<Buffer>) {
          hash.update(chunk);
          await this.writeAll(chunk);
          this.written += chunk.length;
          this.emit('progress');
        }
      } catch (err) {
        throw new FillError(`upstream body failed after ${this.written} bytes: ${(err as Error).message}`, 'upstream');
      }
      if (this.expectedSize !== null && this.written !== this.expectedSize) {
        throw new FillError(`upstream sent ${this.written} of ${this.expectedSize} bytes`, 'truncated');
      }
      const actual = 'sha256:' + hash.digest('hex');
      if (actual !== this.digest) {
        throw new FillError(`upstream bytes hash to ${actual}, not ${this.digest}`, 'digest-mismatch');
      }
      try {
        await this.fd.datasync(); // the index must never point at bytes a power cut could lose
        await store.commitFile(this.spoolFile, this.kind, this.digest, this.written, this.mediaType);
      } catch (err) {
        throw new FillError(`storing ${this.digest} failed: ${(err as Error).message}`, 'store');
      }
      this.state = 'committed';
    } catch (err) {
      body.destroy();
      this.state = 'failed';
      this.error = err instanceof FillError ? err : new FillError(String(err), 'store');
      await fs.rm(this.spoolFile, { force: true }).catch(() => undefined);
    }
    this.emit('settled');
    this.closeIfIdle();
  }

  private async writeAll(chunk: Buffer): Promise<void> {
    let offset = 0;
    while (offset < chunk.length) {
      const { bytesWritten } = await this.fd.write(chunk, offset, chunk.length - offset, this.written + offset);
      offset += bytesWritten;
    }
  }

  private closeIfIdle(): void {
    if (this.settled && this.readers === 0 && !this.closed) {
      this.closed = true;
      void this.fd.close().catch(() => undefined);
    }
  }
}
