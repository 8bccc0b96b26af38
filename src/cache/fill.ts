// One upstream download being written to the store. Bytes go to a spool file while being hashed; any
// number of readers follow the file at their own pace (a slow client never slows the fill or the others,
// and memory stays bounded: the disk is the buffer). Readers are held back by one byte until the sha256
// matches the digest, so no client ever sees a complete bad body; the fill then syncs and commits.
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ContentKind, ContentStore, Provenance, Spool } from './content-store.js';

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

// Chunks queue up while a write is in flight and go to disk together (writev): upstream reads and disk
// writes overlap, and one syscall covers many of the ~16 KiB pieces TLS delivers.
const SPOOL_BUFFER = 1024 * 1024;

export class Fill extends EventEmitter {
  written = 0;
  state: FillState = 'filling';
  /** The bytes match the digest: readers may have all of them, before the sync and commit finish. */
  verified = false;
  error: FillError | null = null;
  private readers = 0;
  private closed = false;

  private constructor(
    readonly kind: ContentKind,
    readonly digest: string,
    readonly mediaType: string,
    readonly expectedSize: number | null,
    private readonly spool: Spool,
    private readonly from: Provenance,
  ) {
    super();
    this.setMaxListeners(0); // one listener per waiting reader
  }

  /** Begins a spool in the store and starts copying body into it; the returned Fill is readable at once. */
  static async start(
    store: ContentStore,
    kind: ContentKind,
    digest: string,
    mediaType: string,
    expectedSize: number | null,
    body: Readable,
    from: Provenance,
  ): Promise<Fill> {
    const spool = await store.beginSpool();
    const fill = new Fill(kind, digest, mediaType, expectedSize, spool, from);
    void fill.run(store, body);
    return fill;
  }

  get settled(): boolean {
    return this.state !== 'filling';
  }

  /** Registers a reader; false when the fill failed or is over and closed (look in the store instead). */
  acquire(): boolean {
    if (this.closed || this.state === 'failed') return false;
    this.readers++;
    return true;
  }

  release(): void {
    this.readers--;
    this.closeIfIdle();
  }

  read(buffer: Buffer, position: number, length: number): Promise<number> {
    return this.spool.read(buffer, length, position);
  }

  private async run(store: ContentStore, body: Readable): Promise<void> {
    const hash = crypto.createHash('sha256');
    try {
      try {
        await pipeline(body, this.spoolWriter(hash));
      } catch (err) {
        if (err instanceof FillError) throw err;
        throw new FillError(`upstream body failed after ${this.written} bytes: ${(err as Error).message}`, 'upstream');
      }
      if (this.expectedSize !== null && this.written !== this.expectedSize) {
        throw new FillError(`upstream sent ${this.written} of ${this.expectedSize} bytes`, 'truncated');
      }
      const actual = 'sha256:' + hash.digest('hex');
      if (actual !== this.digest) {
        throw new FillError(`upstream bytes hash to ${actual}, not ${this.digest}`, 'digest-mismatch');
      }
      this.verified = true;
      this.emit('progress'); // readers may finish now; the sync below is the cache's business, not theirs
      try {
        await this.spool.sync(); // the index must never point at bytes a power cut could lose
        await store.commit(this.spool, { kind: this.kind, digest: this.digest, size: this.written, mediaType: this.mediaType }, this.from);
      } catch (err) {
        throw new FillError(`storing ${this.digest} failed: ${(err as Error).message}`, 'store');
      }
      this.state = 'committed';
    } catch (err) {
      body.destroy();
      this.state = 'failed';
      this.error = err instanceof FillError ? err : new FillError(String(err), 'store');
      await store.discard(this.spool).catch(() => undefined);
    }
    this.emit('settled');
    this.closeIfIdle();
  }

  private spoolWriter(hash: crypto.Hash): Writable {
    const write = async (chunks: Buffer[]): Promise<void> => {
      for (const chunk of chunks) hash.update(chunk);
      let pending = chunks;
      while (pending.length > 0) {
        let bytesWritten: number;
        try {
          bytesWritten = await this.spool.write(pending, this.written);
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          throw new FillError(`writing the spool file failed after ${this.written} bytes: ${e.code ?? e.message}`, 'store');
        }
        this.written += bytesWritten;
        pending = dropBytes(pending, bytesWritten);
      }
      this.emit('progress');
    };
    return new Writable({
      highWaterMark: SPOOL_BUFFER,
      write: (chunk: Buffer, _encoding, callback) => write([chunk]).then(() => callback(), callback),
      writev: (chunks, callback) => write(chunks.map((c) => c.chunk as Buffer)).then(() => callback(), callback),
    });
  }

  private closeIfIdle(): void {
    if (this.settled && this.readers === 0 && !this.closed) {
      this.closed = true;
      void this.spool.close().catch(() => undefined);
    }
  }
}

/** What is left of chunks after the first n bytes were written (writev may write part of them). */
function dropBytes(chunks: Buffer[], n: number): Buffer[] {
  let skip = n;
  let i = 0;
  while (i < chunks.length && skip >= chunks[i]!.length) skip -= chunks[i++]!.length;
  if (i === chunks.length) return [];
  return [chunks[i]!.subarray(skip), ...chunks.slice(i + 1)];
}
