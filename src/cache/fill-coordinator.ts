// The cache's one way in and out, one per store and shared by every door (the proxy's requests and the
// mirror's): stored content read in one call (read: looked up once, the caller's gate asked with its
// entry, opened, size-checked, noted as used, and handed back as a body that sends itself, or as where
// the client reads it: S3_REDIRECT), the fills running now (fill), and what goes with them: room on disk
// before a fill, eviction after a commit, the fill log lines and events. The HTTP side
// (registry/content-responder.ts) writes the heads and decides who may read what; it never opens a file.
//
// Fills are per origin: bytes fetched from one registry are never handed to a request that named another
// (another host, port or mirror ns=), so a request joins only a fill of its own origin; the proxy and
// the mirror asking the same origin for one digest at once share one upstream GET. Stored content is one
// copy per digest, whichever origin delivered it. Which fills run is the FillTable's (fill-table.ts): this
// process's, or, in a worker, the whole process tree's.
import { EventEmitter } from 'node:events';
import type { Readable, Writable } from 'node:stream';
import type { Logger } from '../telemetry/log.js';
import { StoreUnavailableError, type ContentFile, type ContentKind, type ContentStore, type Provenance, type StoredContent } from './content-store.js';
import type { Entry } from './entry-index.js';
import type { Backend, BlobRedirect } from './backend.js';
import { FillBound } from './fill-bound.js';
import { FillReader } from './fill-reader.js';
import { FILL_STALL_MS, Fill } from './fill.js';
import type { FillKey, FillTable } from './fill-table.js';
import type { Room } from './room.js';
import { errorMessage } from '../telemetry/error-message.js';
import type { TrustedFiles } from './trusted-files.js';
import { CorruptContentError, VerifiedFileReader } from './verified-file-reader.js';

export type { FillKey } from './fill-table.js';
export { CorruptContentError } from './verified-file-reader.js';
export { FillError } from './fill.js';

/** Bytes [start, end] of a body (end null: to its end, its length unknown). */
export interface ByteSpan {
  start: number;
  end: number | null;
}

/** Content on its way to one client, stored or filling: what its head says, and a body that sends itself. */
export interface ContentBody {
  readonly kind: ContentKind;
  readonly digest: string;
  readonly mediaType: string;
  /** null: not known yet (a fill without Content-Length). */
  readonly size: number | null;
  /**
   * Sends `span` and ends `destination`; resolves once it finished or the destination closed early.
   * Rejects (the caller cuts the destination: its body is short) with CorruptContentError for stored bytes
   * that are not their digest (the bad copy already dropped), a fill's FillError, or a read's error.
   */
  sendTo(destination: Writable, span: ByteSpan, onBytes: (n: number) => void): Promise<void>;
  /** Nothing is sent (a HEAD, a 416, an empty body): lets go of the file or the fill. */
  close(): Promise<void>;
}

/** Stored content opened for one request: its body, or where the client reads it (S3_REDIRECT). */
export interface StoredBody extends ContentBody {
  readonly size: number;
  /** A presigned URL of the blob's object (a bearer credential: never logged); null: sent from here. */
  readonly location: string | null;
}

/**
 * The gate, asked once the entry is known and before anything is opened: whether this request may have
 * the content (`redirect`: it would be answered with a redirect to the bucket).
 */
export type AdmitStored = (entry: Entry, redirect: boolean) => Promise<boolean>;

/** An upstream body to fill from (a 200). */
export interface FetchedBody {
  stream: Readable;
  mediaType: string;
  size: number | null; // its Content-Length, if it sent one
}

/** What a fetch for a fill got: a body to fill from (a 200), or only an answer for its own client. */
export interface Fetched<T> {
  answer: T; // the caller's (an upstream response): relayed when nothing is filled from it
  body: FetchedBody | null;
}

export type FillOutcome<T> =
  | { kind: 'started'; fill: Fill; body: ContentBody; answer: T } // this request's fetch fills; acquired for it (body releases it)
  | { kind: 'joined'; fill: Fill; body: ContentBody } // a fill of this origin was running; acquired for this request
  | { kind: 'refused' } // admit() turned this request away from the running fill (and answered it)
  | { kind: 'ended' } // the running fill ended without content, or before it could be joined: look in the store, then fill alone
  | { kind: 'declined'; answer: T } // the fetch gave nothing to fill (not a 200)
  // a body the store cannot take: relay it uncached (oversize: past CACHE_MAX_SIZE or MANIFEST_MAX_SIZE)
  | { kind: 'bypassed'; answer: T; reason: string; storeError?: string; oversize?: boolean };

/** Bounds of fills beyond the store's own (Room: CACHE_MAX_SIZE and the disk). */
export interface FillLimits {
  /** MANIFEST_MAX_SIZE: no manifest larger than this is stored (or served: the caller refuses it). */
  manifestMaxBytes: number;
  /** A fill no client reads is given up after this long without progress (fill.ts). */
  stallMs?: number;
  /** How long content found too large is remembered, so that a retry streams it at once instead of spooling it again. */
  rememberOversizeMs?: number;
}

/** How stored content is read (VERIFY_ON_READ). */
export interface ReadOptions {
  /** Hash every byte read (always, or once with `trusted`); false: VERIFY_ON_READ=off. */
  verifyOnRead?: boolean;
  /** VERIFY_ON_READ=once: the files this process verified, read unhashed while unchanged. */
  trusted?: TrustedFiles | null;
}

// distribution's own bound on a manifest it accepts.
export const DEFAULT_MANIFEST_MAX_BYTES = 4 * 1024 * 1024;
const REMEMBER_OVERSIZE_MS = 60 * 60 * 1000;
const MAX_REMEMBERED_OVERSIZE = 1000;

/**
 * Events: 'fill-started' (key, fill, from), 'fill-joined' (key), 'fill-settled' (fill, key): counted by proxy.ts.
 */
export class FillCoordinator extends EventEmitter {
  readonly store: ContentStore;
  private readonly room: Room;
  private readonly fills: FillTable;
  private readonly redirect: BlobRedirect | null;
  private readonly verifyOnRead: boolean;
  private readonly trusted: TrustedFiles | null;

  /** Content (per origin) found larger than its bound while it filled, and until when that is remembered. */
  private readonly oversize = new Map<string, { until: number; reason: string }>();
  private readonly limits: Required<FillLimits>;

  constructor(
    backend: Pick<Backend, 'store' | 'room' | 'fills'> & Partial<Pick<Backend, 'redirect'>>,
    private readonly log: Logger,
    limits: Partial<FillLimits> & ReadOptions = {},
  ) {
    super();
    this.limits = {
      manifestMaxBytes: limits.manifestMaxBytes ?? DEFAULT_MANIFEST_MAX_BYTES,
      stallMs: limits.stallMs ?? FILL_STALL_MS,
      rememberOversizeMs: limits.rememberOversizeMs ?? REMEMBER_OVERSIZE_MS,
    };
    this.store = backend.store;
    this.room = backend.room;
    this.fills = backend.fills;
    this.redirect = backend.redirect ?? null;
    this.verifyOnRead = limits.verifyOnRead ?? true;
    this.trusted = limits.trusted ?? null;
  }

  get fillsInFlight(): number {
    return this.fills.size;
  }

  /**
   * Stored content for one request, in one call: looked up once; `admit` (the caller's gate) asked with its
   * entry; opened and checked against the entry's size; noted as read under `from`; and returned as a body
   * that sends itself, or, with `redirect` (a GET) for a blob of a store that redirects (S3_REDIRECT), as
   * where the client reads it. null when it is not stored, `admit` said no, or it cannot be read (gone,
   * the wrong size: then the entry is dropped so the next request refetches).
   */
  async read(content: { kind: ContentKind; digest: string }, from: Provenance, options: { redirect: boolean }, admit: AdmitStored): Promise<StoredBody | null> {
    const { kind, digest } = content;
    const entry = await this.store.lookup(kind, digest);
    if (!entry) return null;
    const stored: StoredContent = { kind, digest, size: entry.size, mediaType: entry.mediaType };
    const redirect = options.redirect && kind === 'blob' ? this.redirect : null;
    if (!(await admit(entry, redirect !== null))) return null;
    const file = await this.open(stored);
    if (!file) return null;
    this.store.use(kind, digest, from);
    if (redirect) {
      // Found (a bucket's open is a HEAD: no redirect leads to a 404); the client reads it from there.
      await file.close();
      return { ...stored, location: await redirect(digest), sendTo: () => Promise.reject(new Error('a redirect has no body')), close: () => Promise.resolve() };
    }
    return {
      ...stored,
      location: null,
      sendTo: async (destination, span, onBytes) => {
        const end = span.end ?? stored.size - 1;
        if (stored.size === 0) {
          // Stored, so verified: nothing to read or hash.
          await file.close();
          destination.end();
          return;
        }
        try {
          await new VerifiedFileReader(file, { size: stored.size, digest, start: span.start, end }).sendTo(destination, {
            verify: this.verifyOnRead,
            trusted: this.trusted,
            onBytes,
          });
        } catch (err) {
          if (err instanceof CorruptContentError) this.dropCorrupt(stored, err);
          throw err;
        }
      },
      close: () => file.close(),
    };
  }

  /** This origin's running fill of the content once it has started (null: none, or it gave nothing to fill). */
  running(key: FillKey): Promise<Fill | null> {
    return this.fills.running(key);
  }

  /**
   * Starts a fill from what `fetch` gets, or, when this origin's fill of the content is running and
   * `admit` is given, joins it once `admit` (the caller's access check) agrees. Without `admit` a running
   * fill is not joined and this request fetches on its own, uncounted in the running fills. A fetch that
   * throws rejects the same way (the caller answers it); requests waiting on it then see 'ended'.
   */
  async fill<T>(key: FillKey, from: Provenance, fetch: () => Promise<Fetched<T>>, admit: ((fill: Fill) => Promise<boolean>) | null): Promise<FillOutcome<T>> {
    const oversize = this.rememberedOversize(key);
    if (oversize) {
      // Found too large a moment ago: streamed through without a spool, no fill to join or to wait for.
      const { answer, body } = await fetch();
      return body ? { kind: 'bypassed', answer, reason: `${oversize} (remembered)`, oversize: true } : { kind: 'declined', answer };
    }
    const claim = await this.fills.claim(key, admit !== null);
    if ('stored' in claim) return { kind: 'ended' };
    if ('join' in claim) {
      const fill = await claim.join;
      // The leader's bytes are this origin's; whether this request may have them is the caller's to say.
      if (fill && !(await admit!(fill))) return { kind: 'refused' };
      if (!fill?.acquire()) return { kind: 'ended' }; // finished meanwhile (then it is stored), or its leader got no 200
      // The leader's commit notes the leader's repository; this request's is noted as a read's would be,
      // once there is an entry to note it on (a joiner from another repository is listed under it too).
      const note = () => {
        if (fill.state === 'committed') this.store.use(key.kind, key.digest, from);
      };
      if (fill.settled) note();
      else fill.once('settled', note);
      this.emit('fill-joined', key);
      return { kind: 'joined', fill, body: fillBody(fill) };
    }

    let fill: Fill | null = null;
    try {
      const started = Date.now();
      const { answer, body } = await fetch();
      if (!body) return { kind: 'declined', answer };
      const { hard, hardReason } = this.hardBound(key.kind);
      let bound: FillBound | string;
      if (body.size !== null) {
        bound = body.size > hard ? hardReason : (await this.room.makeRoom(body.size)) ? FillBound.known(body.size) : 'not enough free disk space';
      } else {
        // Unknown length: checked as it grows (fill-bound.ts); nothing evicted for it.
        const headroom = await this.room.headroom().catch(() => 0);
        bound = headroom > 0 ? FillBound.growing(hard, hardReason, headroom, () => this.room.headroom()) : 'not enough free disk space';
      }
      if (typeof bound === 'string') return { kind: 'bypassed', answer, reason: bound, oversize: bound === hardReason };
      try {
        fill = await Fill.start(this.store, key.kind, key.digest, body.mediaType, body.size, body.stream, from, { bound, stallMs: this.limits.stallMs });
      } catch (err) {
        // The store cannot take it (disk full, permissions): the client is still served, uncached.
        this.log.error({ digest: key.digest, error: errorMessage(err) }, 'cache store unavailable; serving uncached');
        return { kind: 'bypassed', answer, reason: 'cache store unavailable', storeError: errorMessage(err) };
      }
      this.emit('fill-started', key, fill, from);
      fill.acquire(); // this request's reference, taken before any waiter can see the fill settle
      const current = fill;
      current.once('settled', () => this.settled(current, key, Date.now() - started));
      claim.lead.started(fill);
      return { kind: 'started', fill, body: fillBody(fill), answer };
    } finally {
      if (!fill) claim.lead.ended();
    }
  }

  /**
   * Opens stored content for a read, checked against its entry's size (a short file would answer the full
   * Content-Length and then stall); null when it cannot be read, and then an entry whose content is gone
   * or has the wrong size is dropped, so the next request refetches.
   */
  private async open(stored: StoredContent): Promise<ContentFile | null> {
    const { kind, digest } = stored;
    let file: ContentFile | null;
    try {
      file = await this.store.open(stored);
    } catch (err) {
      if (err instanceof StoreUnavailableError) throw err; // a MISS would fetch what the fleet cannot store
      return null; // cannot be opened now (EMFILE, EACCES): a MISS, the entry stays
    }
    if (!file) {
      // Evicted a moment ago (the index no longer has it), or removed behind our back (drop the entry).
      if (this.store.index.get(kind, digest)) {
        this.log.warn({ digest, path: this.store.where(digest) }, 'content file missing; entry dropped');
        // the entry is gone or the next read finds it missing again: removing is best effort.
        await this.store.remove(kind, digest).catch(() => undefined);
      }
      return null;
    }
    if (file.size !== stored.size) {
      await file.close();
      this.log.warn({ digest, kind, path: this.store.where(digest), size: stored.size, actualSize: file.size }, 'stored content has the wrong size; dropped');
      // the entry is gone or the next read finds it wrong again: removing is best effort.
      await this.store.remove(kind, digest).catch(() => undefined);
      return null;
    }
    return file;
  }

  /**
   * Stored bytes that do not hash to their digest: the entry goes, so the next request refetches; or, when
   * what was read is a replica's local copy (the S3 store's local tier), that copy only.
   */
  private dropCorrupt(stored: StoredContent, err: Error): void {
    const { kind, digest } = stored;
    void (async () => {
      if (await this.store.dropCorruptCopy(digest)) {
        this.log.warn(
          { digest, kind, error: err.message },
          'local copy of stored content does not match its digest; dropped (the bucket answers the next read)',
        );
        return;
      }
      this.log.warn({ digest, kind, path: this.store.where(digest), error: err.message }, 'stored content does not match its digest; dropped');
      await this.store.remove(kind, digest);
    })().catch((e: Error) => this.log.warn({ digest, error: e.message }, 'dropping corrupt content failed'));
  }

  /** Stores a small body (a manifest) whose digest the caller verified; eviction follows as after a fill. */
  async storeVerified(content: StoredContent, data: Buffer, from: Provenance): Promise<void> {
    await this.store.putVerified(content, data, from);
    this.room.afterCommit();
  }

  /** The most a fill of this kind may be, and what a refusal for that says. */
  private hardBound(kind: ContentKind): { hard: number; hardReason: string } {
    if (kind === 'manifest' && this.limits.manifestMaxBytes < this.room.maxBytes) {
      return { hard: this.limits.manifestMaxBytes, hardReason: 'larger than MANIFEST_MAX_SIZE' };
    }
    return { hard: this.room.maxBytes, hardReason: 'larger than CACHE_MAX_SIZE' };
  }

  private rememberedOversize(key: FillKey): string | null {
    const id = `${key.origin} ${key.kind} ${key.digest}`;
    const known = this.oversize.get(id);
    if (known && known.until > Date.now()) return known.reason;
    if (known) this.oversize.delete(id);
    return null;
  }

  private rememberOversize(key: FillKey, reason: string): void {
    if (this.oversize.size >= MAX_REMEMBERED_OVERSIZE) this.oversize.delete(this.oversize.keys().next().value!);
    this.oversize.set(`${key.origin} ${key.kind} ${key.digest}`, { until: Date.now() + this.limits.rememberOversizeMs, reason });
  }

  private settled(fill: Fill, key: FillKey, ms: number): void {
    const line = { digest: key.digest, host: key.origin, bytes: fill.written, ms };
    // Every byte was hashed to the digest on its way to the file: its first HIT need not hash it again.
    if (fill.state === 'committed') this.trusted?.recordCommit(key.digest, Date.now());
    if (fill.state === 'committed') this.log.info(line, 'fill committed');
    else if (fill.error?.reason === 'oversize') {
      // Past its bound (length unknown, or more than announced): nothing stored, nothing evicted for it.
      this.log.warn({ ...line, reason: fill.error.reason, error: fill.error.message }, 'fill too large; spool dropped, clients served from upstream (BYPASS)');
      // The content's size, not the disk's state of the moment, is worth remembering.
      const reason = fill.error.message.split(':', 1)[0]!;
      if (reason.startsWith('larger than ')) this.rememberOversize(key, reason);
    } else this.log.warn({ ...line, reason: fill.error?.reason, error: fill.error?.message }, 'fill failed; nothing stored');
    this.emit('fill-settled', fill, key);
    if (fill.state === 'committed') this.room.afterCommit();
    if (fill.error?.reason === 'store') void this.room.makeRoom(fill.written); // e.g. ENOSPC: free space for the next one
  }
}

/** A fill the caller acquired, as a body: read by a FillReader (released at its end), or released unread. */
function fillBody(fill: Fill): ContentBody {
  return {
    kind: fill.kind,
    digest: fill.digest,
    mediaType: fill.mediaType,
    size: fill.expectedSize,
    sendTo: (destination, span, onBytes) => new FillReader(fill, span.start, span.end).sendTo(destination, onBytes),
    close: () => {
      fill.release();
      return Promise.resolve();
    },
  };
}
