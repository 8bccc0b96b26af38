// tier: unit
// The suite runner (test/harness/run-tests.ts): its CPU column counts what an exited child spent, not what a
// sleeping one did not spend; a file that times out names the test it was stuck in; a file that sets up
// beside the pool starts as the pool hands out its last job and is told when the pool has drained.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { waitFor } from './harness/proc.js';
import { machineToItself } from './harness/machine-to-itself.js';
import { childrenCpuSeconds, EVENTS_REPORTER, pool, readHeader, stillRunning, type Job } from './harness/run-tests.js';
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

describe('an exclusive file that sets up beside the pool', () => {
  it('is told by its header', () => {
    assert.deepEqual(readHeader('// tier: e2e\n// exclusive: alone once set up (why)\nimport x;'), { tier: 'e2e', exclusive: true, setsUpBeside: true });
    assert.deepEqual(readHeader('// tier: e2e\n// exclusive: alone (why)\n'), { tier: 'e2e', exclusive: true, setsUpBeside: false });
    assert.deepEqual(readHeader('// tier: unit\n'), { tier: 'unit', exclusive: false, setsUpBeside: false });
  });

  it('starts as the pool hands out its last job: once, after a slot came free, before that job ends', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'regcache-runner-'));
    try {
      // Each job leaves a file when it ends; two slots for three jobs, so the third waits for the first.
      const job = (name: string, ms: number): Job => ({
        name,
        kind: 'check',
        command: [process.execPath, '-e', `setTimeout(() => require('node:fs').writeFileSync(${JSON.stringify(path.join(dir, name))}, ''), ${ms})`],
        timeoutMs: 30_000,
        testFile: false,
      });
      const seen: { ended: string[] }[] = [];
      const results = await pool([job('a', 100), job('b', 1500), job('c', 500)], 2, dir, undefined, () =>
        seen.push({ ended: ['a', 'b', 'c'].filter((n) => existsSync(path.join(dir, n))) }),
      );
      assert.equal(results.length, 3);
      assert.equal(seen.length, 1, 'told once');
      assert.deepEqual(seen[0]!.ended, ['a'], 'when the first job had ended and the last not');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('waits in machineToItself until the runner creates REGCACHE_TEST_ALONE, and not at all without it', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'regcache-runner-'));
    const saved = process.env.REGCACHE_TEST_ALONE;
    try {
      delete process.env.REGCACHE_TEST_ALONE;
      await machineToItself(); // run on its own: at once
      const signal = path.join(dir, 'machine-to-itself');
      process.env.REGCACHE_TEST_ALONE = signal;
      let alone = false;
      const waiting = machineToItself().then(() => (alone = true));
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(alone, false, 'still waiting while the pool runs');
      await writeFile(signal, '');
      await waiting;
      assert.ok(alone);
    } finally {
      if (saved === undefined) delete process.env.REGCACHE_TEST_ALONE;
      else process.env.REGCACHE_TEST_ALONE = saved;
      await rm(dir, { recursive: true, force: true });
    }
  });
});
