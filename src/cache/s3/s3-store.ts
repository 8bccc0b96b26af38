// The ContentStore of a fleet (CACHE_STORE=s3://bucket/prefix): content and the facts about it live in
// an S3-compatible bucket shared by every replica (keys: bucket-layout.ts), so that what one replica
// fetched the others serve. Each replica keeps the index in memory (bucket-index.ts), refreshed from the
// bucket; a lookup of content it does not know asks the bucket, so content another replica committed a
// moment ago is a HIT here. Fills spool to CACHE_DIR/spool as with the local store (this replica's
// readers follow the file) and upload from it as they go (bucket-spool.ts); content becomes visible only
// once its digest is verified: the upload is completed, then its entries/ object written. Reads are
// ranged GETs (bucket-file.ts). While the bucket cannot be reached, whatever needs it throws
// StoreUnavailableError (answered 503) and `reachable` is false (/readyz), until a probe succeeds again.
// With a local tier (local-tier.ts, LOCAL_TIER_MAX_SIZE), hot content is also kept in CACHE_DIR/tier and
// read from there while the index has its entry.
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../telemetry/log.js';
import type { Bucket } from './bucket.js';
import { BucketFile } from './bucket-file.js';
import { BucketIndex, type EntryFacts } from './bucket-index.js';
import { BucketLayout } from './bucket-layout.js';
import { UsageBatches } from './bucket-eviction.js';
import { BucketSpool } from './bucket-spool.js';
import { CommitsInProgress } from '../commits-in-progress.js';
import { createSpool, diskSpace, newSpoolName, openSpoolDir } from '../content-files.js';
import { storedAgain, StoreUnavailableError } from '../content-store.js';
import type { ContentFile, ContentKind, ContentStore, DiskSpace, Provenance, Spool, SpooledContent, StoredContent } from '../content-store.js';
import { entryKey, type Entry, type IndexOp, type TagPointer } from '../entry-index.js';
import { LocalTier } from './local-tier.js';
import { deleteContent, type BucketParts } from './content-deletion.js';
import { errorMessage } from '../../telemetry/error-message.js';

export interface S3StoreOptions {
  bucket: Bucket;
  prefix: string; // '' or ending in '/'
  dir: string; // CACHE_DIR: spool files
  log: Logger;
  refreshMs?: number; // how often the whole index is read again
  probeMs?: number; // how often reachability is checked
  replica?: string; // names this replica's access batches (default: host/pid/random)
  localTierBytes?: number; // LOCAL_TIER_MAX_SIZE: keep hot content in dir/tier too, this much at most (0: off)
}

// Listings catch up on other replicas' tags, pointers and removals this late at most; content itself is
// found at once (a lookup asks the bucket).
export const REFRESH_MS = 30_000;
const PROBE_MS = 5_000;

export class S3Store extends EventEmitter implements ContentStore {
  readonly index: BucketIndex;
  readonly layout: BucketLayout;
  /** What this replica served and is reading: written in batches for the fleet's sweeper (bucket-eviction.ts). */
  readonly usage: UsageBatches;
  /** Copies of hot content on local disk (LOCAL_TIER_MAX_SIZE); null when off. */
  readonly tier: LocalTier | null;
  private readonly bucket: Bucket;
  private readonly log: Logger;
  private readonly commits = new CommitsInProgress(); // lookups wait for them rather than asking the bucket
  private readonly timers: NodeJS.Timeout[] = [];
  /** Uploads of failed fills whose abort the bucket refused (down): aborted again once it answers. */
  private readonly unaborted = new Set<BucketSpool>();
  private up = true;
  /** What deleting content needs (content-deletion.ts). */
  private readonly parts: BucketParts;

  private constructor(
    private readonly options: S3StoreOptions,
    tier: LocalTier | null,
  ) {
    super();
    this.bucket = options.bucket;
    this.log = options.log;
    this.layout = new BucketLayout(options.prefix);
    this.index = new BucketIndex(this.bucket, this.layout);
    this.usage = new UsageBatches(this.bucket, this.layout, options.replica);
    this.tier = tier;
    this.parts = { bucket: this.bucket, layout: this.layout, index: this.index };
  }

  /**
   * Creates the bucket when it is missing (StoreUnavailableError when that is refused), empties the local
   * spool directory, reads the index, and starts refreshing it and watching reachability.
   */
  static async open(options: S3StoreOptions): Promise<{ store: S3Store; created: boolean }> {
    const created = (await options.bucket.ensure()) === 'created';
    await openSpoolDir(options.dir);
    // The tier is wiped like the spools: its index is in memory only (decision #89).
    const tier = options.localTierBytes ? await LocalTier.open(path.join(options.dir, 'tier'), options.localTierBytes, options.log) : null;
    const store = new S3Store(options, tier);
    await store.index.refresh();
    store.timers.push(setInterval(() => void store.refresh(), options.refreshMs ?? REFRESH_MS).unref());
    store.timers.push(setInterval(() => void store.probe(), options.probeMs ?? PROBE_MS).unref());
    return { store, created };
  }

  /** Whether the bucket answered the last time it was asked (/readyz). */
  get reachable(): boolean {
    return this.up;
  }

  get display(): string {
    return this.bucket.display;
  }

  /** The replica first; else the bucket (another replica's commit), after a commit of it in progress here. */
  async lookup(kind: ContentKind, digest: string): Promise<Entry | null> {
    if (this.commits.pending.size > 0) await this.commits.settled(kind, digest);
    return this.index.get(kind, digest) ?? (await this.watched(() => this.index.fetchEntry(kind, digest))) ?? null;
  }

  /** The replica first; else the bucket's (another replica resolved the tag since this one's last refresh). */
  async lookupPointer(key: string): Promise<TagPointer | undefined> {
    return this.index.pointer(key) ?? (await this.watched(() => this.index.fetchPointer(key)));
  }

  /** The local copy when there is one (the caller found the entry); else the bucket's, copied as it is read. */
  async open(content: StoredContent): Promise<ContentFile | null> {
    const local = await this.tier?.open(content.digest);
    if (local) return local;
    const key = this.layout.content(content.digest);
    const found = await this.watched(() => this.bucket.head(key));
    if (!found && !(await this.watched(() => this.bucket.head(this.layout.entry(content.kind, content.digest))))) {
      // Evicted by another replica's sweep, its bytes deleted since this replica's last refresh: gone, not missing.
      this.index.forget(content.kind, content.digest);
      return null;
    }
    // Open reads are reported in every access batch: the sweeper does not delete content being read.
    const file = found && new BucketFile(this.bucket, key, found.size, this.usage.opened(content.kind, content.digest));
    return file && this.tier ? this.tier.filling(file, content.digest) : file;
  }

  async readAll(content: StoredContent): Promise<Buffer | null> {
    const local = await this.tier?.open(content.digest);
    if (local) {
      const data = await readWhole(local).finally(() => local.close());
      if (data && digestOf(data) === content.digest) return data;
      await this.tier!.drop(content.digest); // changed on disk: the bucket answers
    }
    const data = await this.watched(() => this.bucket.get(this.layout.content(content.digest)));
    // the local copy is an optimisation: the bucket still answers the next read.
    if (data && this.tier && digestOf(data) === content.digest) await this.tier.keep(content.digest, data).catch(() => undefined);
    return data;
  }

  where(digest: string): string {
    return `${this.bucket.display.replace(/\/$/, '')}/${this.layout.content(digest).slice(this.options.prefix.length)}`;
  }

  async beginSpool(content: SpooledContent): Promise<Spool> {
    return new BucketSpool(await createSpool(this.options.dir, newSpoolName()), this.bucket, this.layout.content(content.digest));
  }

  /** Completes the upload (verified and synced by the fill), then makes it visible with its entry. */
  async commit(spool: Spool, content: StoredContent, from: Provenance): Promise<void> {
    const bucketSpool = spoolOf(spool);
    await this.commits.run(content.kind, content.digest, async () => {
      await this.watched(() => bucketSpool.publish());
      await this.record(content, from);
    });
    // Verified by the fill: with a tier, the spool file becomes the local copy.
    if (this.tier) await this.tier.adopt(bucketSpool.path, content.digest, content.size).catch(() => fs.rm(bucketSpool.path, { force: true }));
    else await fs.rm(bucketSpool.path, { force: true });
  }

  async discard(spool: Spool): Promise<void> {
    const bucketSpool = spoolOf(spool);
    await fs.rm(bucketSpool.path, { force: true });
    await bucketSpool.abort().catch((err: Error) => {
      // The fill failed because the bucket did: its upload would stay, costing storage, with nobody to
      // abort it. Kept for the probe that finds the bucket again.
      if (!(err instanceof StoreUnavailableError)) throw err;
      this.unaborted.add(bucketSpool);
    });
  }

  putVerified(content: StoredContent, data: Buffer, from: Provenance): Promise<void> {
    const stored = { ...content, size: data.length };
    return this.commits.run(stored.kind, stored.digest, async () => {
      await this.watched(() => this.bucket.put(this.layout.content(content.digest), data));
      await this.record(stored, from);
      // the local copy is an optimisation: the bucket still answers the next read.
      await this.tier?.keep(content.digest, data).catch(() => undefined);
    });
  }

  /**
   * The entry first (no replica finds the content after that), then the bytes unless the other kind holds
   * them, and the fill locks. While a fill of the content runs (a live lock, on any replica) its lock and
   * the bytes stay: deleting the lock let another replica lead the same fill at generation 0, and its
   * commit may already have written the bytes its entry will name.
   */
  async remove(kind: ContentKind, digest: string): Promise<Entry | undefined> {
    return this.watched(async () => {
      const entry = await this.index.delete(kind, digest);
      if (typeof (await deleteContent(this.parts, digest, [kind])) === 'object') await this.tier?.drop(digest);
      return entry;
    });
  }

  /** A read: recently used here; a repository or tag the entry does not list yet is written to the bucket. */
  use(kind: ContentKind, digest: string, from: Provenance): void {
    this.index.replica.touch(kind, digest);
    this.usage.touch(kind, digest);
    void this.reference(kind, digest, from).catch((err: Error) => this.log.debug({ digest, error: err.message }, 'noting a repository in the bucket failed'));
  }

  /** Free space where spool files go (the bucket itself has no bound regcache can read). */
  space(): Promise<DiskSpace> {
    return diskSpace(this.options.dir);
  }

  /**
   * Deletes content objects that no entry names (left by a replica that died between the upload and the
   * entry), but not those evicted and in their grace, nor those a fill on some replica is uploading.
   */
  async removeUnreferenced(): Promise<{ files: number; bytes: number }> {
    return this.watched(async () => {
      await this.index.refresh();
      let files = 0;
      let bytes = 0;
      // Evicted content waits for the sweeper, which deletes it once its grace passed with no replica reading it.
      const trashed = new Set((await this.bucket.list(this.layout.trash)).map((o) => this.layout.parseTrash(o.key)?.digest));
      for (const o of await this.bucket.list(this.layout.contents)) {
        const digest = this.layout.parseContent(o.key);
        if (!digest) {
          await this.bucket.delete(o.key); // a key that names no digest is no content at all
          files++;
          bytes += o.size;
          continue;
        }
        if (this.index.get('blob', digest) || this.index.get('manifest', digest) || trashed.has(digest)) continue;
        const deletion = await deleteContent(this.parts, digest, ['blob', 'manifest']);
        if (typeof deletion !== 'object' || deletion.bytes === null) continue; // a fill is uploading it, or it was just committed
        await this.tier?.drop(digest);
        files++;
        bytes += deletion.bytes;
      }
      return { files, bytes };
    });
  }

  async close(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
  }

  /**
   * The origin's marker, then the entries/ object (written once: if it exists, another fill of the same
   * bytes was first), then the tag. The marker goes first: a replica that finds the entry must find where
   * it came from too, or the content looks private to other origins and that replica fetches it again.
   */
  private async record(content: StoredContent, from: Provenance): Promise<void> {
    const { kind, digest, size, mediaType } = content;
    const facts: EntryFacts = { kind, digest, size, mediaType, created: Date.now() };
    if (from.ref !== null) {
      const markers = [this.layout.ref(kind, digest, from.ref), this.layout.source(kind, digest, from.ref)];
      await this.watched(() => Promise.all(markers.map((key) => this.bucket.put(key, Buffer.alloc(0)))));
    }
    const first = await this.watched(() => this.bucket.put(this.layout.entry(kind, digest), Buffer.from(JSON.stringify(facts)), { ifNoneMatch: true }));
    if (!first) {
      const known = this.index.get(kind, digest) ?? (await this.watched(() => this.index.fetchEntry(kind, digest)));
      const learn = () => this.watched(() => this.reference(kind, digest, from, true));
      if (known) await storedAgain(this, known, from, learn, () => this.index.get(kind, digest));
      else await learn();
      return;
    }
    const origin = from.ref ? [from.ref] : [];
    const entry: Entry = { ...facts, lastAccess: facts.created, refs: origin, sources: [...origin], tags: from.tag ? [from.tag] : [] };
    if (from.tag !== null) await this.watched(() => this.bucket.put(this.layout.tag(from.tag!), Buffer.from(digest)));
    this.index.learn(entry);
    this.emit('committed', this.index.get(kind, digest) ?? entry, from.ref);
  }

  /**
   * Writes the markers of a repository or tag the replica's entry does not list yet, and (`delivered`: the
   * origin just delivered bytes that hashed to the digest) of a source.
   */
  private async reference(kind: ContentKind, digest: string, from: Provenance, delivered = false): Promise<void> {
    const entry = this.index.get(kind, digest);
    if (!entry) return;
    const ops: IndexOp[] = [];
    const writes: Promise<unknown>[] = [];
    const key = entryKey(kind, digest);
    if (from.ref !== null && !entry.refs.includes(from.ref)) {
      writes.push(this.bucket.put(this.layout.ref(kind, digest, from.ref), Buffer.alloc(0)));
      ops.push({ op: 'ref', k: key, r: from.ref });
    }
    if (delivered && from.ref !== null && !entry.sources.includes(from.ref)) {
      writes.push(this.bucket.put(this.layout.source(kind, digest, from.ref), Buffer.alloc(0)));
      ops.push({ op: 'src', k: key, s: from.ref });
    }
    if (from.tag !== null && !entry.tags.includes(from.tag)) {
      writes.push(this.bucket.put(this.layout.tag(from.tag), Buffer.from(digest)));
      ops.push({ op: 'tag', k: key, tag: from.tag });
    }
    if (writes.length === 0) return;
    await Promise.all(writes);
    this.index.note(kind, digest, ops);
  }

  /** What other replicas committed or removed since the last refresh, read now; rejects when the bucket does not answer. */
  syncIndex(): Promise<void> {
    return this.watched(() => this.index.refresh());
  }

  /** Reads the index again; local copies whose entries are gone (removed or swept by any replica) go too. */
  async refresh(): Promise<void> {
    await this.watched(() => this.index.refresh()).catch(() => undefined); // logged by watched; the next one retries
    // Run from a timer with nothing awaiting it: a rejection here would end the process (decision #115).
    await this.pruneTier().catch((err: unknown) => this.log.warn({ error: errorMessage(err) }, 'dropping local copies failed; retried at the next refresh'));
  }

  /**
   * Content that did not hash to its digest as read (VERIFY_ON_READ): when the replica had a local copy,
   * that copy was what was read, and only it goes (true: the bucket's bytes were verified at their commit;
   * the next read is the bucket's). False: there was none, the caller drops the entry as for any store.
   */
  async dropCorruptCopy(digest: string): Promise<boolean> {
    if (!this.tier?.has(digest)) return false;
    await this.tier.drop(digest);
    return true;
  }

  private async pruneTier(): Promise<void> {
    const dropped = await this.tier?.prune((d) => this.index.get('blob', d) !== undefined || this.index.get('manifest', d) !== undefined);
    if (dropped) this.log.debug({ copies: dropped }, 'local copies of content gone from the bucket dropped');
  }

  private async probe(): Promise<void> {
    // watched() logged it and marked the bucket unreachable; the next probe retries.
    await this.watched(() => this.bucket.probe()).catch(() => undefined);
    if (this.up) await this.abortLeftUploads();
  }

  /** Aborts the uploads failed fills left while the bucket was down; those it still refuses wait for the next probe. */
  private async abortLeftUploads(): Promise<void> {
    for (const spool of [...this.unaborted]) {
      try {
        await spool.abort();
        this.unaborted.delete(spool);
        this.log.info({ key: spool.key }, 'upload of a failed fill aborted after the bucket came back');
      } catch (err) {
        this.log.debug({ key: spool.key, error: errorMessage(err) }, 'aborting the upload of a failed fill failed; retried at the next probe');
        return;
      }
    }
  }

  /** Runs a request to the bucket and follows whether it is reachable: one line when that changes. */
  private async watched<T>(request: () => Promise<T>): Promise<T> {
    try {
      const result = await request();
      if (!this.up) {
        this.up = true;
        this.log.info({ store: this.bucket.display }, 'cache store reachable again');
      }
      return result;
    } catch (err) {
      if (err instanceof StoreUnavailableError && this.up) {
        this.up = false;
        this.log.error({ store: this.bucket.display, error: err.message }, 'cache store unreachable: requests that need it are answered 503');
      }
      throw err;
    }
  }
}

function spoolOf(spool: Spool): BucketSpool {
  if (!(spool instanceof BucketSpool)) throw new Error('a spool of another store');
  return spool;
}

function digestOf(data: Buffer): string {
  return 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
}

/** The whole of a small file; null when it is shorter than it said. */
async function readWhole(file: ContentFile): Promise<Buffer | null> {
  const data = Buffer.alloc(file.size);
  let read = 0;
  while (read < data.length) {
    const n = await file.read(data.subarray(read), data.length - read, read);
    if (n === 0) return null;
    read += n;
  }
  return data;
}
