// The last bytes a fill wrote to its spool, still held in memory as the chunks upstream delivered: a
// reader that keeps up with the fill (the usual first client) copies them from here instead of reading
// them back from the spool file, which cost a thread-pool read (a pread, a futex wake-up and a callback)
// per chunk it sent (docs/decisions.md, issue 24). A reader behind the tail reads the file as before.
// Chunks are only ever appended once the spool holds them, so the tail and the file hold the same bytes;
// upstream's chunks are never reused by undici or Node's TLS (a fresh buffer per record: #73).

export class FillTail {
  private readonly chunks: Buffer[] = [];
  private start = 0; // spool position of chunks[0]
  private end = 0; // spool position after the last chunk
  private bytes = 0;

  constructor(private readonly limit: number) {}

  /** Chunks just written to the spool at position `at`; the oldest go once more than `limit` are held. */
  append(at: number, chunks: readonly Buffer[]): void {
    if (at !== this.end) this.clear(at); // not contiguous (never expected): start again from here
    for (const chunk of chunks) {
      if (chunk.length === 0) continue;
      this.chunks.push(chunk);
      this.end += chunk.length;
      this.bytes += chunk.length;
    }
    while (this.bytes > this.limit && this.chunks.length > 1) {
      const first = this.chunks.shift()!;
      this.start += first.length;
      this.bytes -= first.length;
    }
  }

  /** Copies bytes from `position` (at most `length`) into buffer; null when the tail does not hold `position`. */
  copy(buffer: Buffer, position: number, length: number): number | null {
    if (position < this.start || position >= this.end) return null;
    let offset = this.start;
    let copied = 0;
    for (const chunk of this.chunks) {
      const chunkEnd = offset + chunk.length;
      if (chunkEnd > position + copied) {
        const from = position + copied - offset;
        copied += chunk.copy(buffer, copied, from, Math.min(chunk.length, from + (length - copied)));
        if (copied === length) break;
      }
      offset = chunkEnd;
    }
    return copied;
  }

  /** Drops every chunk (the fill settled: nothing more is read from memory). */
  clear(at = this.end): void {
    this.chunks.length = 0;
    this.start = this.end = at;
    this.bytes = 0;
  }
}
