// Runs regcache as a real process (node dist/cli.js serve) and reads its JSON log lines.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../../src/telemetry/error-message.js';
import { seedCaDir } from './ca-template.js';
import { appendedLines, logTail, settled, spawnDaemon, waitFor, type Daemon } from './proc.js';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli.js');

export interface LogLine {
  level: string;
  msg: string;
  cache?: string;
  kind?: string;
  method?: string;
  host?: string;
  path?: string;
  status?: number;
  bytes?: number;
  digest?: string;
  coalesced?: boolean;
  error?: string;
  [field: string]: unknown;
}

/** A running regcache as a test sees it: spawned (startRegcache) or in the test's process (test/support/in-process-regcache.ts). */
export interface RunningRegcache {
  port: number;
  mirrorPort: number | null; // MIRROR_PORT when the test turned the mirror on
  proxyUrl: string; // http://127.0.0.1:PORT
  caFile: string;
  cacheDir: string;
  logs(): Promise<LogLine[]>;
  /** Request lines (msg "request") logged since the given count of lines. */
  requests(since?: number): Promise<LogLine[]>;
  /**
   * The first line matching `predicate`, waiting up to timeoutMs (default 30 s) for it; with `since` (a
   * logMark() taken before the action), only among the lines logged after the mark, so that a line an
   * earlier step or test wrote cannot satisfy the wait.
   */
  waitForLog(predicate: (line: LogLine) => boolean, what: string, options?: number | { timeoutMs?: number; since?: number }): Promise<LogLine>;
  /** How many lines are logged so far: a mark for waitForLog's `since`. */
  logMark(): Promise<number>;
  stop(): Promise<void>;
}

export interface Regcache extends RunningRegcache {
  logFile: string;
  daemon: Daemon;
}

/**
 * RunningRegcache.waitForLog over `read` (the lines so far), polled every intervalMs; `check` may throw
 * to end the wait early (the process is gone).
 */
const LINES_ON_TIMEOUT = 20;

export async function waitForLogLine(
  read: () => Promise<LogLine[]>,
  predicate: (line: LogLine) => boolean,
  what: string,
  options: number | { timeoutMs?: number; since?: number },
  poll: { intervalMs: number; check?: () => Promise<void> },
): Promise<LogLine> {
  const { timeoutMs = 30_000, since = 0 } = typeof options === 'number' ? { timeoutMs: options } : options;
  let found: LogLine | undefined;
  try {
    await waitFor(
      async () => {
        await poll.check?.();
        found = (await read()).slice(since).find(predicate);
        return found !== undefined;
      },
      { timeoutMs, what, intervalMs: poll.intervalMs },
    );
  } catch (err) {
    // A wait that never ends is diagnosed from what regcache did meanwhile: the failure carries its last lines.
    const lines = await read().catch(() => []);
    const tail = lines.slice(Math.max(since, lines.length - LINES_ON_TIMEOUT)).map((l) => JSON.stringify(l));
    throw new Error(`${errorMessage(err)}; regcache's last ${tail.length} lines:\n${tail.join('\n')}`, { cause: err });
  }
  return found!;
}

/**
 * The request lines (since the mark) that match, once there are at least `count` of them. regcache writes a
 * request's line when it sees the response close, which can come after the client has read the last byte: a
 * test that just got its answer waits for the line rather than reads the log at once.
 */
export async function requestLines(
  regcache: Pick<RunningRegcache, 'requests'>,
  match: (line: LogLine) => boolean,
  count: number,
  options: { since?: number; timeoutMs?: number } = {},
): Promise<LogLine[]> {
  let lines: LogLine[] = [];
  try {
    await waitFor(
      async () => {
        lines = (await regcache.requests(options.since)).filter(match);
        return lines.length >= count;
      },
      { timeoutMs: options.timeoutMs ?? 30_000, what: `${count} matching request lines`, intervalMs: 20 },
    );
  } catch (err) {
    throw new Error(`${errorMessage(err)}; ${lines.length} found: ${lines.map((l) => JSON.stringify(l)).join('\n')}`, { cause: err });
  }
  return lines;
}

export interface RegcacheOptions {
  dir: string; // holds certs/, cache/, regcache.log
  env?: Record<string, string>;
  caDir?: string; // share a CA between runs (default DIR/certs)
  freshCa?: boolean; // let regcache create CA_DIR and its CA (by default a new CA_DIR is seeded with the run's: ca-template.ts)
  cacheDir?: string;
  umask?: string; // e.g. '000': run under this umask (through sh, which execs node: the pid stays the daemon's)
  cli?: string; // another build's dist/cli.js (a bench comparing builds); default this tree's
  startTimeoutMs?: number; // how long it may take to listen (default 60 s); past it the process is stopped
}

export async function startRegcache(opts: RegcacheOptions): Promise<Regcache> {
  const caDir = opts.caDir ?? path.join(opts.dir, 'certs');
  const cacheDir = opts.cacheDir ?? path.join(opts.dir, 'cache');
  await mkdir(opts.dir, { recursive: true });
  if (opts.freshCa !== true) await seedCaDir(caDir);
  const logFile = path.join(opts.dir, `regcache-${Date.now()}.log`);
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    PORT: '0',
    MIRROR_PORT: '0', // off unless a test asks for it (the default 5000 would collide between processes)
    CA_DIR: caDir,
    CACHE_DIR: cacheDir,
    LOG_LEVEL: 'debug',
    // One process unless a test asks for workers (test/workers.test.ts): faster to start, and a test's
    // requests all meet the same process, whatever connection they come on.
    WORKERS: '1',
    ...opts.env,
  };
  const cli = opts.cli ?? CLI;
  const [command, args]: [string, string[]] =
    opts.umask === undefined ? [process.execPath, [cli, 'serve']] : ['/bin/sh', ['-c', `umask ${opts.umask}; exec "$0" "$@"`, process.execPath, cli, 'serve']];
  const daemon = spawnDaemon(command, args, { env, stdoutFile: logFile, cwd: opts.dir });

  const logs = appendedLines(logFile, parseLogLine);
  const waitForLog: Regcache['waitForLog'] = (predicate, what, options = {}) =>
    waitForLogLine(logs, predicate, what, options, {
      intervalMs: 25,
      check: async () => {
        if (!daemon.isRunning()) throw new Error(`regcache exited while waiting for ${what}:\n${await logTail(logFile)}`);
      },
    });

  // With WORKERS > 1 the primary says 'listening' once every worker does.
  // A start that fails or times out leaves no process behind holding the ports. The wait ends as soon as
  // the line comes, or the process exits: its limit only bounds a hang, so it is generous (a loaded machine
  // running test files side by side took more than 15 s to start WORKERS=2).
  const listening = await waitForLog((l) => l.msg === 'listening', 'regcache to listen', opts.startTimeoutMs ?? 60_000).catch(async (err: unknown) => {
    await daemon.stop(5000);
    throw err;
  });
  const port = Number(listening.port);
  return {
    port,
    mirrorPort: typeof listening.mirrorPort === 'number' ? listening.mirrorPort : null,
    proxyUrl: `http://127.0.0.1:${port}`,
    caFile: path.join(caDir, 'ca.crt'),
    cacheDir,
    logFile,
    daemon,
    logs,
    // A request line is written when the server sees the response close, which can come just after the
    // client has its last byte: wait until the log stops growing before reading.
    requests: async (since = 0) => {
      await settled(logFile);
      return (await logs()).slice(since).filter((l) => l.msg === 'request');
    },
    waitForLog,
    logMark: async () => (await logs()).length,
    stop: () => daemon.stop(5000),
  };
}

/**
 * regcache's JSON log lines in `text` (a log file, `docker logs`), other lines skipped. A last line with no
 * newline yet is one being written (the file is read while regcache writes it): left for the next read.
 */
export function parseLogLines(text: string): LogLine[] {
  const lines = text.split('\n');
  lines.pop(); // after the last newline: '' or a line still being written
  return lines.map(parseLogLine).filter((l) => l !== undefined);
}

/** One line of regcache's log: its JSON, or undefined for a line that is not regcache's (Node's warnings). */
export function parseLogLine(line: string): LogLine | undefined {
  return line.startsWith('{') ? (JSON.parse(line) as LogLine) : undefined;
}
