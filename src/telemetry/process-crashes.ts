// An exception or a rejection that nothing caught ends the process (Node's default, kept: the state is
// unknown). Node prints it to stderr as plain text, which a log of JSON lines loses; this logs it first,
// as a fatal line with the stack, so a crashed worker says why in the same log as everything else.
import type { Logger } from './log.js';

export function logProcessCrashes(log: Logger): void {
  process.on('uncaughtExceptionMonitor', (err: unknown, origin) => {
    const error = err instanceof Error ? err : new Error(String(err));
    log.fatal({ error: error.message, stack: error.stack, origin }, 'crashed');
  });
}
