// bcrypt comparisons off the event loop: one worker thread runs them one after another. bcrypt is slow on
// purpose (cost 10: ~70 ms of CPU in bcryptjs); on the event loop every wrong password stalled every
// request in flight. One thread, not a pool: on a small machine a pool would let a flood of guesses take
// every core from the event loop; one thread caps password checks at one core. The queue is bounded:
// past it a comparison is refused at once (BcryptBusyError) rather than waiting seconds behind a flood.
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

// Evaluated source, so that it runs the same from src/ (tests, through tsx) and from dist/ (the server);
// bcryptjs is found from this module and loaded by its CommonJS entry.
// On Linux the nice value belongs to the thread: the worker gives way to the event loop (and to
// anything else on the machine) whenever CPU is short. Elsewhere it would lower the whole process.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const bcrypt = require(workerData.bcryptPath);
if (process.platform === 'linux') {
  try {
    require('node:os').setPriority(19);
  } catch {
    // not allowed here (seccomp, containers without the capability to change it): run at normal priority
  }
}
parentPort.on('message', ({ id, password, hash }) => {
  let match = false;
  try {
    match = bcrypt.compareSync(password, hash);
  } catch {
    // a hash bcryptjs cannot parse matches nothing
  }
  parentPort.postMessage({ id, match });
});
`;

const MAX_QUEUED = 64; // ~4.5 s of cost-10 comparisons: a check waiting longer is not worth running

export class BcryptBusyError extends Error {
  constructor() {
    super('password checks are overloaded');
    this.name = 'BcryptBusyError';
  }
}

interface Pending {
  resolve: (match: boolean) => void;
  reject: (err: Error) => void;
  worker: Worker; // the thread that owes the answer: only its loss fails the comparison
}

export class BcryptWorker {
  private worker: Worker | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private comparisons = 0;

  constructor(private readonly maxQueued = MAX_QUEUED) {}

  /** Comparisons run so far (each one bcrypt computation). */
  get runs(): number {
    return this.comparisons;
  }

  /** Whether `password` matches a bcrypt `hash`; BcryptBusyError when the queue is full. */
  compare(password: string, hash: string): Promise<boolean> {
    if (this.pending.size >= this.maxQueued) return Promise.reject(new BcryptBusyError());
    const worker = this.started();
    const id = this.nextId++;
    return new Promise<boolean>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, worker });
      if (this.pending.size === 1) worker.ref(); // keep the process alive while an answer is owed
      worker.postMessage({ id, password, hash });
    });
  }

  async close(): Promise<void> {
    const worker = this.worker;
    this.worker = null;
    await worker?.terminate();
  }

  private started(): Worker {
    if (this.worker) return this.worker;
    const bcryptPath = createRequire(import.meta.url).resolve('bcryptjs');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { bcryptPath } });
    worker.unref();
    worker.on('message', ({ id, match }: { id: number; match: boolean }) => {
      const job = this.pending.get(id);
      if (!job) return;
      this.pending.delete(id);
      this.comparisons++;
      if (this.pending.size === 0) worker.unref();
      job.resolve(match);
    });
    // A worker that dies fails what it owed, and only that (a closed thread's exit can arrive after the
    // next comparison started a new one); the next comparison starts a new one.
    const lost = (err: Error) => {
      if (this.worker === worker) this.worker = null;
      for (const [id, job] of this.pending) {
        if (job.worker !== worker) continue;
        this.pending.delete(id);
        job.reject(err);
      }
    };
    worker.on('error', lost);
    worker.on('exit', (code) => lost(new Error(`the bcrypt worker exited (${code})`)));
    this.worker = worker;
    return worker;
  }
}
