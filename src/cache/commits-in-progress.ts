// Commits in progress, by content: a lookup of content being committed waits for the commit instead of
// missing it (the by-digest GET that follows a tag's GET must be a HIT; so must a worker's GET right after
// another worker's fill, or a replica's after its own). Every store keeps one: the directory's (small
// writes, and the commits its workers ask of it), a worker's (its small writes), a bucket's replica's.
import type { ContentKind } from './content-store.js';
import { entryKey } from './entry-index.js';

export class CommitsInProgress {
  /** By entry key; read by a lookup first (a plain HIT, nothing in progress: no wait at all). */
  readonly pending = new Map<string, Promise<unknown>>();

  /** Waits for a commit of this content in progress, whatever becomes of it. */
  async settled(kind: ContentKind, digest: string): Promise<void> {
    await this.pending.get(entryKey(kind, digest))?.catch(() => undefined); // its caller hears how it went
  }

  /** Runs `commit` as this content's commit in progress until it settles. */
  run<T>(kind: ContentKind, digest: string, commit: () => Promise<T>): Promise<T> {
    const key = entryKey(kind, digest);
    const run = commit().finally(() => {
      if (this.pending.get(key) === run) this.pending.delete(key);
    });
    this.pending.set(key, run);
    return run;
  }
}
