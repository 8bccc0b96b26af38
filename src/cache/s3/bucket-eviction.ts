// The bound of a fleet on one bucket (CACHE_MAX_SIZE, CACHE_INACTIVE), enforced by one replica at a time
// (docs/scale-out.md, "The bound"; decisions.md #87).
//
// Access times: every replica records what it served (the time each request began) and what it is
// reading right now, and writes them every S3_ACCESS_FLUSH as one small object of its own
// (usage/<replica>/<time>-<seq>: written once, never rewritten). S3 has no read-modify-write, so no
// replica edits a shared object: the sweeper alone folds the batches into sweep/usage.json and deletes
// the batches it folded.
//
// The sweep: the replica holding the eviction lease (sweep/lease/<gen>, fill-lock.ts' generations created
// with If-None-Match: *, renewed while it lives, taken over by the next generation when it lapses) sweeps
// every S3_SWEEP_INTERVAL (and soon after a commit past the bound): it folds the batches, reads every
// entry, evicts those unused for CACHE_INACTIVE and, past CACHE_MAX_SIZE, the least recently used down to
// 90%. Eviction deletes the entry object (no replica finds the content from then on; other replicas drop
// it from memory at their next refresh) after writing a trash marker; the content itself is deleted by a
// later sweep, once the grace period (S3_EVICT_GRACE) has passed since the eviction AND no replica
// recorded a use of it (a request, or a read still open) within the grace period. A fill in flight has a
// live lock and no entry: it is never evicted, and content with a live lock is never deleted.
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import os from 'node:os';
import type { Logger } from '../../telemetry/log.js';
import type { Bucket } from './bucket.js';
import type { BucketLayout } from './bucket-layout.js';
import type { ContentKind } from '../content-store.js';
import { entryKey, type Entry } from '../entry-index.js';
import { evictOldestFirst, lowWater } from '../lru-eviction.js';
import { type FillLocks, type Lease } from './fill-lock.js';
import { deleteContent, type BucketParts } from './content-deletion.js';
import { parseJson, type BucketIndex } from './bucket-index.js';
import { eachAtOnce } from '../each-at-once.js';
import { errorMessage } from '../../telemetry/error-message.js';

/** One replica's batch (usage/...): request start times, and reads open when it was written. */
interface UsageBatch {
  at: number;
  t: Record<string, number>; // entryKey -> ms
  u: string[]; // entryKeys being read at `at`
}

/** sweep/usage.json: every batch folded so far. */
interface MergedUsage {
  t: Record<string, number>; // entryKey -> last request
  u: Record<string, number>; // entryKey -> last time a replica said it was reading it
}

const FETCH_CONCURRENCY = 16;

/** What this replica served since its last batch, and the reads it has open. */
export class UsageBatches {
  readonly replica: string;
  private touches = new Map<string, number>();
  private readonly reading = new Map<string, number>(); // entryKey -> reads open
  private seq = 0;
  private flushing: Promise<void> = Promise.resolve();

  constructor(
    private readonly bucket: Bucket,
    private readonly layout: BucketLayout,
    replica = `${os.hostname()}/${process.pid}/${crypto.randomBytes(4).toString('hex')}`,
  ) {
    this.replica = replica;
  }

  touch(kind: ContentKind, digest: string, now = Date.now()): void {
    const key = entryKey(kind, digest);
    this.touches.set(key, Math.max(now, this.touches.get(key) ?? 0));
  }

  /** A read of the content began; the returned function ends it. */
  opened(kind: ContentKind, digest: string): () => void {
    const key = entryKey(kind, digest);
    this.reading.set(key, (this.reading.get(key) ?? 0) + 1);
    let closed = false;
    return () => {
      if (closed) return;
      closed = true;
      const n = (this.reading.get(key) ?? 1) - 1;
      if (n > 0) this.reading.set(key, n);
      else this.reading.delete(key);
    };
  }

  /** Writes a batch when there is anything to say; touches that could not be written go in the next one. */
  flush(): Promise<void> {
    // the previous flush's failure was logged by write(); this one still runs.
    const run = this.flushing.catch(() => undefined).then(() => this.write());
    // logged by write(); the chain must not reject for the next flush.
    this.flushing = run.catch(() => undefined);
    return run;
  }

  private async write(): Promise<void> {
    if (this.touches.size === 0 && this.reading.size === 0) return;
    const at = Date.now();
    const taken = this.touches;
    this.touches = new Map();
    const batch: UsageBatch = { at, t: Object.fromEntries(taken), u: [...this.reading.keys()] };
    const name = `${String(at).padStart(15, '0')}-${String(this.seq++).padStart(8, '0')}`;
    try {
      await this.bucket.put(this.layout.usageBatch(this.replica, name), Buffer.from(JSON.stringify(batch)));
    } catch (err) {
      for (const [k, t] of taken) this.touches.set(k, Math.max(t, this.touches.get(k) ?? 0));
      throw err;
    }
  }
}

export interface FleetBudget {
  maxBytes: number;
  inactiveMs: number;
  sweepMs: number; // S3_SWEEP_INTERVAL: how often the lease holder sweeps (and the others try for the lease)
  flushMs: number; // S3_ACCESS_FLUSH: how often each replica writes its batch
  graceMs: number; // S3_EVICT_GRACE: how long evicted content stays, and must go unused, before it is deleted
}

export interface SweepResult {
  evicted: number;
  evictedBytes: number;
  deleted: number; // content objects deleted after their grace
  deletedBytes: number;
}

export interface FleetEvictorParts extends BucketParts {
  usage: UsageBatches;
  locks: FillLocks;
}

/** Emits 'evicted' (reason, entries, bytes) as the local Evictor does, from the replica that sweeps. */
export class FleetEvictor extends EventEmitter {
  private lease: Lease | null = null;
  private running: Promise<unknown> = Promise.resolve();
  private readonly timers: NodeJS.Timeout[] = [];
  private soon: NodeJS.Timeout | null = null;
  private stopped = false;

  constructor(
    private readonly parts: FleetEvictorParts,
    private readonly budget: FleetBudget,
    private readonly log: Logger,
  ) {
    super();
  }

  /** Whether this replica holds the eviction lease (as far as it knows). */
  get sweeping(): boolean {
    return this.lease !== null;
  }

  start(): void {
    this.timers.push(
      setInterval(
        () => void this.parts.usage.flush().catch((err: Error) => this.log.debug({ error: err.message }, 'writing an access batch failed')),
        this.budget.flushMs,
      ).unref(),
    );
    this.timers.push(setInterval(() => void this.tick(), this.budget.sweepMs).unref());
    void this.tick();
  }

  /** Stops sweeping and releases the lease (another replica takes it at its next try), after a last batch. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    if (this.soon) clearTimeout(this.soon);
    // closing: a sweep failure was logged where it happened.
    await this.running.catch(() => undefined);
    // closing: unflushed access times only delay another replica's eviction.
    await this.parts.usage.flush().catch(() => undefined);
    const lease = this.lease;
    this.lease = null;
    // closing: an unreleased eviction lease lapses; another replica sweeps after it.
    await lease?.release().catch(() => undefined);
  }

  /** After a commit here: past the bound, the sweeper sweeps soon (its own commits; the others' at its next sweep). */
  afterCommit(): void {
    if (this.lease && !this.soon && this.parts.index.totalBytes > this.budget.maxBytes) {
      this.soon = setTimeout(() => {
        this.soon = null;
        void this.tick();
      }, 0).unref();
    }
  }

  /** Takes the lease when it is free or lapsed, and sweeps while holding it. */
  tick(): Promise<unknown> {
    const run = this.running.then(async () => {
      if (this.stopped) return;
      try {
        if (!(await this.holdLease())) return;
        await this.sweep();
      } catch (err) {
        this.log.warn({ error: errorMessage(err) }, 'fleet sweep failed');
      }
    });
    this.running = run;
    return run;
  }

  private async holdLease(): Promise<boolean> {
    const prefix = this.parts.layout.sweepLease;
    if (this.lease) {
      // Still the highest generation: no replica took over (our renewals may have failed for a lease).
      const top = await this.parts.locks.topGeneration(prefix);
      const holder = await this.parts.locks.holderUnder(prefix);
      if (top === this.lease.generation && holder !== null) return true;
      this.log.warn({ generation: this.lease.generation, top }, 'eviction lease lost: another replica sweeps');
      this.lease.abandon();
      this.lease = null;
    }
    const claimed = await this.parts.locks.acquireUnder(prefix);
    if (!('lease' in claimed)) return false;
    this.lease = claimed.lease;
    this.log.info({ generation: claimed.lease.generation, replica: this.parts.usage.replica }, 'eviction lease taken: this replica sweeps the bucket');
    // Lower generations are never claimed again (a claim creates the top's next): drop them.
    for (const o of await this.parts.bucket.list(prefix)) {
      const g = this.parts.layout.parseGeneration(o.key);
      if (g !== null && g < claimed.lease.generation) await this.parts.bucket.delete(o.key);
    }
    return true;
  }

  /** One sweep (the caller holds the lease). */
  async sweep(now = Date.now()): Promise<SweepResult> {
    const { bucket, layout, index } = this.parts;
    await this.parts.usage.flush().catch(() => undefined); // this replica's own uses first
    const merged = await this.readMerged();
    const folded = await this.fold(merged);
    await index.refresh();

    const lastUse = (e: Entry) => Math.max(e.lastAccess, merged.t[entryKey(e.kind, e.digest)] ?? 0);
    const order = [...index.oldestFirst()].map((e) => ({ ...e, lastUse: lastUse(e) })).sort((a, b) => a.lastUse - b.lastUse);
    const target = lowWater(this.budget.maxBytes);
    const over = index.totalBytes > this.budget.maxBytes;
    const tally = await evictOldestFirst(
      order,
      (e) => (e.lastUse < now - this.budget.inactiveMs ? 'inactive' : over && index.totalBytes > target ? 'size' : null),
      (e) => this.evict(e, now),
      this.log,
    );
    const result: SweepResult = { evicted: 0, evictedBytes: 0, deleted: 0, deletedBytes: 0 };
    for (const reason of ['inactive', 'size'] as const) {
      const counted = tally[reason];
      if (!counted) continue;
      result.evicted += counted.entries;
      result.evictedBytes += counted.bytes;
      this.emit('evicted', reason, counted.entries, counted.bytes);
    }

    await this.emptyTrash(merged, now, result);

    // Keep what still matters: entries, and evicted content whose grace is still running.
    const keep = new Set<string>([...index.oldestFirst()].map((e) => entryKey(e.kind, e.digest)));
    for (const o of await bucket.list(layout.trash)) {
      const t = layout.parseTrash(o.key);
      if (t) for (const kind of ['blob', 'manifest'] as const) keep.add(entryKey(kind, t.digest));
    }
    const pruned: MergedUsage = { t: {}, u: {} };
    for (const [k, v] of Object.entries(merged.t)) if (keep.has(k)) pruned.t[k] = v;
    for (const [k, v] of Object.entries(merged.u)) if (keep.has(k) || v > now - this.budget.graceMs) pruned.u[k] = v;
    await bucket.put(layout.usageMerged, Buffer.from(JSON.stringify(pruned)));
    // Only now: a batch deleted before the merged object holding it was written would be lost.
    await eachAtOnce(folded, FETCH_CONCURRENCY, (key) => bucket.delete(key));

    if (result.evicted > 0 || result.deleted > 0) {
      this.log.info({ ...result, totalBytes: index.totalBytes, maxBytes: this.budget.maxBytes, replica: this.parts.usage.replica }, 'fleet sweep');
    }
    return result;
  }

  /** The entry goes (the trash marker first: content is never left without one); the bytes wait for the grace. */
  private async evict(e: Entry, now: number): Promise<void> {
    const { bucket, layout, index } = this.parts;
    await bucket.put(layout.trashMarker(e.kind, e.digest), Buffer.from(JSON.stringify({ at: now, size: e.size })));
    await index.delete(e.kind, e.digest);
  }

  /** Deletes the content of evicted entries whose grace passed with no use recorded meanwhile. */
  private async emptyTrash(merged: MergedUsage, now: number, result: SweepResult): Promise<void> {
    const { bucket, layout } = this.parts;
    const cutoff = now - this.budget.graceMs;
    for (const o of await bucket.list(layout.trash)) {
      const t = layout.parseTrash(o.key);
      if (!t) continue;
      const raw = await bucket.get(o.key);
      const at = (raw && parseJson<{ at: number }>(raw)?.at) ?? o.lastModified;
      if (at > cutoff) continue;
      const keys = (['blob', 'manifest'] as const).map((kind) => entryKey(kind, t.digest));
      const lastUse = Math.max(0, ...keys.map((k) => Math.max(merged.t[k] ?? 0, merged.u[k] ?? 0)));
      if (lastUse > cutoff) continue; // served (or still being read) within the grace: wait
      // Stored again since (the marker just goes), or a fill of it runs (its commit needs the bytes: later).
      const deletion = await deleteContent(this.parts, t.digest, [t.kind]);
      if (deletion === 'filling') continue;
      if (deletion !== 'referenced' && deletion.bytes !== null) {
        result.deleted++;
        result.deletedBytes += deletion.bytes;
      }
      await bucket.delete(o.key);
    }
  }

  private async readMerged(): Promise<MergedUsage> {
    const raw = await this.parts.bucket.get(this.parts.layout.usageMerged);
    const merged = raw && parseJson<MergedUsage>(raw);
    return { t: merged?.t ?? {}, u: merged?.u ?? {} };
  }

  /** Folds every batch in the bucket into `merged`; the keys of the batches folded. */
  private async fold(merged: MergedUsage): Promise<string[]> {
    const { bucket, layout } = this.parts;
    const listed = await bucket.list(layout.usage);
    const folded: string[] = [];
    await eachAtOnce(listed, FETCH_CONCURRENCY, async (o) => {
      const raw = await bucket.get(o.key);
      const batch = raw && parseJson<UsageBatch>(raw);
      folded.push(o.key);
      if (!batch) return;
      for (const [k, t] of Object.entries(batch.t ?? {})) merged.t[k] = Math.max(t, merged.t[k] ?? 0);
      for (const k of batch.u ?? []) merged.u[k] = Math.max(batch.at, merged.u[k] ?? 0);
    });
    return folded;
  }
}
