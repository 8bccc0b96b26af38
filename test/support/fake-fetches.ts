// A fake upstream for the fill coordinator's `fetch`: counts the fetches, and gives bodies the test writes.
import { PassThrough } from 'node:stream';
import type { Fetched } from '../../src/cache/fill-coordinator.js';

export class FakeFetches {
  calls = 0;
  readonly bodies: PassThrough[] = [];

  /** A 200 whose body the test writes (this.bodies), of `size` bytes. */
  ok(size: number): () => Promise<Fetched<string>> {
    return async () => {
      this.calls++;
      const stream = new PassThrough();
      this.bodies.push(stream);
      await new Promise((resolve) => setImmediate(resolve)); // an upstream answers a moment later
      return { answer: '200', body: { stream, mediaType: 'application/octet-stream', size } };
    };
  }

  /** An answer with nothing to fill (a 404). */
  declined(): () => Promise<Fetched<string>> {
    return async () => {
      this.calls++;
      await new Promise((resolve) => setImmediate(resolve));
      return { answer: '404', body: null };
    };
  }
}
