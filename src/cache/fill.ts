// One upstream download being written to the store. Bytes go to a spool file while being hashed; any
// number of readers follow the file at their own pace (a slow client never slows the fill or the others,
// and memory stays bounded: the disk is the buffer). Readers are held back by one byte until the sha256
// matches the digest, so no client ever sees a complete bad body; the fill then syncs and commits.
// Readers in other processes of the same store follow the spool file by its name (followed-fill.ts).
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import { Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ContentKind, ContentStore, Provenance, Spool } from './content-store.js';
import { FillBound } from './fill-bound.js';
import { errorCode, errorMessage } from '../telemetry/error-message.js';

export type FillState = 'filling' | 'committed' | 'failed';

export class FillError extends Error {
  constructor(
    message: string,
    // abandoned: the process writing it (a worker) died; its readers elsewhere are cut, as for any failure.
    // oversize: past its bound (fill-bound.ts), the spool dropped: readers continue from upstream (BYPASS).
    // unread: its length unknown and no client reading it any more; stalled: no client reading it, and
    // upstream sent nothing for the stall timeout (both: given up, nothing stored).
    readonly reason: 'digest-mismatch' | 'truncated' | 'upstream' | 'store' | 'abandoned' | 'oversize' | 'unread' | 'stalled',
  ) {
    super(message);
    this.name = 'FillError';
  }
}

/** The part of a spool a fill's readers use: reads by position, and its name in the store. */
export type FillBytes = Pick<Spool, 'name' | 'read' | 'close'>;

/** What bounds a fill: bytes in its spool (checked on every write), and time without progress once unread. */
export interface FillOptions {
  /** Default: the announced size, and nothing without one. */
  bound?: FillBound;
  /** A fill no client reads any more is given up after this long without a byte from upstream. */
  stallMs?: number;
}

/** Upstream's body timeout is 60 s; a fill nobody waits for gets half of that. */
export const FILL_STALL_MS = 30_000;

// Chunks queue up while a write is in flight and go to disk together (writev): upstream reads and disk
// writes overlap, and one syscall covers many of the ~16 KiB pieces TLS delivers.
const SPOOL_BUFFER = 1024 * 1024;

/**
 * A fill as its readers see it: how many bytes are in the spool, whether they are verified, how it
 * ended. Fill.start makes one that downloads into a spool of this process; another process's fill,
 * followed from its reports, is a FollowedFill (followed-fill.ts). Events: 'progress' (more bytes, or
 * verified), 'settled', 'reading' (true: its first reader came, false: its last went, while it runs).
 */
export class Fill extends EventEmitter {
  written = 0;
  state: FillState = 'filling';
  /** The bytes match the digest: readers may have all of them, before the sync and commit finish. */
  verified = false;
  error: FillError | null = null;
  /** Another process's clients read this fill (a worker that follows it says so through the primary). */
  private readElsewhere = false;
  private readers = 0;
  private closed = false;

  protected constructor(
    readonly kind: ContentKind,
    readonly digest: string,
    readonly mediaType: string,
    readonly expectedSize: number | null,
    protected readonly spool: FillBytes,
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
    options: FillOptions = {},
  ): Promise<Fill> {
    const bound = options.bound ?? (expectedSize === null ? null : FillBound.known(expectedSize));
    if (!bound) throw new Error('a fill of unknown length needs a bound'); // never a spool without one
    const spool = await store.beginSpool({ kind, digest });
    const fill = new SpoolingFill(kind, digest, mediaType, expectedSize, spool, bound, options.stallMs ?? FILL_STALL_MS);
    void fill.run(store, spool, body, from);
    return fill;
  }

  get settled(): boolean {
    return this.state !== 'filling';
  }

  /** The spool's name in the store: how another process opens it to follow this fill. */
  get spoolName(): string {
    return this.spool.name;
  }

  /** Registers a reader; false when the fill failed or is over and closed (look in the store instead). */
  acquire(): boolean {
    if (this.closed || this.state === 'failed') return false;
    if (this.readers++ === 0 && !this.settled) this.emit('reading', true);
    return true;
  }

  release(): void {
    this.readers--;
    this.closeIfIdle();
    if (this.readers === 0 && !this.settled) this.emit('reading', false);
    if (this.unread) this.lastReaderGone();
  }

  /** Whether clients of another process read it (told by the primary); when none do, the unread rules apply. */
  setReadElsewhere(reading: boolean): void {
    this.readElsewhere = reading;
    if (this.unread) this.lastReaderGone();
  }

  /** Still filling, and no client here or in another process reads it. */
  protected get unread(): boolean {
    return !this.settled && this.readers === 0 && !this.readElsewhere;
  }

  /** The fill's last reader went while it runs: a fill this process writes decides whether to go on. */
  protected lastReaderGone(): void {}

  read(buffer: Buffer, position: number, length: number): Promise<number> {
    return this.spool.read(buffer, length, position);
  }

  protected closeIfIdle(): void {
    if (this.settled && this.readers === 0 && !this.closed) {
      this.closed = true;
      // the fill already failed and said why; a close error adds nothing.
      void this.spool.close().catch(() => undefined);
    }
  }
}

/** A fill this process downloads: upstream body -> hash and spool file -> verify -> sync -> commit. */
class SpoolingFill extends Fill {
  private body: Readable | null = null;
  private givenUp: FillError | null = null;
  private stallTimer: NodeJS.Timeout | null = null;
  private writing = false; // a spool write in progress holds upstream back: no silence of upstream's

  constructor(
    kind: ContentKind,
    digest: string,
    mediaType: string,
    expectedSize: number | null,
    spool: FillBytes,
    private readonly bound: FillBound,
    private readonly stallMs: number,
  ) {
    super(kind, digest, mediaType, expectedSize, spool);
  }

  async run(store: ContentStore, spool: Spool, body: Readable, from: Provenance): Promise<void> {
    const hash = crypto.createHash('sha256');
    this.body = body;
    // Armed while the fill runs, moved on by every write; it only acts when no client reads the fill.
    this.stallTimer = setTimeout(() => this.stallCheck(), this.stallMs);
    try {
      try {
        await pipeline(body, this.spoolWriter(spool, hash));
      } catch (err) {
        if (this.givenUp) throw this.givenUp;
        if (err instanceof FillError) throw err;
        throw new FillError(`upstream body failed after ${this.written} bytes: ${errorMessage(err)}`, 'upstream');
      }
      if (this.givenUp) throw this.givenUp; // given up as the body ended
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
        await spool.sync(); // the index must never point at bytes a power cut could lose
        await store.commit(spool, { kind: this.kind, digest: this.digest, size: this.written, mediaType: this.mediaType }, from);
      } catch (err) {
        throw new FillError(`storing ${this.digest} failed: ${errorMessage(err)}`, 'store');
      }
      this.state = 'committed';
      clearTimeout(this.stallTimer);
    } catch (err) {
      body.destroy();
      this.state = 'failed';
      clearTimeout(this.stallTimer);
      this.error = err instanceof FillError ? err : new FillError(String(err), 'store');
      // the fill's own error is what is reported; a spool left by a failed discard is wiped at the next start.
      await store.discard(spool).catch(() => undefined);
    }
    this.emit('settled');
    this.closeIfIdle();
  }

  /** A fill being given up takes no new reader (it would only be cut): look in the store, then fetch. */
  override acquire(): boolean {
    return !this.givenUp && super.acquire();
  }

  /**
   * No client reads it any more. Of unknown length, it is given up at once: nobody waits for it, and
   * nothing says it will end (an endless body would fill the spool up to its bound for nothing). Of known
   * size it goes on (its room was made and the next pull gets a HIT) while upstream keeps sending.
   */
  protected override lastReaderGone(): void {
    if (this.expectedSize === null) this.giveUp(new FillError(`no client reads it and its length is unknown: given up after ${this.written} bytes`, 'unread'));
  }

  private stallCheck(): void {
    if (this.settled) return;
    if (this.unread && !this.writing)
      this.giveUp(new FillError(`no client reads it and upstream sent nothing for ${this.stallMs} ms: given up after ${this.written} bytes`, 'stalled'));
    else this.stallTimer?.refresh();
  }

  /** Stops the download; run() then fails the fill with this error and drops the spool. */
  private giveUp(error: FillError): void {
    if (this.settled || this.givenUp || this.verified) return;
    this.givenUp = error;
    this.body?.destroy(error);
  }

  private spoolWriter(spool: Spool, hash: crypto.Hash): Writable {
    const write = async (chunks: Buffer[]): Promise<void> => {
      if (this.givenUp) throw this.givenUp;
      const more = chunks.reduce((n, c) => n + c.length, 0);
      const refused = await this.bound.admit(this.written, more);
      if (refused) {
        throw new FillError(
          `${refused}: ${this.written + more} bytes and the length ${this.expectedSize === null ? 'unknown' : 'exceeded'}; spool dropped`,
          'oversize',
        );
      }
      for (const chunk of chunks) hash.update(chunk);
      let pending = chunks;
      this.writing = true;
      try {
        while (pending.length > 0) {
          let bytesWritten: number;
          try {
            bytesWritten = await spool.write(pending, this.written);
          } catch (err) {
            throw new FillError(`writing the spool file failed after ${this.written} bytes: ${errorCode(err) ?? errorMessage(err)}`, 'store');
          }
          this.written += bytesWritten;
          pending = dropBytes(pending, bytesWritten);
        }
      } finally {
        this.writing = false;
      }
      this.stallTimer?.refresh();
      this.emit('progress');
    };
    return new Writable({
      highWaterMark: SPOOL_BUFFER,
      // Both outcomes reach the stream through its callback: nothing is left for the promise to report.
      write: (chunk: Buffer, _encoding, callback) => void write([chunk]).then(() => callback(), callback),
      writev: (chunks, callback) => void write(chunks.map((c) => c.chunk as Buffer)).then(() => callback(), callback),
    });
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
