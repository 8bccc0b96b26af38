// Writes a body to its destination (a response) from a few reused buffers instead of a new Buffer per
// chunk: at hundreds of MB/s those allocations made V8 run a major GC every few tens of MB in regcache's
// heap, a third of a HIT's CPU (docs/decisions.md #71, #73). A buffer is read into again only once the
// write holding it has called back: by then a plain socket has handed its bytes to the kernel, and a TLS
// socket has encrypted them into buffers of its own (test/ring-send.test.ts checks both under slow
// readers). At most `count` writes in flight is the backpressure.
import type { Writable } from 'node:stream';

export const RING_BUFFERS = 4;

export class RingWriter {
  /** The destination went away (closed early, or a write failed): stop reading and sending. */
  stopped = false;
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private waiter: (() => void) | null = null;

  constructor(
    private readonly destination: Writable,
    private readonly size: number, // bytes per buffer: at most a chunk, no more than the body needs
    private readonly count = RING_BUFFERS,
  ) {
    if (destination.destroyed) this.stop();
    else destination.once('close', this.stop); // also after our own end: nothing is written by then
  }

  /** A buffer no write holds, allocated on first use; null while all of them are in flight (see wait). */
  take(): Buffer | null {
    if (this.free.length > 0) return this.free.pop()!;
    if (this.allocated === this.count) return null;
    this.allocated++;
    return Buffer.allocUnsafe(this.size);
  }

  /** The next free buffer, waiting for a write to call back; null when the destination went away. */
  async next(): Promise<Buffer | null> {
    for (;;) {
      if (this.stopped) return null;
      const buffer = this.take();
      if (buffer) return buffer;
      await this.wait();
    }
  }

  /** Writes bytes [from, to) of a buffer from take(); it is free again once the write called back. */
  write(buffer: Buffer, from: number, to: number): void {
    if (to <= from) {
      this.free.push(buffer);
      return;
    }
    // A write to a destroyed response may never call back: 'close' (stop) is what ends the wait then.
    this.destination.write(buffer.subarray(from, to), (err?: Error | null) => {
      if (err) this.stop();
      else this.free.push(buffer); // never reused after an error: the write may still hold it
      this.wakeUp();
    });
  }

  /** Resolves at the next write callback, wakeUp() or stop: the caller looks again at what changed. */
  wait(): Promise<void> {
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Wakes a wait() for a change outside the ring (a fill that grew). */
  wakeUp(): void {
    const waiter = this.waiter;
    this.waiter = null;
    waiter?.();
  }

  /** Ends the destination after the writes in flight; resolves once it finished, or closed first. */
  async end(): Promise<void> {
    if (this.stopped) return;
    const done = new Promise<void>((resolve) => {
      this.destination.once('finish', resolve);
      this.destination.once('close', resolve);
    });
    this.destination.end();
    await done;
  }

  private readonly stop = (): void => {
    this.stopped = true;
    this.wakeUp();
  };
}
