// tier: unit
// The tail of a fill held in memory (src/cache/fill-tail.ts): what it copies is exactly the spool's bytes
// at that position, across chunk boundaries, and positions it no longer (or never) held read the file.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test } from 'node:test';
import { FillTail } from '../src/cache/fill-tail.js';

/** Random bytes split into chunks of the given sizes, appended as a fill writes them (one batch per call). */
function feed(tail: FillTail, sizes: number[][]): Buffer {
  const all: Buffer[] = [];
  let at = 0;
  for (const batch of sizes) {
    const chunks = batch.map((n) => crypto.randomBytes(n));
    tail.append(at, chunks);
    for (const c of chunks) at += c.length;
    all.push(...chunks);
  }
  return Buffer.concat(all);
}

test('copies the bytes at a position across chunks, up to what it holds', () => {
  const tail = new FillTail(1 << 20);
  const spool = feed(tail, [[100, 7, 0, 300], [50]]);
  for (const [position, length] of [
    [0, 457],
    [0, 1],
    [99, 3],
    [100, 7],
    [106, 300],
    [200, 1000],
    [456, 10],
  ] as const) {
    const buffer = Buffer.alloc(length);
    const n = tail.copy(buffer, position, length);
    const want = spool.subarray(position, position + length);
    assert.equal(n, want.length, `at ${position}`);
    assert.deepEqual(buffer.subarray(0, n!), want, `at ${position}`);
  }
  assert.equal(tail.copy(Buffer.alloc(8), 457, 8), null, 'past the end: not held');
});

test('drops its oldest chunks beyond the limit: those positions are not held any more', () => {
  const tail = new FillTail(1000);
  const spool = feed(tail, [[600], [600], [600]]);
  assert.equal(tail.copy(Buffer.alloc(10), 0, 10), null);
  assert.equal(tail.copy(Buffer.alloc(10), 1199, 10), null, 'two chunks would be over the limit');
  const buffer = Buffer.alloc(600);
  assert.equal(tail.copy(buffer, 1200, 600), 600, 'the last chunk');
  assert.deepEqual(buffer, spool.subarray(1200));
  const big = new FillTail(10);
  feed(big, [[50]]);
  assert.equal(big.copy(Buffer.alloc(50), 0, 50), 50, 'one chunk over the limit is still held: the newest is never dropped');
});

test('cleared, or appended out of order, it holds nothing before the new position', () => {
  const tail = new FillTail(1 << 20);
  feed(tail, [[100]]);
  tail.clear();
  assert.equal(tail.copy(Buffer.alloc(10), 50, 10), null);
  tail.append(300, [Buffer.from('abc')]); // not at 100: starts again at 300
  assert.equal(tail.copy(Buffer.alloc(10), 100, 10), null);
  const buffer = Buffer.alloc(3);
  assert.equal(tail.copy(buffer, 300, 3), 3);
  assert.equal(buffer.toString(), 'abc');
});
