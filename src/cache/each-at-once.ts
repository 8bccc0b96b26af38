// A task over every item, at most `limit` running at once: for work that waits on round trips or the
// disk (a bucket's HEADs and GETs, a hash per file, a stat per entry), where one at a time waits out each
// and all at once floods the other end. A task that rejects rejects the whole; the others already running
// finish on their own.
export async function eachAtOnce<T>(items: readonly T[], limit: number, task: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const runner = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) await task(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, runner));
}
