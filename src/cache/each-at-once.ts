// A task over every item, at most `limit` running at once: for work that waits on round trips or the
// disk (a bucket's HEADs and GETs, a hash per file, a stat per entry), where one at a time waits out each
// and all at once floods the other end. The first task that rejects rejects the whole and no task starts
// after it; the ones already running finish on their own.
export async function eachAtOnce<T>(items: readonly T[], limit: number, task: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  let failed = false;
  const runner = async (): Promise<void> => {
    for (let i = next++; i < items.length && !failed; i = next++) {
      try {
        await task(items[i]!);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, runner));
}
