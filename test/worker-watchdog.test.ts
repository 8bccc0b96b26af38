// tier: unit
// The primary's watchdog over its workers (src/process/worker-watchdog.ts) with fake workers: one that
// answers is left alone; one that stops answering is killed once, with one error line; and one whose
// answers arrive while the primary's own loop is held up is not mistaken for a stuck worker (its answers
// come from a worker thread, so they wait in the channel as a real worker's do).
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { after, describe, it } from 'node:test';
import { WorkerWatchdog, type WatchedWorker } from '../src/process/worker-watchdog.js';
import { createLogger } from '../src/telemetry/log.js';
import { waitFor } from './harness/proc.js';

const LIMIT_MS = 400; // the watchdog then asks every 100 ms

function logged(): { lines: { msg: string; [k: string]: unknown }[]; log: ReturnType<typeof createLogger> } {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  return { lines, log: createLogger('debug', false, 0, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) }) };
}

/** A worker whose answers are given by `answer` (never: a stuck one), counting questions and kills. */
function fakeWorker(answer: () => Promise<unknown>): WatchedWorker & { asked: number; killed: number } {
  const worker = {
    asked: 0,
    killed: 0,
    ping: () => {
      worker.asked++;
      return answer();
    },
    kill: () => void worker.killed++,
    describe: { workerId: 7, pid: 1234, slot: 2 },
  };
  return worker;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('worker watchdog', () => {
  const watchdogs: WorkerWatchdog[] = [];
  const threads: Worker[] = [];
  after(async () => {
    for (const w of watchdogs) w.close();
    await Promise.all(threads.map((t) => t.terminate()));
  });

  it('leaves a worker that answers alone', async () => {
    const { log, lines } = logged();
    const watchdog = new WorkerWatchdog(LIMIT_MS, log);
    watchdogs.push(watchdog);
    const worker = fakeWorker(() => new Promise((resolve) => setTimeout(resolve, 20)));
    watchdog.watch(1, worker);
    await waitFor(async () => worker.asked >= 12, { timeoutMs: 10_000, what: 'twelve questions (three limits)' });
    assert.equal(worker.killed, 0);
    assert.deepEqual(lines, []);
  });

  it('kills a worker that leaves a question unanswered past the limit, once, and says so', async () => {
    const { log, lines } = logged();
    const watchdog = new WorkerWatchdog(LIMIT_MS, log);
    watchdogs.push(watchdog);
    const started = Date.now();
    const stuck = fakeWorker(() => new Promise(() => undefined));
    watchdog.watch(1, stuck);
    await waitFor(async () => stuck.killed > 0, { timeoutMs: 10_000, what: 'the stuck worker to be killed' });
    assert.ok(Date.now() - started >= LIMIT_MS, 'not before the limit');
    await sleep(3 * LIMIT_MS);
    assert.equal(stuck.killed, 1, 'killed once: it is no longer watched');
    assert.equal(stuck.asked, 1, 'one question, never answered');
    const line = lines.find((l) => l.msg === 'worker stopped answering: killed, another starts');
    assert.ok(line, JSON.stringify(lines));
    assert.deepEqual([line.level, line.workerId, line.pid, line.slot], ['error', 7, 1234, 2]);
    assert.ok(Number(line.silentMs) > LIMIT_MS, `silentMs ${String(line.silentMs)}`);
  });

  it('does not kill a worker whose answer waits unread while the primary itself was held up', async () => {
    const { log, lines } = logged();
    const watchdog = new WorkerWatchdog(LIMIT_MS, log);
    watchdogs.push(watchdog);
    // The answers come from another thread, as a worker's come from another process: one that arrives
    // while this loop is blocked waits in the port until the loop reads it.
    const thread = new Worker("require('node:worker_threads').parentPort.on('message', (m) => require('node:worker_threads').parentPort.postMessage(m));", {
      eval: true,
    });
    threads.push(thread);
    let next = 0;
    const waiting = new Map<number, () => void>();
    thread.on('message', (id: number) => waiting.get(id)?.());
    let blocked = false;
    const worker = fakeWorker(() => {
      const id = next++;
      if (id === 3 && !blocked) {
        blocked = true;
        // Right after the watchdog asked: hold this loop three limits long (a long GC, a starved CPU).
        queueMicrotask(() => {
          const until = Date.now() + 3 * LIMIT_MS;
          while (Date.now() < until);
        });
      }
      return new Promise<void>((resolve) => {
        waiting.set(id, resolve);
        thread.postMessage(id);
      });
    });
    watchdog.watch(1, worker);
    await waitFor(async () => blocked && worker.asked >= 10, { timeoutMs: 10_000, what: 'the block, then more questions' });
    assert.equal(worker.killed, 0, JSON.stringify(lines));
  });
});
