// One pino logger for the process: JSON lines on stdout. Credentials are redacted by path as a second
// line of defence; the first is that request logs only carry the fields listed in the access log.
import { pino, type Logger } from 'pino';

export type { Logger };

export function createLogger(level: string): Logger {
  return pino({
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
  });
}
