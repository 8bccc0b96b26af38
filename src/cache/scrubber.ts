// The background scrub of a directory store (SCRUB_RATE): every stored file re-hashed against its digest,
// least recently used first, round and round, at a bounded number of bytes per second; one that no longer
// matches is dropped (the next request refetches). It is what catches, with VERIFY_ON_READ=once, a change
// that moved no timestamp (the disk's own bit rot), before a client's digest check has to (decisions.md
// #107). Runs in the process that owns CACHE_DIR; a file read while it is scrubbed is read twice, no more.
import crypto from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../telemetry/log.js';
import type { ContentStore, StoredContent } from './content-store.js';

const CHUNK = 1024 * 1024;
// A store with nothing in it, or a pass that found nothing to read: how long until the next pass.
const IDLE_MS = 60_000;

export interface ScrubPass {
  checked: number; // files hashed to the end
  bytes: number;
  dropped: number; // did not match their digest (or had the wrong size): entry removed
}

export class Scrubber {
  private readonly abort = new AbortController();
  private loop: Promise<void> | null = null;

  constructor(
    private readonly store: ContentStore,
    private readonly bytesPerSecond: number, // Infinity: as fast as the disk reads (tests, `regcache cache verify`-like passes)
    private readonly log: Logger,
  ) {}

  /** Scrubs until stopped, one pass after the other. */
  start(): void {
    if (this.bytesPerSecond <= 0 || this.loop) return;
    this.loop = (async () => {
      while (!this.abort.signal.aborted) {
        const pass = await this.pass().catch((err: Error) => {
          if (!this.abort.signal.aborted) this.log.warn({ error: err.message }, 'scrub pass failed');
          return null;
        });
        if (pass && pass.bytes > 0) this.log.info({ ...pass, bytesPerSecond: this.bytesPerSecond }, 'scrub pass done');
        if (!pass || pass.bytes === 0) await this.pause(IDLE_MS);
      }
    })();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  /** One pass over what the index holds now; stops early (and resolves) when the scrubber is stopped. */
  async pass(): Promise<ScrubPass> {
    const result: ScrubPass = { checked: 0, bytes: 0, dropped: 0 };
    // A copy: entries come and go while the pass runs (a gone one is skipped when it will not open).
    const entries = [...this.store.index.oldestFirst()].map((e): StoredContent => ({ kind: e.kind, digest: e.digest, size: e.size, mediaType: e.mediaType }));
    const started = Date.now();
    for (const content of entries) {
      if (this.abort.signal.aborted) break;
      const bytes = await this.check(content, (n) => {
        result.bytes += n;
        return this.keepToRate(started, result.bytes);
      });
      if (bytes === null) continue;
      if (bytes === 'dropped') result.dropped++;
      else result.checked++;
    }
    return result;
  }

  /** Hashes one stored file; 'dropped' when it was not its content; null when it was gone or the pass stopped. */
  private async check(content: StoredContent, read: (n: number) => Promise<void>): Promise<'dropped' | 'ok' | null> {
    // Gone (evicted, removed) or unreadable now: nothing to scrub this pass; a read would find it the same.
    const file = await this.store.open(content).catch(() => null);
    if (!file) return null;
    const hash = crypto.createHash('sha256');
    const buffer = Buffer.allocUnsafe(CHUNK);
    let position = 0;
    try {
      while (position < file.size) {
        const n = await file.read(buffer, Math.min(CHUNK, file.size - position), position);
        if (n === 0) break;
        hash.update(buffer.subarray(0, n));
        position += n;
        await read(n);
        if (this.abort.signal.aborted) return null;
      }
    } finally {
      await file.close().catch(() => undefined); // read to the end or given up: a close error changes nothing
    }
    const actual = 'sha256:' + hash.digest('hex');
    if (position === content.size && actual === content.digest) return 'ok';
    // Removed and stored again while this pass hashed the old file: the new one is not what was read.
    const now = await this.store.open(content).catch(() => null);
    const same = now !== null && (now.identity === undefined || now.identity.key === file.identity?.key);
    await now?.close().catch(() => undefined); // only its identity was needed
    if (!same || this.store.index.get(content.kind, content.digest) === undefined) return null;
    const error =
      position === content.size ? `the stored bytes hash to ${actual}, not ${content.digest}` : `the stored file holds ${position} of ${content.size} bytes`;
    this.log.warn(
      { digest: content.digest, kind: content.kind, path: this.store.where(content.digest), error, cache: 'CORRUPT', by: 'scrub' },
      'stored content does not match its digest; dropped',
    );
    if (!(await this.store.dropCorruptCopy(content.digest))) await this.store.remove(content.kind, content.digest);
    return 'dropped';
  }

  /** Waits until bytes read since started are within the rate. */
  private async keepToRate(started: number, bytes: number): Promise<void> {
    if (!Number.isFinite(this.bytesPerSecond)) return;
    const due = started + (bytes / this.bytesPerSecond) * 1000;
    const wait = due - Date.now();
    if (wait > 0) await this.pause(wait);
  }

  private async pause(ms: number): Promise<void> {
    await sleep(ms, undefined, { signal: this.abort.signal, ref: false }).catch(() => undefined); // aborted: the scrubber is stopping
  }
}
