// Warnings that libraries raise with process.emitWarning (the AWS SDK's multi-line note about Node's
// version, deprecations) go through the logger: Node would print them to stderr as plain text, which
// breaks a log of JSON lines (docker logs merges both streams). The first of each kind is logged at warn,
// the rest at debug: some libraries warn on every call.
import type { Logger } from './log.js';

export function logProcessWarnings(log: Logger): void {
  process.removeAllListeners('warning'); // Node's own printer
  const seen = new Set<string>();
  process.on('warning', (warning: Error & { code?: string }) => {
    const kind = `${warning.name}:${warning.code ?? warning.message.split('\n', 1)[0]}`;
    const first = !seen.has(kind) && seen.size < 100;
    seen.add(kind);
    log[first ? 'warn' : 'debug']({ warning: warning.name, code: warning.code, detail: warning.message }, 'process warning');
  });
}
