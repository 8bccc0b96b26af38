// For a test file whose header says `// exclusive: alone once set up`: the runner starts it beside the last
// files of the pool, and this waits for them to end before the part that needs the machine to itself (the
// soak's minute of load). REGCACHE_TEST_ALONE names the file the runner creates once the pool has drained;
// without it (the file run on its own, or after the pool), the machine is the file's already.
import { access } from 'node:fs/promises';
import { waitFor } from './proc.js';

export async function machineToItself(): Promise<void> {
  const signal = process.env.REGCACHE_TEST_ALONE;
  if (signal === undefined) return;
  await waitFor(
    () =>
      access(signal).then(
        () => true,
        () => false, // not yet: the pool is still running
      ),
    // The pool's files have time limits of their own (15 min each): this outlasting them means the runner is gone.
    { timeoutMs: 60 * 60_000, what: 'the other test files to end (the runner creates REGCACHE_TEST_ALONE then)', intervalMs: 100 },
  );
}
