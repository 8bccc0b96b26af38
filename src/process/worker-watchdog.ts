// The primary's check that each serving worker's event loop still runs (WORKER_STALL_TIMEOUT). A worker that
// is alive but stuck (a loop that never yields, a process stopped by a signal or a debugger) answers
// nothing: the connections it holds hang, the one handed to it waits, and nothing replaces it, since it
// never exits. So the primary asks each one a question that its event loop answers, and kills a worker
// that leaves one unanswered past the limit; the usual exit handling closes what it held and starts
// another (primary.ts).
import type { Logger } from '../telemetry/log.js';

/** One worker as the watchdog sees it. */
export interface WatchedWorker {
  /** Answered by the worker's event loop; rejects only when the channel is gone (then it exits anyway). */
  ping(): Promise<unknown>;
  kill(): void;
  /** What the log line says about it (workerId, pid, slot). */
  describe: Record<string, unknown>;
}

interface Watch {
  id: number;
  worker: WatchedWorker;
  pendingSince: number | null; // when the question not yet answered was asked
}

// How often each worker is asked: often enough that a stall is seen soon after the limit, at most every 5 s.
const MAX_INTERVAL_MS = 5_000;
const MIN_INTERVAL_MS = 100;

export class WorkerWatchdog {
  private readonly watched = new Map<number, Watch>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly limitMs: number,
    private readonly log: Logger,
  ) {
    const interval = Math.max(MIN_INTERVAL_MS, Math.min(MAX_INTERVAL_MS, Math.floor(limitMs / 4)));
    this.timer = setInterval(() => this.tick(), interval);
    this.timer.unref();
  }

  /** Watches a worker from now (once it serves: starting up may block its loop longer). */
  watch(id: number, worker: WatchedWorker): void {
    this.watched.set(id, { id, worker, pendingSince: null });
  }

  forget(id: number): void {
    this.watched.delete(id);
  }

  close(): void {
    clearInterval(this.timer);
    this.watched.clear();
  }

  private tick(): void {
    const now = Date.now();
    const late: Watch[] = [];
    for (const watch of this.watched.values()) {
      if (watch.pendingSince === null) this.ask(watch, now);
      else if (now - watch.pendingSince > this.limitMs) late.push(watch);
    }
    if (late.length === 0) return;
    // After this process's own loop was held up (a long GC, CPU starvation), the answers may be waiting
    // unread in the channel: a timer runs before the loop reads them. setImmediate runs after it has.
    setImmediate(() => {
      for (const watch of late) {
        const since = watch.pendingSince;
        if (since === null || this.watched.get(watch.id) !== watch) continue; // answered, or exited meanwhile
        this.forget(watch.id);
        this.log.error({ ...watch.worker.describe, silentMs: Date.now() - since }, 'worker stopped answering: killed, another starts');
        watch.worker.kill();
      }
    });
  }

  private ask(watch: Watch, now: number): void {
    watch.pendingSince = now;
    watch.worker.ping().then(
      () => {
        watch.pendingSince = null;
      },
      () => undefined, // the channel closed: the worker is exiting, and its exit is handled (and forgets it)
    );
  }
}
