// Serves content addressed by digest (blobs, manifests by digest): from the store on a HIT (hashed on the
// way out unless VERIFY_ON_READ=false); on a MISS from one shared upstream fill that every concurrent
// request for the digest streams from.
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ContentFile, ContentKind, ContentStore, Provenance, StoredContent } from '../cache/content-store.js';
import type { Entry } from '../cache/entry-index.js';
import type { Evictor } from '../cache/eviction.js';
import type { ContentAccess } from './content-access.js';
import { Fill, FillError } from '../cache/fill.js';
import { FillReader } from '../cache/fill-reader.js';
import { CorruptContentError, VerifiedFileReader } from '../cache/verified-file-reader.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { formatRepository } from '../reference/repository-reference.js';
import type { CacheStatus, RequestRecord } from '../access-log.js';
import { contentRequestHeaders, headerValue } from '../upstream/header-filter.js';
import type { Upstream } from '../upstream/upstream-client.js';
import { parseRange } from './byte-range.js';
import { answerUpstreamFailure, noteStreamError, passThrough, relayResponse } from './pass-through.js';

const READ_CHUNK = 256 * 1024;

export interface ContentResponderOptions {
  verifyOnRead: boolean; // VERIFY_ON_READ: hash every HIT while it is served
  metrics: Pick<Metrics, 'fillStarted' | 'joined' | 'upstreamError'>;
}

export class ContentResponder {
  private readonly inflight = new Map<string, Promise<Fill | null>>();

  constructor(
    private readonly store: ContentStore,
    private readonly evictor: Evictor,
    private readonly upstream: Upstream,
    private readonly access: ContentAccess,
    private readonly log: Logger,
    private readonly options: ContentResponderOptions,
  ) {}

  get fillsInFlight(): number {
    return this.inflight.size;
  }

  async serve(origin: URL, kind: ContentKind, digest: string, name: string, req: IncomingMessage, res: ServerResponse, record: RequestRecord): Promise<void> {
    record.digest = digest;
    const from: Provenance = { ref: formatRepository({ registry: origin.host, repository: name }), tag: null };
    if (await this.serveStored(origin, kind, digest, from, req, res, record)) return;
    record.cache = 'MISS';
    if (req.method === 'HEAD') {
      if (await this.headFromVerifiedFill(origin, kind, digest, from, req, res, record)) return;
      // A HEAD stays a HEAD upstream: Docker Hub does not count it against the pull limit.
      await passThrough(this.upstream, origin, req, res, record, { followRedirects: true });
      return;
    }
    await this.serveMiss(origin, kind, digest, from, req, res, record, true);
  }

  private async serveMiss(
    origin: URL,
    kind: ContentKind,
    digest: string,
    from: Provenance,
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    mayJoin: boolean,
  ): Promise<void> {
    const key = fillKey(origin, kind, digest);
    const pending = this.inflight.get(key);
    if (pending && mayJoin) {
      const fill = await pending;
      // The leader's bytes are this origin's; whether this client may have them is the origin's to say.
      if (fill && (await this.mayServe(origin, kind, digest, undefined, from, req, res, record)) !== 'yes') return;
      if (fill?.acquire()) {
        record.coalesced = true;
        this.options.metrics.joined();
        if (fill.verified) record.cache = 'HIT'; // verified bytes, syncing to the store: no upstream involved
        await this.serveFill(fill, origin, req, res, record);
        return;
      }
      // The fill finished meanwhile (then it is stored), or its leader got no 200: try on our own.
      if (await this.serveStored(origin, kind, digest, from, req, res, record)) return;
      await this.serveMiss(origin, kind, digest, from, req, res, record, false);
      return;
    }

    let settle: (fill: Fill | null) => void = () => undefined;
    const promise = new Promise<Fill | null>((resolve) => (settle = resolve));
    const lead = !pending;
    if (lead) this.inflight.set(key, promise);
    let fill: Fill | null = null;
    try {
      const started = Date.now();
      const response = await this.upstream.request({ url: new URL(req.url ?? '/', origin), method: 'GET', headers: contentRequestHeaders(req.headers) });
      record.noteUpstream(response.headers);
      if (response.statusCode !== 200) {
        record.reason = `upstream answered ${response.statusCode}; not cached`; // a MISS line would otherwise read as stored
        await relayResponse(response, res, record); // 401, 404, 5xx: the client's business, never cached
        return;
      }
      const contentType = headerValue(response.headers['content-type']) ?? 'application/octet-stream';
      const length = headerValue(response.headers['content-length']);
      const size = length && /^\d+$/.test(length) ? Number(length) : null;
      const refusal = size === null ? null : !this.evictor.fits(size) ? 'larger than CACHE_MAX_SIZE' : (await this.evictor.makeRoom(size)) ? null : 'not enough free disk space';
      if (refusal) {
        record.cache = 'BYPASS';
        record.reason = refusal;
        await relayResponse(response, res, record);
        return;
      }
      try {
        fill = await Fill.start(this.store, kind, digest, contentType, size, response.body, from);
      } catch (err) {
        // The store cannot take it (disk full, permissions): still serve the client, uncached.
        this.log.error({ digest, error: (err as Error).message }, 'cache store unavailable; serving uncached');
        record.cache = 'BYPASS';
        record.error = `store: ${(err as Error).message}`;
        await relayResponse(response, res, record);
        return;
      }
      this.options.metrics.fillStarted();
      fill.acquire(); // this client's reference, taken before any waiter can see the fill settle
      const host = origin.host;
      const current = fill;
      current.once('settled', () => {
        if (this.inflight.get(key) === promise) this.inflight.delete(key);
        const line = { digest, host, bytes: current.written, ms: Date.now() - started };
        if (current.state === 'committed') this.log.info(line, 'fill committed');
        else this.log.warn({ ...line, reason: current.error?.reason, error: current.error?.message }, 'fill failed; nothing stored');
        if (current.error && current.error.reason !== 'store') this.options.metrics.upstreamError(current.error.reason);
        if (current.error?.reason === 'store') void this.evictor.makeRoom(current.written); // e.g. ENOSPC: free space for the next one
      });
    } catch (err) {
      answerUpstreamFailure(res, record, err);
    } finally {
      if (!fill && this.inflight.get(key) === promise) this.inflight.delete(key);
      settle(fill);
    }
    if (fill) await this.serveFill(fill, origin, req, res, record);
  }

  /**
   * Answers a HEAD from a fill whose bytes are all in and verified but not yet committed (the sync can
   * take a moment after the GET that caused it has ended): the client asks about what it just got.
   */
  private async headFromVerifiedFill(origin: URL, kind: ContentKind, digest: string, from: Provenance, req: IncomingMessage, res: ServerResponse, record: RequestRecord): Promise<boolean> {
    const pending = this.inflight.get(fillKey(origin, kind, digest));
    const fill = pending ? await pending : null;
    if (!fill?.verified) return false;
    if ((await this.mayServe(origin, kind, digest, undefined, from, req, res, record)) !== 'yes') return true;
    record.cache = 'HIT';
    res.writeHead(200, { ...contentHeaders(digest, fill.mediaType), 'accept-ranges': 'bytes', 'content-length': fill.written }).end();
    return true;
  }

  /** Streams a fill that the caller has acquired. */
  private async serveFill(fill: Fill, origin: URL, req: IncomingMessage, res: ServerResponse, record: RequestRecord): Promise<void> {
    const total = fill.expectedSize;
    const headers = contentHeaders(fill.digest, fill.mediaType);
    let start = 0;
    let end: number | null = null;
    let status = 200;
    if (total !== null) {
      const range = parseRange(headerValue(req.headers.range), total);
      if (range.kind === 'unsatisfiable') {
        fill.release();
        res.writeHead(416, { 'content-range': `bytes */${total}` }).end();
        return;
      }
      headers['accept-ranges'] = 'bytes';
      if (range.kind === 'range') {
        ({ start, end } = range);
        status = 206;
        headers['content-range'] = `bytes ${start}-${end}/${total}`;
      }
      headers['content-length'] = (end ?? total - 1) - start + 1;
    }
    res.writeHead(status, headers);
    const reader = new FillReader(fill, start, end);
    record.count(reader);
    let sent = 0;
    reader.on('data', (chunk: Buffer) => (sent += chunk.length)); // each chunk is written to res at once by pipe
    const failure = await new Promise<Error | null>((resolve) => {
      reader.once('end', () => resolve(null));
      reader.once('error', (err) => {
        reader.unpipe(res);
        resolve(err);
      });
      res.once('close', () => {
        reader.destroy(); // the client left; the fill goes on for the others
        resolve(null);
      });
      reader.pipe(res);
    });
    if (!failure || res.destroyed) return;
    if (failure instanceof FillError && failure.reason === 'store' && total !== null) {
      // Our disk failed (full), not the upstream: the client still gets the rest, from upstream, uncached.
      record.reason = `store failed mid-fill (${failure.message}); rest relayed from upstream`;
      await this.continueFromUpstream(origin, req, res, record, start + sent, end ?? total - 1);
      return;
    }
    record.error = `${failure.name}: ${failure.message}`;
    res.destroy(failure); // the client sees a cut, not bad data
  }

  /**
   * Whether this request may have content of this origin that the store (entry) or a fill holds: 'yes';
   * 'elsewhere' when stored content is private to other origins (the caller goes upstream, as for a MISS:
   * another host, port or mirror ns= never gets it from the store); 'answered' when this client was
   * refused, answered with upstream's own answer to its request, so that a refusal of stored content is
   * byte for byte what upstream says of content it does not have (no cache oracle).
   */
  private async mayServe(origin: URL, kind: ContentKind, digest: string, entry: Entry | undefined, from: Provenance, req: IncomingMessage, res: ServerResponse, record: RequestRecord): Promise<'yes' | 'elsewhere' | 'answered'> {
    if (!from.ref) return 'yes';
    const decision = await this.access.check(kind, digest, entry, from.ref, req);
    if (decision.allowed) return 'yes';
    if (decision.elsewhere) return 'elsewhere';
    record.cache = 'DENIED';
    record.reason = decision.reason;
    await passThrough(this.upstream, origin, req, res, record);
    return 'answered';
  }

  /** Sends bytes [offset, last] of the object from upstream with a Range request, or cuts the client. */
  private async continueFromUpstream(origin: URL, req: IncomingMessage, res: ServerResponse, record: RequestRecord, offset: number, last: number): Promise<void> {
    try {
      const headers = { ...contentRequestHeaders(req.headers), range: `bytes=${offset}-${last}` };
      const response = await this.upstream.request({ url: new URL(req.url ?? '/', origin), method: 'GET', headers });
      if (response.statusCode !== 206) {
        response.body.destroy();
        throw new Error(`upstream answered the continuation with ${response.statusCode}, not 206`);
      }
      response.body.on('data', (chunk: Buffer) => (record.bytes += chunk.length));
      await pipeline(response.body, res);
    } catch (err) {
      record.error = `continuation: ${(err as Error).message}`;
      res.destroy();
    }
  }

  /** Serves from the store; false when the content is not there (or vanished before it was opened). */
  async serveStored(
    origin: URL,
    kind: ContentKind,
    digest: string,
    from: Provenance,
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    label: CacheStatus = 'HIT',
  ): Promise<boolean> {
    const stored = await this.store.lookup(kind, digest);
    if (!stored) return false;
    // REVALIDATED: upstream (this origin) just said yes to this client's own HEAD.
    if (label !== 'REVALIDATED') {
      const may = await this.mayServe(origin, kind, digest, this.store.index.get(kind, digest), from, req, res, record);
      if (may !== 'yes') return may === 'answered';
    }
    let file: ContentFile | null;
    try {
      file = await this.store.open(stored);
    } catch {
      return false;
    }
    if (!file) {
      // Evicted a moment ago (the index no longer has it), or removed behind our back (drop the entry).
      if (this.store.index.get(kind, digest)) {
        this.log.warn({ digest, path: this.store.where(digest) }, 'content file missing; entry dropped');
        await this.store.remove(kind, digest).catch(() => undefined);
      }
      return false;
    }
    // Checked even without VERIFY_ON_READ: a short file would answer the full Content-Length and then stall.
    const actualSize = file.size;
    if (actualSize !== stored.size) {
      await file.close();
      this.log.warn({ digest, kind, path: this.store.where(digest), size: stored.size, actualSize }, 'stored content has the wrong size; dropped');
      await this.store.remove(kind, digest).catch(() => undefined);
      return false;
    }
    this.store.use(kind, digest, from);
    record.cache = label;
    record.digest = digest;
    await this.sendStored(kind, stored, file, req, res, record);
    return true;
  }

  private async sendStored(kind: ContentKind, stored: StoredContent, file: ContentFile, req: IncomingMessage, res: ServerResponse, record: RequestRecord): Promise<void> {
    const headers = contentHeaders(stored.digest, stored.mediaType);
    headers['accept-ranges'] = 'bytes';
    const range = parseRange(headerValue(req.headers.range), stored.size);
    let start = 0;
    let end = stored.size - 1;
    let status = 200;
    if (range.kind === 'unsatisfiable') {
      await file.close();
      res.writeHead(416, { 'content-range': `bytes */${stored.size}` }).end();
      return;
    }
    if (range.kind === 'range') {
      ({ start, end } = range);
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${stored.size}`;
    }
    headers['content-length'] = end - start + 1;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || stored.size === 0) {
      await file.close();
      res.end();
      return;
    }
    const body: Readable = this.options.verifyOnRead
      ? new VerifiedFileReader(file, { size: stored.size, digest: stored.digest, start, end })
      : file.stream(start, end, READ_CHUNK);
    record.count(body);
    // Registered before pipeline's own listeners: the log line must say CORRUPT before the response closes.
    body.once('error', (err: Error) => {
      if (err instanceof CorruptContentError) this.dropCorrupt(kind, stored, record, err);
    });
    try {
      await pipeline(body, res); // an error destroys the response: the client sees a cut, never a complete bad body
    } catch (err) {
      if (!(err instanceof CorruptContentError)) noteStreamError(record, err);
    }
  }

  /** A HIT whose bytes no longer match their digest: the entry goes, so the next request refetches. */
  private dropCorrupt(kind: ContentKind, stored: StoredContent, record: RequestRecord, err: CorruptContentError): void {
    record.cache = 'CORRUPT';
    record.error = `${err.name}: ${err.message}`;
    this.log.warn({ digest: stored.digest, kind, path: this.store.where(stored.digest), error: err.message }, 'stored content does not match its digest; dropped');
    void this.store.remove(kind, stored.digest).catch((e: Error) => this.log.warn({ digest: stored.digest, error: e.message }, 'dropping corrupt content failed'));
  }
}

/** Fills are per origin: bytes from one registry are never handed to a request that named another. */
function fillKey(origin: URL, kind: ContentKind, digest: string): string {
  return `${origin.host}|${kind}/${digest}`;
}

function contentHeaders(digest: string, mediaType: string): OutgoingHttpHeaders {
  return { 'content-type': mediaType, 'docker-content-digest': digest, etag: `"${digest}"` };
}
