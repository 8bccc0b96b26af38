// Deleting a digest's bytes from the bucket, as a removal (`cache rm`, a corrupt copy), the sweeper (evicted
// content past its grace) and `cache verify` (content no entry names) do (decision #121). Other replicas
// go on meanwhile, so the delete races two things: a fill of the same digest (its live lock: the bytes are
// left alone, the fill's commit needs the key) and a fill that committed between the checks and the
// delete (its entry is made a miss again).
import type { Bucket } from './bucket.js';
import type { BucketLayout } from './bucket-layout.js';
import type { BucketIndex } from './bucket-index.js';
import type { ContentKind } from '../content-store.js';
import { lapsedLocks } from './fill-lock.js';

export interface BucketParts {
  bucket: Bucket;
  layout: BucketLayout;
  index: BucketIndex;
}

/** 'filling': a fill of it runs; 'referenced': an entry names the bytes; otherwise the size deleted (null: there were no bytes). */
export type Deletion = 'filling' | 'referenced' | { bytes: number | null };

const KINDS: readonly ContentKind[] = ['blob', 'manifest'];

/**
 * Deletes `digest`'s bytes unless a fill under one of `kinds` holds a live lock or an entry of either kind
 * names them, with the lapsed fill locks of the `kinds` that have no entry (the locks go with the content).
 */
export async function deleteContent({ bucket, layout, index }: BucketParts, digest: string, kinds: readonly ContentKind[]): Promise<Deletion> {
  const named = new Set<ContentKind>();
  for (const kind of KINDS) if (await bucket.head(layout.entry(kind, digest))) named.add(kind);
  const locks: string[] = [];
  for (const kind of kinds) {
    if (named.has(kind)) continue;
    const lapsed = await lapsedLocks(bucket, layout.fillsOf(kind, digest));
    if (lapsed === null) return 'filling';
    locks.push(...lapsed);
  }
  let bytes: number | null = null;
  if (named.size === 0) {
    const content = await bucket.head(layout.content(digest));
    await bucket.delete(layout.content(digest));
    bytes = content?.size ?? null;
    // A fill that claimed, fetched and committed between the checks above and the delete (a few requests'
    // time) left an entry whose bytes are gone: make it a miss again.
    for (const kind of KINDS) if (await bucket.head(layout.entry(kind, digest))) await index.delete(kind, digest);
  }
  await Promise.all(locks.map((key) => bucket.delete(key)));
  return named.size === 0 ? { bytes } : 'referenced';
}
