// Content addressed by digest (blobs, manifests by digest) as HTTP: the cache's FillCoordinator says what
// is stored and which fills run; this file decides who may have it (ContentAccess), writes the head
// (content-head.ts) and streams the body: a stored file (hashed on the way out unless
// VERIFY_ON_READ=false), or a fill shared with every concurrent request of the same origin.
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { CacheStatus } from '../telemetry/access-log.js';
import type { BlobRedirect } from '../cache/backend.js';
import { StoreUnavailableError, type ContentFile, type ContentKind, type Provenance, type StoredContent } from '../cache/content-store.js';
import type { Entry } from '../cache/entry-index.js';
import type { FillCoordinator, FillKey } from '../cache/fill-coordinator.js';
import { FillReader } from '../cache/fill-reader.js';
import { FillError, type Fill } from '../cache/fill.js';
import type { TrustedFiles } from '../cache/trusted-files.js';
import { CorruptContentError, VerifiedFileReader } from '../cache/verified-file-reader.js';
import { formatRepository } from '../reference/repository-reference.js';
import { contentRequestHeaders, headerValue } from '../upstream/header-filter.js';
import type { Upstream, UpstreamResponse } from '../upstream/upstream-client.js';
import type { ContentAccess } from './content-access.js';
import { writeContentHead, type BodyRange } from './content-head.js';
import { answerUpstreamFailure, noteStreamError, passThrough, relayResponse } from './pass-through.js';
import { upstreamUrl, type RegistryRequest } from './registry-request.js';

/** The content a request asks for, and where it was asked for (kept in the index when it is read or stored). */
export interface ContentTarget {
  kind: ContentKind;
  digest: string;
  from: Provenance;
}

export interface ContentResponderOptions {
  verifyOnRead: boolean; // VERIFY_ON_READ: hash every HIT while it is served (always), or a file's first (once)
  trusted?: TrustedFiles | null; // VERIFY_ON_READ=once: the files this process verified, served unhashed while unchanged
  redirect?: BlobRedirect | null; // S3_REDIRECT: stored blobs' GETs answered 307 to their object in the bucket
}

export class ContentResponder {
  constructor(
    private readonly coordinator: FillCoordinator,
    private readonly upstream: Upstream,
    private readonly access: ContentAccess,
    private readonly options: ContentResponderOptions,
  ) {}

  /** A blob or a manifest by digest, named under the request's repository. */
  async serve(request: RegistryRequest, kind: ContentKind, digest: string): Promise<void> {
    const { record } = request;
    record.digest = digest;
    const content: ContentTarget = { kind, digest, from: { ref: request.repository && formatRepository(request.repository), tag: null } };
    const found = await this.coordinator.get(fillKey(request, content));
    if (found && 'stored' in found && (await this.serveStored(request, content, found.stored, found.entry))) return;
    record.cache = 'MISS';
    if (request.method === 'HEAD') {
      if (await this.headFromVerifiedFill(request, content)) return;
      // A HEAD stays a HEAD upstream: Docker Hub does not count it against the pull limit.
      await passThrough(this.upstream, request, { followRedirects: true });
      return;
    }
    await this.serveMiss(request, content, true);
  }

  /**
   * From the store, as `label` (HIT; REVALIDATED or STALE for a tag); false when the content is not there,
   * vanished before it was opened, or is private to other origins (the caller goes upstream).
   */
  async serveStoredContent(request: RegistryRequest, content: ContentTarget, label: CacheStatus = 'HIT'): Promise<boolean> {
    const found = await this.coordinator.stored(content.kind, content.digest);
    return found !== null && this.serveStored(request, content, found.stored, found.entry, label);
  }

  private async serveStored(
    request: RegistryRequest,
    content: ContentTarget,
    stored: StoredContent,
    entry: Entry,
    label: CacheStatus = 'HIT',
  ): Promise<boolean> {
    // REVALIDATED: upstream (this origin) just said yes to this client's own HEAD.
    if (label !== 'REVALIDATED') {
      const may = await this.mayServe(request, content, entry);
      if (may !== 'yes') return may === 'answered';
    }
    const file = await this.coordinator.open(stored);
    if (!file) return false;
    this.coordinator.use(stored, content.from);
    request.record.cache = label;
    request.record.digest = stored.digest;
    if (this.options.redirect && request.method === 'GET' && stored.kind === 'blob') {
      await file.close();
      await this.redirectStored(request, stored, this.options.redirect);
      return true;
    }
    await this.sendStored(request, stored, file);
    return true;
  }

  /**
   * S3_REDIRECT: the client reads the blob from the bucket itself (a 307 to a presigned URL), after the
   * access check and once the object was found (coordinator.open: a HEAD, so no 307 leads to a 404). Only
   * blobs: a manifest is small and its Content-Type and digest headers matter. The client verifies the
   * digest of what it gets (every registry client does); VERIFY_ON_READ has nothing to hash here.
   */
  private async redirectStored(request: RegistryRequest, stored: StoredContent, redirect: BlobRedirect): Promise<void> {
    const url = await redirect(stored.digest);
    request.record.redirect = true;
    request.res.writeHead(307, { location: url, 'docker-content-digest': stored.digest, 'content-length': 0 }).end();
  }

  private async sendStored(request: RegistryRequest, stored: StoredContent, file: ContentFile): Promise<void> {
    const { res, record } = request;
    const range = writeContentHead(res, { digest: stored.digest, mediaType: stored.mediaType, size: stored.size }, request.range);
    if (!range || request.method === 'HEAD' || stored.size === 0) {
      await file.close();
      if (range) res.end();
      return;
    }
    const end = range.end ?? stored.size - 1;
    const reader = new VerifiedFileReader(file, { size: stored.size, digest: stored.digest, start: range.start, end });
    try {
      await reader.sendTo(res, { verify: this.options.verifyOnRead, trusted: this.options.trusted, onBytes: (n) => (record.bytes += n) });
    } catch (err) {
      // Noted before the cut: the log line is written when the response closes.
      if (err instanceof CorruptContentError) {
        record.cache = 'CORRUPT';
        record.error = `${err.name}: ${err.message}`;
        this.coordinator.dropCorrupt(stored, err);
      } else {
        noteStreamError(record, err);
      }
      res.destroy(err as Error); // the client sees a cut, never a complete bad body
    }
  }

  /** A GET that the store cannot answer: join this origin's running fill, or start one. */
  private async serveMiss(request: RegistryRequest, content: ContentTarget, mayJoin: boolean): Promise<void> {
    const { res, record } = request;
    const admit = async (): Promise<boolean> => (await this.mayServe(request, content, undefined)) === 'yes';
    let outcome;
    try {
      outcome = await this.coordinator.fill(fillKey(request, content), content.from, () => this.fetch(request), mayJoin ? admit : null);
    } catch (err) {
      if (err instanceof StoreUnavailableError) throw err; // 503, by the handler
      answerUpstreamFailure(res, record, err);
      return;
    }
    switch (outcome.kind) {
      case 'refused':
        return; // answered with upstream's own answer
      case 'ended':
        // The fill finished meanwhile (then it is stored), or its leader got no 200: try on our own.
        if (await this.serveStoredContent(request, content)) return;
        return this.serveMiss(request, content, false);
      case 'joined':
        record.coalesced = true;
        if (outcome.fill.verified) record.cache = 'HIT'; // verified bytes, syncing to the store: no upstream involved
        return this.serveFill(request, outcome.fill);
      case 'started':
        return this.serveFill(request, outcome.fill);
      case 'declined':
        record.reason = `upstream answered ${outcome.answer.statusCode}; not cached`; // a MISS line would otherwise read as stored
        return relayResponse(outcome.answer, res, record); // 401, 404, 5xx: the client's business, never cached
      case 'bypassed':
        record.cache = 'BYPASS';
        if (outcome.storeError === undefined) record.reason = outcome.reason;
        else record.error = `store: ${outcome.storeError}`;
        return relayResponse(outcome.answer, res, record);
    }
  }

  /** The upstream GET a fill starts from: only a 200 is filled. */
  private async fetch(
    request: RegistryRequest,
  ): Promise<{ answer: UpstreamResponse; body: { stream: Readable; mediaType: string; size: number | null } | null }> {
    const response = await this.upstream.request({ url: upstreamUrl(request), method: 'GET', headers: contentRequestHeaders(request.headers) });
    request.record.noteUpstream(response.headers);
    if (response.statusCode !== 200) return { answer: response, body: null };
    const length = headerValue(response.headers['content-length']);
    return {
      answer: response,
      body: {
        stream: response.body,
        mediaType: headerValue(response.headers['content-type']) ?? 'application/octet-stream',
        size: length && /^\d+$/.test(length) ? Number(length) : null,
      },
    };
  }

  /**
   * Answers a HEAD from a fill whose bytes are all in and verified but not yet committed (the sync can
   * take a moment after the GET that caused it has ended): the client asks about what it just got.
   */
  private async headFromVerifiedFill(request: RegistryRequest, content: ContentTarget): Promise<boolean> {
    const fill = await this.coordinator.running(fillKey(request, content));
    if (!fill?.verified) return false;
    if ((await this.mayServe(request, content, undefined)) !== 'yes') return true;
    request.record.cache = 'HIT';
    writeContentHead(request.res, { digest: fill.digest, mediaType: fill.mediaType, size: fill.written }, undefined);
    request.res.end();
    return true;
  }

  /** Streams a fill that the caller has acquired. */
  private async serveFill(request: RegistryRequest, fill: Fill): Promise<void> {
    const { res, record } = request;
    const total = fill.expectedSize;
    const range: BodyRange | null = writeContentHead(res, { digest: fill.digest, mediaType: fill.mediaType, size: total }, request.range);
    if (!range) {
      fill.release();
      return;
    }
    let sent = 0;
    const failure = await new FillReader(fill, range.start, range.end)
      .sendTo(res, (n) => {
        sent += n;
        record.bytes += n;
      })
      .then(
        () => null,
        (err: Error) => err,
      );
    if (!failure || res.destroyed) return;
    if (failure instanceof FillError && failure.reason === 'store' && total !== null) {
      // Our disk failed (full), not the upstream: the client still gets the rest, from upstream, uncached.
      record.reason = `store failed mid-fill (${failure.message}); rest relayed from upstream`;
      await this.continueFromUpstream(request, range.start + sent, range.end ?? total - 1);
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
  private async mayServe(request: RegistryRequest, content: ContentTarget, entry: Entry | undefined): Promise<'yes' | 'elsewhere' | 'answered'> {
    if (!content.from.ref) return 'yes';
    const decision = await this.access.check(content.kind, content.digest, entry, content.from.ref, request.credentials);
    if (decision.allowed) return 'yes';
    if (decision.elsewhere) return 'elsewhere';
    request.record.cache = 'DENIED';
    request.record.reason = decision.reason;
    await passThrough(this.upstream, request);
    return 'answered';
  }

  /** Sends bytes [offset, last] of the object from upstream with a Range request, or cuts the client. */
  private async continueFromUpstream(request: RegistryRequest, offset: number, last: number): Promise<void> {
    const { res, record } = request;
    try {
      const headers = { ...contentRequestHeaders(request.headers), range: `bytes=${offset}-${last}` };
      const response = await this.upstream.request({ url: upstreamUrl(request), method: 'GET', headers });
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
}

/** The request's fill of this content: per origin (cache/fill-coordinator.ts). */
function fillKey(request: RegistryRequest, content: ContentTarget): FillKey {
  return { origin: request.origin.host, kind: content.kind, digest: content.digest };
}
