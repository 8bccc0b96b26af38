// A task over every item, at most `limit` running at once (the soak's set-up and checks wait on round
// trips: a push, a GET of a lock object).
export async function eachAtOnce<T>(items: readonly T[], limit: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const runner = async (): Promise<void> => {
    for (let i = next++; i < items.length; i = next++) await task(items[i]!);
  };
  await Promise.all(Array.from({ length: limit }, runner));
}
