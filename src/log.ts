// One pino logger for the process: JSON lines on stdout. Credentials are redacted by path as a second
// line of defence; the first is that request logs only carry the fields listed in the access log.
import { pino, type Logger, type LoggerOptions } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

/** JSON lines; on a terminal, the same records made readable (pino-pretty, synchronous). */
export function createLogger(level: string, humanReadable = process.stdout.isTTY === true): Logger {
  const destination = humanReadable ? pretty({ colorize: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' }) : undefined;
  const options: LoggerOptions = {
    level,
    base: undefined, // no pid/hostname noise: one container, one process
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
