// tier: unit
// The suite runner (test/harness/run-tests.ts): its CPU column counts what an exited child spent, not what a
// sleeping one did not spend; a file that times out names the test it was stuck in.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { waitFor } from './harness/proc.js';
import { childrenCpuSeconds, EVENTS_REPORTER, stillRunning } from './harness/run-tests.js';
import type { TestProgress } from './harness/test-events.js';

async function child(script: string): Promise<void> {
  const p = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  await once(p, 'close');
}

describe('the test runner', { skip: childrenCpuSeconds() === null ? 'no /proc/self/stat (not Linux)' : false }, () => {
  it("counts an exited child's CPU, and not its sleep", async () => {
    const before = childrenCpuSeconds()!;
    // Busy for 0.6 s of its own CPU, not of the clock: on a loaded machine 0.6 s of wall time is less CPU.
    await child('while (process.cpuUsage().user < 600_000);');
    const busy = childrenCpuSeconds()! - before;
    assert.ok(busy >= 0.4, `a busy child: ${busy} s CPU`);
    const mark = childrenCpuSeconds()!;
    await child('setTimeout(() => {}, 600);'); // idle 0.6 s
    const idle = childrenCpuSeconds()! - mark;
    assert.ok(idle < 0.4, `a sleeping child: ${idle} s CPU`);
  });
});

describe('a test file that times out', () => {
  it('names the test it was stuck in, from the events reporter', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'regcache-runner-'));
    try {
      const file = path.join(dir, 'stuck.test.mjs');
      await writeFile(
        file,
        `import { describe, it } from 'node:test';
describe('outer', () => {
  it('finishes', () => {});
  it('hangs', () => new Promise(() => setInterval(() => {}, 1000)));
  it('never starts', () => {});
});`,
      );
      const events = path.join(dir, 'events.jsonl');
      const root = path.resolve(import.meta.dirname, '..');
      const args = ['--import', 'tsx', `--test-reporter=${EVENTS_REPORTER}`, `--test-reporter-destination=${events}`, file];
      // Without the NODE_TEST_CONTEXT a `node --test` parent sets: that would send its reports to the parent instead.
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'NODE_TEST_CONTEXT'));
      const p = spawn(process.execPath, args, { cwd: root, env, stdio: 'ignore' });
      const read = async () =>
        (await readFile(events, 'utf8').catch(() => ''))
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as TestProgress);
      const closed = once(p, 'close');
      try {
        await waitFor(async () => (await read()).some((e) => e.progress === 'start' && e.name === 'hangs'), {
          timeoutMs: 20_000,
          what: "the 'hangs' test to start",
          intervalMs: 20,
        });
      } finally {
        p.kill('SIGKILL');
        await closed;
      }
      assert.deepEqual(stillRunning((await read()).filter((e) => 'progress' in e)), [`${path.relative(root, file)}: outer > hangs`]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
