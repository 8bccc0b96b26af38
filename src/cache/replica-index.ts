// The read half of a ContentIndex answered from an in-memory EntryIndex replica of an index kept elsewhere:
// a worker's view of the primary's (worker-store.ts) and a fleet replica's view of the bucket's
// (bucket-index.ts). Reads are answered at once from memory; each subclass says where writes go.
import type { ContentIndex, ContentKind } from './content-store.js';
import type { Access, Entry, EntryIndex, TagPointer } from './entry-index.js';

export abstract class ReplicaIndex implements ContentIndex {
  constructor(readonly replica: EntryIndex) {}

  get size(): number {
    return this.replica.size;
  }

  get totalBytes(): number {
    return this.replica.totalBytes;
  }

  get(kind: ContentKind, digest: string): Entry | undefined {
    return this.replica.get(kind, digest);
  }

  oldestFirst(): IterableIterator<Entry> {
    return this.replica.oldestFirst();
  }

  taggedManifest(tag: string): Entry | undefined {
    return this.replica.taggedManifest(tag);
  }

  pointer(key: string): TagPointer | undefined {
    return this.replica.pointer(key);
  }

  pointersOf(tag: string): TagPointer[] {
    return this.replica.pointersOf(tag);
  }

  abstract untag(tag: string): Promise<void>;
  abstract setAccess(kind: ContentKind, digest: string, access: Access): Promise<void>;
  abstract setPointer(key: string, digest: string, checkedAt?: number): Promise<void>;
  abstract delete(kind: ContentKind, digest: string): Promise<Entry | undefined>;
}
