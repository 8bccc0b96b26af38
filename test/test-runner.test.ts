// tier: unit
// The suite runner's CPU column (test/harness/run-tests.ts): what an exited child spent is counted, what a
// sleeping one did not spend is not.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { childrenCpuSeconds } from './harness/run-tests.js';

async function child(script: string): Promise<void> {
  const p = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  await once(p, 'close');
}

describe('the test runner', { skip: childrenCpuSeconds() === null ? 'no /proc/self/stat (not Linux)' : false }, () => {
  it("counts an exited child's CPU, and not its sleep", async () => {
    const before = childrenCpuSeconds()!;
    await child('const end = Date.now() + 600; while (Date.now() < end);'); // busy 0.6 s
    const busy = childrenCpuSeconds()! - before;
    assert.ok(busy >= 0.4, `a busy child: ${busy} s CPU`);
    const mark = childrenCpuSeconds()!;
    await child('setTimeout(() => {}, 600);'); // idle 0.6 s
    const idle = childrenCpuSeconds()! - mark;
    assert.ok(idle < 0.4, `a sleeping child: ${idle} s CPU`);
  });
});
