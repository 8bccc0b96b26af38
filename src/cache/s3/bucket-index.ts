// The index as a replica of the S3 store sees it: an in-memory EntryIndex (the same code that answers for
// the local store and for workers) built from the bucket's facts (bucket-layout.ts) and refreshed from
// them, so that every replica's listings, tags and pointers converge on what the bucket holds. Reads are
// answered from memory at once; writes go to the bucket first, then into memory. What another replica
// committed a moment ago is not waited for here: the store's lookup asks the bucket for content the
// replica does not know (fetchEntry).
import type { Bucket, ObjectInfo } from './bucket.js';
import type { BucketLayout } from './bucket-layout.js';
import type { ContentKind } from '../content-store.js';
import { EntryIndex, entryKey, type Access, type Entry, type IndexOp, type TagPointer } from '../entry-index.js';
import { ReplicaIndex } from '../replica-index.js';
import { eachAtOnce } from '../each-at-once.js';

/** What a replica keeps of an entries/ object: the facts that never change once written. */
export interface EntryFacts {
  kind: ContentKind;
  digest: string;
  size: number;
  mediaType: string;
  created: number;
}

// Entry objects fetched at once during a refresh (a replica that starts on a full bucket).
const FETCH_CONCURRENCY = 16;

export class BucketIndex extends ReplicaIndex {
  // Entries this replica learned since (ms): a refresh whose LIST began before must not drop them.
  private readonly learnedAt = new Map<string, number>();
  // ETags of the tag and pointer objects last read: a refresh GETs only those that changed.
  private readonly seenTags = new Map<string, string>();
  private readonly seenPointers = new Map<string, string>();

  constructor(
    private readonly bucket: Bucket,
    private readonly layout: BucketLayout,
  ) {
    super(EntryIndex.replica([]));
  }

  async untag(tag: string): Promise<void> {
    const pointers = (await this.bucket.list(this.layout.pointers)).filter((o) => this.layout.parsePointer(o.key).startsWith(`${tag}|`));
    await Promise.all([this.bucket.delete(this.layout.tag(tag)), ...pointers.map((o) => this.bucket.delete(o.key))]);
    this.seenTags.delete(tag);
    this.replica.applyOps([{ op: 'untag', tag }]);
  }

  async setAccess(kind: ContentKind, digest: string, access: Access): Promise<void> {
    await this.bucket.put(this.layout.accessMarker(kind, digest, access), Buffer.alloc(0));
    this.replica.applyOps([{ op: 'acc', k: entryKey(kind, digest), a: access }]); // a public is kept (entry-index.ts)
  }

  async setPointer(key: string, digest: string, checkedAt = Date.now()): Promise<void> {
    await this.bucket.put(this.layout.pointer(key), Buffer.from(JSON.stringify({ digest, checkedAt })));
    this.replica.applyOps([{ op: 'ptr', p: key, d: digest, t: checkedAt }]);
  }

  /** The entry object goes first: from then on no replica that asks the bucket finds the content. */
  async delete(kind: ContentKind, digest: string): Promise<Entry | undefined> {
    const entry = this.replica.get(kind, digest);
    await this.bucket.delete(this.layout.entry(kind, digest));
    const markers = await Promise.all(
      [this.layout.refsOf(kind, digest), this.layout.sourcesOf(kind, digest), this.layout.accessOf(kind, digest)].map((prefix) => this.bucket.list(prefix)),
    );
    await Promise.all(markers.flat().map((o) => this.bucket.delete(o.key)));
    this.forget(kind, digest);
    return entry;
  }

  /** Drops an entry from memory only (the bucket said it is gone). */
  forget(kind: ContentKind, digest: string): void {
    this.learnedAt.delete(entryKey(kind, digest));
    this.replica.applyOps([{ op: 'del', k: entryKey(kind, digest) }]);
  }

  /** Adds what this replica just stored (or found) to memory. */
  learn(entry: Entry): void {
    this.learnedAt.set(entryKey(entry.kind, entry.digest), Date.now());
    this.replica.applyOps([{ op: 'put', e: entry }]);
  }

  /** Notes a repository or tag in memory (the caller wrote its marker). */
  note(kind: ContentKind, digest: string, ops: IndexOp[]): void {
    if (this.replica.get(kind, digest)) this.replica.applyOps(ops);
  }

  /** One entry as the bucket has it (facts, repositories, sources, access), put in memory; null when it is not there. */
  async fetchEntry(kind: ContentKind, digest: string): Promise<Entry | null> {
    const [facts, refs, sources, access] = await Promise.all([
      this.readFacts(this.layout.entry(kind, digest)),
      this.bucket.list(this.layout.refsOf(kind, digest)),
      this.bucket.list(this.layout.sourcesOf(kind, digest)),
      this.bucket.list(this.layout.accessOf(kind, digest)),
    ]);
    if (!facts) return null;
    const entry = this.entryOf(
      facts,
      refs.map((o) => this.layout.parseRef(o.key)?.ref).filter((r): r is string => r !== undefined),
      sources.map((o) => this.layout.parseSource(o.key)?.ref).filter((r): r is string => r !== undefined),
      accessOf(access.map((o) => this.layout.parseAccess(o.key)?.access)),
    );
    this.learn(entry);
    return this.replica.get(kind, digest) ?? null;
  }

  /** A pointer another replica wrote since this one's last refresh, read from the bucket (undefined: none). */
  async fetchPointer(key: string): Promise<TagPointer | undefined> {
    const object = this.layout.pointer(key);
    const body = await this.bucket.get(object);
    const pointer = body && parseJson<{ digest: string; checkedAt: number }>(body);
    if (!pointer) return undefined;
    this.replica.applyOps([{ op: 'ptr', p: key, d: pointer.digest, t: pointer.checkedAt }]);
    return this.replica.pointer(key);
  }

  /**
   * Reads every fact in the bucket and brings memory in line: new entries (their objects fetched), gone
   * ones dropped (unless learned here since the listing began), repositories, access, tags and pointers.
   */
  async refresh(): Promise<void> {
    const began = Date.now();
    const [entries, refs, sources, access, tags, pointers] = await Promise.all(
      [this.layout.entries, this.layout.refs, this.layout.sources, this.layout.access, this.layout.tags, this.layout.pointers].map((prefix) =>
        this.bucket.list(prefix),
      ),
    );
    const refsByKey = groupBy(
      refs!,
      (o) => this.layout.parseRef(o.key),
      (m) => m.ref,
    );
    const sourcesByKey = groupBy(
      sources!,
      (o) => this.layout.parseSource(o.key),
      (m) => m.ref,
    );
    const accessByKey = groupBy(
      access!,
      (o) => this.layout.parseAccess(o.key),
      (m) => m.access,
    );
    const listed = new Set<string>();
    const missing: { kind: ContentKind; digest: string }[] = [];
    const ops: IndexOp[] = [];
    for (const o of entries!) {
      const parsed = this.layout.parseEntry(o.key);
      if (!parsed) continue;
      const key = entryKey(parsed.kind, parsed.digest);
      listed.add(key);
      const known = this.replica.get(parsed.kind, parsed.digest);
      if (!known) {
        missing.push(parsed);
        continue;
      }
      for (const r of refsByKey.get(key) ?? []) if (!known.refs.includes(r)) ops.push({ op: 'ref', k: key, r });
      for (const r of sourcesByKey.get(key) ?? []) if (!known.sources.includes(r)) ops.push({ op: 'src', k: key, s: r });
      const a = accessOf(accessByKey.get(key) ?? []);
      // A listing older than a public this replica learned meanwhile says private: the op keeps the public.
      if (a && a !== known.access) ops.push({ op: 'acc', k: key, a });
    }
    for (const e of [...this.replica.oldestFirst()]) {
      const key = entryKey(e.kind, e.digest);
      if (!listed.has(key) && (this.learnedAt.get(key) ?? 0) < began) ops.push({ op: 'del', k: key });
    }
    this.replica.applyOps(ops);
    await eachAtOnce(missing, FETCH_CONCURRENCY, async ({ kind, digest }) => {
      const facts = await this.readFacts(this.layout.entry(kind, digest));
      const key = entryKey(kind, digest);
      // Learned here while its object was read (stored, or found by a lookup): fresher than this listing.
      if (!facts || this.replica.get(kind, digest)) return;
      const e = this.entryOf(facts, refsByKey.get(key) ?? [], sourcesByKey.get(key) ?? [], accessOf(accessByKey.get(key) ?? []));
      this.replica.applyOps([{ op: 'put', e }]);
    });
    await this.refreshTags(tags!);
    await this.refreshPointers(pointers!);
  }

  private async refreshTags(listed: ObjectInfo[]): Promise<void> {
    const present = new Set<string>();
    await eachAtOnce(listed, FETCH_CONCURRENCY, async (o) => {
      const tag = this.layout.parseTag(o.key);
      present.add(tag);
      if (this.seenTags.get(tag) === o.etag) return;
      const digest = (await this.bucket.get(o.key))?.toString('utf8');
      if (!digest) return;
      this.seenTags.set(tag, o.etag);
      this.replica.applyOps([{ op: 'tag', k: entryKey('manifest', digest), tag }]);
    });
    for (const tag of [...this.seenTags.keys()]) {
      if (present.has(tag)) continue;
      this.seenTags.delete(tag); // untagged by another replica
      this.replica.applyOps([{ op: 'untag', tag }]);
    }
  }

  private async refreshPointers(listed: ObjectInfo[]): Promise<void> {
    await eachAtOnce(listed, FETCH_CONCURRENCY, async (o) => {
      const key = this.layout.parsePointer(o.key);
      if (this.seenPointers.get(key) === o.etag) return;
      const body = await this.bucket.get(o.key);
      const pointer = body && parseJson<{ digest: string; checkedAt: number }>(body);
      if (!pointer) return;
      this.seenPointers.set(key, o.etag);
      this.replica.applyOps([{ op: 'ptr', p: key, d: pointer.digest, t: pointer.checkedAt }]);
    });
  }

  private async readFacts(key: string): Promise<EntryFacts | null> {
    const body = await this.bucket.get(key);
    return body && parseJson<EntryFacts>(body);
  }

  /** An entry from the bucket's facts; the tags it already has here are kept. */
  private entryOf(facts: EntryFacts, refs: string[], sources: string[], access: Access | undefined): Entry {
    const known = this.replica.get(facts.kind, facts.digest);
    const entry: Entry = {
      ...facts,
      lastAccess: known?.lastAccess ?? facts.created,
      refs: [...new Set([...(known?.refs ?? []), ...refs])],
      // A bucket written before sources were recorded has none: its private content is then served to
      // no one from the store until an origin delivers it again (a MISS, which records that origin).
      sources: [...new Set([...(known?.sources ?? []), ...sources])],
      tags: known?.tags ?? [],
    };
    if (access ?? known?.access) entry.access = access ?? known?.access;
    return entry;
  }
}

/** Public at any origin makes content public; private only when nothing said public. */
function accessOf(markers: (Access | undefined)[]): Access | undefined {
  return markers.includes('public') ? 'public' : markers.includes('private') ? 'private' : undefined;
}

function groupBy<M extends { kind: ContentKind; digest: string }, V>(
  objects: ObjectInfo[],
  parse: (o: ObjectInfo) => M | null,
  value: (m: M) => V,
): Map<string, V[]> {
  const groups = new Map<string, V[]>();
  for (const o of objects) {
    const m = parse(o);
    if (!m) continue;
    const key = entryKey(m.kind, m.digest);
    groups.set(key, [...(groups.get(key) ?? []), value(m)]);
  }
  return groups;
}

/** A JSON object regcache wrote; null when it is not one. */
export function parseJson<T>(body: Buffer): T | null {
  try {
    return JSON.parse(body.toString('utf8')) as T;
  } catch {
    return null; // written by something else, or cut: not a fact regcache can use
  }
}
