// tier: unit
// prefetch's progress line, in-process on a fake clock: bytes, total, rate and blob count on a terminal,
// redrawn at most every interval, cleared at the end; nothing at all when the output is not a terminal.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { TransferProgress } from '../src/commands/transfer-progress.js';

function output(isTTY: boolean) {
  const writes: string[] = [];
  return { isTTY, writes, write: (text: string) => writes.push(text) };
}

describe('TransferProgress', () => {
  it('draws one updating line: bytes of the total, rate, blob', () => {
    const out = output(true);
    let now = 1000;
    const progress = new TransferProgress(out, 'alpine:3.20', 3 * 1024 * 1024, 2, () => now, 200);
    now += 500;
    progress.add(1024 * 1024);
    assert.deepEqual(out.writes, ['\r\x1b[Kalpine:3.20  1.0 MiB / 3.0 MiB  2.0 MiB/s  blob 1/2']);
    now += 100;
    progress.add(1024 * 1024); // within the interval: not drawn
    assert.equal(out.writes.length, 1);
    now += 100;
    progress.itemDone(); // a finished blob is always drawn
    assert.equal(out.writes.at(-1), '\r\x1b[Kalpine:3.20  2.0 MiB / 3.0 MiB  2.9 MiB/s  blob 2/2');
    progress.finish();
    assert.equal(out.writes.at(-1), '\r\x1b[K');
  });

  it('omits an unknown total', () => {
    const out = output(true);
    let now = 0;
    const progress = new TransferProgress(out, 'app', null, 1, () => now);
    now = 1000;
    progress.add(2048);
    assert.match(out.writes[0]!, /app {2}2\.0 KiB {2}2\.0 KiB\/s {2}blob 1\/1$/);
  });

  it('writes nothing when the output is not a terminal', () => {
    const out = output(false);
    const progress = new TransferProgress(out, 'alpine', 100, 1);
    progress.add(100);
    progress.itemDone();
    progress.finish();
    assert.deepEqual(out.writes, []);
  });
});
