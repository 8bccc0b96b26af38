// tier: unit
// How long the primary waits before replacing a worker that exited: doubling per exit in a row of a
// slot, capped, and back to the first delay once a worker ran long enough.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RESTART_BACKOFF, RestartBackoff } from '../src/process/restart-backoff.js';

describe('RestartBackoff', () => {
  it('doubles the delay with every exit in a row of the same slot, up to the cap', () => {
    const b = new RestartBackoff({ firstMs: 100, maxMs: 1000, resetAfterMs: 30_000 });
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map(() => b.next(0, 10)),
      [100, 200, 400, 800, 1000, 1000],
    );
  });

  it('counts each slot on its own', () => {
    const b = new RestartBackoff({ firstMs: 100, maxMs: 10_000, resetAfterMs: 30_000 });
    b.next(0, 10);
    b.next(0, 10);
    assert.equal(b.next(1, 10), 100, 'another slot starts at the first delay');
    assert.equal(b.next(0, 10), 400);
  });

  it('starts again at the first delay once a worker ran resetAfterMs', () => {
    const b = new RestartBackoff({ firstMs: 100, maxMs: 10_000, resetAfterMs: 30_000 });
    for (let i = 0; i < 5; i++) b.next(0, 10);
    assert.equal(b.next(0, 30_000), 100, 'a worker that ran 30 s was not a crash loop');
    assert.equal(b.next(0, 29_999), 200, 'the count goes on from there');
  });

  it('defaults to 100 ms doubling to 10 s, reset after 30 s', () => {
    assert.deepEqual(RESTART_BACKOFF, { firstMs: 100, maxMs: 10_000, resetAfterMs: 30_000 });
    const b = new RestartBackoff();
    const delays = Array.from({ length: 10 }, () => b.next(0, 0));
    assert.equal(delays[0], 100);
    assert.equal(delays.at(-1), 10_000);
  });
});
