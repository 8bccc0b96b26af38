// Small verified bodies (manifests by tag) are stored at once rather than filled: written to a new spool
// file, synced, committed. A lookup of the same content meanwhile waits for the write instead of missing
// it (the by-digest GET that follows a tag's GET must be a HIT). Used by LocalStore and WorkerStore.
import fs from 'node:fs/promises';
import type { ContentKind } from './content-store.js';
import { writeSpool } from './content-files.js';
import { entryKey } from './entry-index.js';

export class SmallWrites {
  private readonly pending = new Map<string, Promise<void>>();

  /** Waits for a write of this content in progress, whatever becomes of it. */
  async settled(kind: ContentKind, digest: string): Promise<void> {
    await this.pending.get(entryKey(kind, digest))?.catch(() => undefined);
  }

  /**
   * Writes `data` to the spool file `name` in the store `dir`, syncs it, then hands it to `commit`; the
   * file is removed if the commit fails.
   */
  write(dir: string, name: string, kind: ContentKind, digest: string, data: Buffer, commit: (file: string) => Promise<unknown>): Promise<void> {
    const key = entryKey(kind, digest);
    const write = (async () => {
      const file = await writeSpool(dir, name, data);
      try {
        await commit(file);
      } catch (err) {
        await fs.rm(file, { force: true });
        throw err;
      }
    })().finally(() => {
      if (this.pending.get(key) === write) this.pending.delete(key);
    });
    this.pending.set(key, write);
    return write;
  }
}
