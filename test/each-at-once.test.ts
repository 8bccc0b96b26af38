// tier: unit
// The bounded pool the core and the stores share (src/cache/each-at-once.ts): every item once, never more
// than the limit at once, and after a task fails no new task starts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as tick } from 'node:timers/promises';
import { eachAtOnce } from '../src/cache/each-at-once.js';

describe('eachAtOnce', () => {
  it('runs every item once, at most `limit` at a time, and uses the limit', async () => {
    const items = Array.from({ length: 20 }, (_, i) => i);
    const seen: number[] = [];
    let running = 0;
    let most = 0;
    await eachAtOnce(items, 4, async (i) => {
      running++;
      most = Math.max(most, running);
      await tick();
      seen.push(i);
      running--;
    });
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      items,
    );
    assert.equal(most, 4);
  });

  it('starts no task after one fails, lets the running ones finish, and rejects with that failure', async () => {
    const started: number[] = [];
    const finished: number[] = [];
    const failure = new Error('item 2 failed');
    await assert.rejects(
      eachAtOnce([0, 1, 2, 3, 4, 5, 6, 7], 3, async (i) => {
        started.push(i);
        await tick();
        if (i === 2) throw failure;
        await tick();
        finished.push(i);
      }),
      failure,
    );
    await tick();
    await tick();
    assert.deepEqual(started, [0, 1, 2], 'nothing started after the failure');
    assert.deepEqual(finished.sort(), [0, 1], 'the others already running finished');
  });

  it('does nothing for no items', async () => {
    let calls = 0;
    await eachAtOnce([], 8, () => Promise.resolve(calls++));
    assert.equal(calls, 0);
  });
});
