// Copies what one socket reads to a writable through a single reused buffer (net's `onread` option)
// instead of a new Buffer per read. At hundreds of MB/s those per-read allocations made V8 run a major
// GC every few tens of MB in regcache's heap: about a third of a tunnel's CPU (docs/decisions.md #72).
// The buffer is only read into again once the previous chunk has left it: at once when the write went
// to the kernel synchronously (the usual case), otherwise after that write's callback (reading pauses
// meanwhile, which is also the backpressure).
import type net from 'node:net';
import type { Writable } from 'node:stream';

const READ_BUFFER = 64 * 1024; // what libuv asks for per read anyway

export class ReusedBufferCopy {
  /** Bytes copied so far. */
  bytes = 0;
  /** For net.connect({ onread }): the socket created with it is the source. */
  readonly onread: net.OnReadOpts;
  private source: net.Socket | null = null;
  private paused = false;
  private readonly early: Buffer[] = []; // read before start(): copies, written first

  constructor(private readonly destination: Writable) {
    const buffer = Buffer.allocUnsafe(READ_BUFFER);
    this.onread = { buffer, callback: (n) => this.copy(buffer.subarray(0, n)) };
  }

  /** Begins copying from source (the socket created with this.onread); its end ends the destination. */
  start(source: net.Socket): void {
    this.source = source;
    source.once('end', () => this.destination.end());
    for (const chunk of this.early.splice(0)) this.destination.write(chunk);
    source.resume(); // reading stopped if bytes came early
  }

  private copy(chunk: Buffer): boolean {
    this.bytes += chunk.length;
    if (!this.source) {
      // Not expected (the tunnel starts the copy in the tick its connection opens), but never lost.
      this.early.push(Buffer.from(chunk));
      return false; // until start()
    }
    this.destination.write(chunk, this.written);
    // Writable's length drops synchronously when the write completed at once: the buffer is free again.
    if (this.destination.writableLength === 0) return true;
    this.paused = true; // returning false stops reading until resume()
    return false;
  }

  // Write callbacks come in order, and nothing is written while paused: the first one after a pause is the
  // paused write's (those of writes that completed at once run on the next tick, before the next read).
  private readonly written = (err?: Error | null): void => {
    if (!this.paused || err || !this.source || this.source.destroyed) return;
    this.paused = false;
    this.source.resume();
  };
}
