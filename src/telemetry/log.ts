// One pino logger for the process: JSON lines on stdout, or (LOG_FORMAT=pretty, the default on a
// terminal) the same records as one readable line each (pretty-lines.ts). Credentials are redacted by
// path as a second line of defence; the first is that request logs only carry the fields listed in the
// access log. With WORKERS > 1 every line carries `worker` (0: the primary), and the processes share
// stdout: each write is whole lines of at most PIPE_BUF bytes, which a pipe (docker logs) never
// interleaves with another's.
import { pino, type DestinationStream, type Logger, type LoggerOptions } from 'pino';
import { prettyLine } from './pretty-lines.js';

export type { Logger };

// Linux's PIPE_BUF: writes up to this size to a pipe are atomic.
const ATOMIC_PIPE_WRITE = 4096;

/**
 * JSON lines; `humanReadable` (default: on a terminal), the same records as readable lines, coloured on a
 * terminal. `worker`: this process's place in a tree of processes (0 for the
 * primary), added to every line. `to`: where the JSON lines go instead of stdout (a regcache started in a
 * test's own process: test/support/in-process-regcache.ts).
 */
export function createLogger(level: string, humanReadable = process.stdout.isTTY === true, worker?: number, to?: DestinationStream): Logger {
  const destination =
    to ??
    (humanReadable
      ? prettyDestination(process.stdout.isTTY === true)
      : worker !== undefined
        ? pino.destination({ dest: 1, maxWrite: ATOMIC_PIPE_WRITE })
        : undefined);
  const options: LoggerOptions = {
    level,
    base: worker === undefined ? undefined : { worker }, // no pid/hostname noise
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    redact: {
      paths: [
        'authorization',
        'proxyAuthorization',
        '*.authorization',
        '*.Authorization',
        '*.proxy-authorization',
        'headers.authorization',
        'headers.cookie',
        'password',
        '*.password',
        'token',
        '*.token',
      ],
      censor: '[redacted]',
    },
  };
  return (destination ? pino(options, destination) : pino(options)) as Logger;
}

/** Rewrites each JSON record as one readable line (stdout is synchronous on Linux for a terminal, a file or a pipe). */
function prettyDestination(colour: boolean): DestinationStream {
  return {
    write(record: string): void {
      let line: string;
      try {
        line = prettyLine(JSON.parse(record) as Record<string, unknown>, colour);
      } catch {
        line = record; // not a record we can read: written as it came, never lost
      }
      process.stdout.write(line);
    },
  };
}
