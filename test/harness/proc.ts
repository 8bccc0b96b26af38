import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';

/** A long-running child whose stdout/stderr go straight to log files. */
export interface Daemon {
  readonly child: ChildProcess;
  readonly pid: number;
  /** Resolves with the exit code (or signal name) once the child has exited. */
  readonly exited: Promise<number | string>;
  isRunning(): boolean;
  /** SIGTERM, then SIGKILL after graceMs; resolves once the child is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnDaemonOptions {
  env: Record<string, string>;
  stdoutFile: string;
  /** Defaults to stdoutFile (both streams interleaved in one log). */
  stderrFile?: string;
  cwd?: string;
}

// Children still alive when the test process exits (crash, forgotten stop) are
// killed here, so a failed run never leaves registries or dockerds behind.
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

/** The unit tier runs in process: a child process there is a file in the wrong tier (test/README.md). */
function refuseInUnitTier(command: string): void {
  if (process.env.REGCACHE_TEST_TIER === 'unit') throw new Error(`a // tier: unit file starts no process (${command}): make it // tier: e2e`);
}

export function spawnDaemon(command: string, args: string[], opts: SpawnDaemonOptions): Daemon {
  refuseInUnitTier(command);
  // Plain fds instead of pipes: nothing to drain, and logs survive for post-mortems.
  const out = openSync(opts.stdoutFile, 'a');
  const err = opts.stderrFile !== undefined && opts.stderrFile !== opts.stdoutFile ? openSync(opts.stderrFile, 'a') : out;
  let child: ChildProcess;
  try {
    child = spawn(command, args, { env: opts.env, cwd: opts.cwd, stdio: ['ignore', out, err] });
  } finally {
    closeSync(out);
    if (err !== out) closeSync(err);
  }
  live.add(child);
  let running = true;
  const exited = new Promise<number | string>((resolve) => {
    const done = (code: number | null, signal: NodeJS.Signals | null): void => {
      running = false;
      live.delete(child);
      resolve(code ?? signal ?? 'unknown');
    };
    child.once('exit', done);
    // spawn failures (ENOENT) emit 'error' without 'exit'.
    child.once('error', () => done(127, null));
  });
  const pid = child.pid ?? -1;

  async function stop(graceMs = 10_000): Promise<void> {
    if (!running) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }

  return { child, pid, exited, isRunning: () => running, stop };
}

/** Last lines of a log file, for error messages. */
export async function logTail(file: string, lines = 30): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a short command to completion, capturing output (never throws on non-zero exit). */
export function run(command: string, args: string[], opts: { env?: Record<string, string>; timeoutMs?: number; cwd?: string } = {}): Promise<RunResult> {
  refuseInUnitTier(command);
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code: code ?? (signal !== null ? 128 : 1),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Poll probe() until it returns true; throws naming `what` on timeout. */
export async function waitFor(probe: () => Promise<boolean>, opts: { timeoutMs: number; what: string; intervalMs?: number }): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.what}`);
    await sleep(opts.intervalMs ?? 100);
  }
}

/** Waits (at most a second) until a log file stops growing: servers write a request's line just after the response. */
export async function settled(file: string): Promise<void> {
  let last = -1;
  for (let i = 0; i < 40; i++) {
    const size = await stat(file).then(
      (s) => s.size,
      () => 0,
    );
    if (size === last) return;
    last = size;
    await sleep(25);
  }
}

/** Reads a log file once it stops growing (settled). */
export async function settledRead(file: string): Promise<string> {
  await settled(file);
  return readFile(file, 'utf8').catch(() => '');
}

/**
 * The complete lines of a file that only grows (a daemon's log), each read once: every call reads only
 * what was appended since the last, so a test polling a long log every few milliseconds pays for the new
 * lines, not for the whole log again. A last line with no newline yet is one being written: it waits for
 * the next call.
 */
export function appendedLines<T>(file: string, parse: (line: string) => T | undefined): () => Promise<T[]> {
  const lines: T[] = [];
  let offset = 0;
  let partial = Buffer.alloc(0);
  const readMore = async (): Promise<T[]> => {
    const handle = await open(file, 'r').catch(() => null); // not created yet: no lines so far
    if (handle === null) return [...lines];
    try {
      const { size } = await handle.stat();
      if (size > offset) {
        const chunk = Buffer.allocUnsafe(size - offset);
        const { bytesRead } = await handle.read(chunk, 0, chunk.length, offset);
        offset += bytesRead;
        const text = Buffer.concat([partial, chunk.subarray(0, bytesRead)]);
        const end = text.lastIndexOf(0x0a);
        partial = Buffer.from(text.subarray(end + 1));
        if (end >= 0)
          for (const line of text.subarray(0, end).toString('utf8').split('\n')) {
            const parsed = parse(line);
            if (parsed !== undefined) lines.push(parsed);
          }
      }
    } finally {
      await handle.close();
    }
    return [...lines];
  };
  // One read at a time: two at once would both read from the same offset.
  let queue: Promise<unknown> = Promise.resolve();
  return () => {
    const next = queue.then(readMore);
    queue = next.catch(() => undefined); // the failure is the caller's (next); the queue only orders reads
    return next;
  };
}
