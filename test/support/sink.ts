// A Writable that keeps what a sender writes to it, standing in for a response in process. It copies a
// chunk only when it calls that write back, so a sender that reused a buffer before its write called back
// (src/cache/ring-writer.ts) shows up as wrong bytes. It can call back late (delayMs) or not at all until
// resume() (a client that stopped reading).
import { Writable } from 'node:stream';

export class Sink extends Writable {
  private readonly chunks: Buffer[] = [];
  private readonly held: (() => void)[] = [];

  constructor(private readonly options: { delayMs?: number; stalled?: boolean } = {}) {
    super();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const take = (): void => {
      this.chunks.push(Buffer.from(chunk));
      callback();
    };
    if (this.options.stalled) this.held.push(take);
    else if (this.options.delayMs) setTimeout(take, this.options.delayMs);
    else take();
  }

  /** A stalled sink takes what it was given and everything after. */
  resume(): void {
    this.options.stalled = false;
    for (const take of this.held.splice(0)) take();
  }

  /** Everything taken so far. */
  get data(): Buffer {
    return Buffer.concat(this.chunks);
  }
}
