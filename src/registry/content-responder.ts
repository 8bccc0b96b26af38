// Content addressed by digest (blobs, manifests by digest) as HTTP. The cache's FillCoordinator reads
// stored content in one call (read, asking the gate, content-gate.ts, with the entry it found) or fills it
// (fill), and hands back a body that sends itself; this file answers: the head (content-head.ts), then the
// body (a stored file, hashed on the way out as VERIFY_ON_READ says, or a fill shared with every
// concurrent request of the same origin), or a redirect to the bucket (S3_REDIRECT).
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { CacheStatus } from '../telemetry/access-log.js';
import { StoreUnavailableError, type ContentKind, type Provenance } from '../cache/content-store.js';
import type { Entry } from '../cache/entry-index.js';
import {
  CorruptContentError,
  FillError,
  type ByteSpan,
  type ContentBody,
  type FetchedBody,
  type FillCoordinator,
  type FillKey,
} from '../cache/fill-coordinator.js';
import { formatRepository } from '../reference/repository-reference.js';
import { contentRequestHeaders, headerValue } from '../upstream/header-filter.js';
import { discardBody, type Upstream, type UpstreamResponse } from '../upstream/upstream-client.js';
import type { AskedContent, ContentAccess } from './content-access.js';
import { mayServe, type StoreAnswer } from './content-gate.js';
import { writeContentHead } from './content-head.js';
import { answerUpstreamFailure, noteStreamError, passThrough, relayResponse } from './pass-through.js';
import { sendRegistryError } from './registry-errors.js';
import type { RegistryRequest } from './registry-request.js';
import { errorMessage } from '../telemetry/error-message.js';

/** The content a request asks for, and where it was asked for (kept in the index when it is read or stored). */
export interface ContentTarget {
  kind: ContentKind;
  digest: string;
  from: Provenance;
  /** What the origin is asked about for this client instead (a referrers list: its subject manifest). */
  askedAs?: AskedContent;
}

export class ContentResponder {
  constructor(
    private readonly coordinator: FillCoordinator,
    private readonly upstream: Upstream,
    private readonly access: ContentAccess,
  ) {}

  /** A blob or a manifest by digest, named under the request's repository. */
  async serve(request: RegistryRequest, kind: ContentKind, digest: string): Promise<void> {
    const { record } = request;
    record.digest = digest;
    const content: ContentTarget = { kind, digest, from: { ref: request.repository && formatRepository(request.repository), tag: null } };
    if (await this.serveStored(request, content)) return;
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
   * Learns, in the background, whether stored content that its origin does not serve by its own digest
   * (a referrers list) is public, by asking about `asked` (its subject manifest) at `ref` anonymously.
   */
  learnAccess(kind: ContentKind, digest: string, ref: string, asked: AskedContent): void {
    const entry = this.coordinator.store.index.get(kind, digest);
    if (entry) void this.access.classify(entry, ref, asked);
  }

  /**
   * From the store, as `answer` (digest-hit; tag-hit, tag-revalidated or tag-stale for a tag), in one
   * call to the coordinator, which asks the gate with the entry it found; false when the content is not
   * there, vanished before it was opened, or is not this request's to have from the store (the caller goes
   * upstream). `originNamedIt`: this origin just answered this client's own request 200 naming the digest
   * (the gate weighs it; it is no pass by itself).
   */
  async serveStored(request: RegistryRequest, content: ContentTarget, answer: FromStore = 'digest-hit', originNamedIt = false): Promise<boolean> {
    let verdict = 'elsewhere' as Admission; // set by admit, if the coordinator asks
    const admit = async (entry: Entry, redirect: boolean): Promise<boolean> =>
      (verdict = await this.admit(request, content, entry, redirect ? 'digest-redirect' : answer, originNamedIt)) === 'yes';
    const body = await this.coordinator.read(content, content.from, { redirect: request.method === 'GET' }, admit);
    if (!body) return verdict === 'answered'; // answered with upstream's refusal; else not here: upstream
    const { res, record } = request;
    record.cache = LABELS[answer];
    record.digest = body.digest; // a tag's line names the manifest it was answered with
    if (body.location !== null) {
      // S3_REDIRECT: the client reads the blob from the bucket and verifies its digest itself (every registry
      // client does); only blobs: a manifest is small and its Content-Type and digest headers matter.
      record.redirect = true;
      res.writeHead(307, { location: body.location, 'docker-content-digest': body.digest, 'content-length': 0 }).end();
      return true;
    }
    const failure = (await this.sendBody(request, body))?.failure;
    if (failure) {
      // Noted before the cut: the log line is written when the response closes.
      if (failure instanceof CorruptContentError) {
        record.cache = 'CORRUPT'; // the coordinator dropped the bad copy: the next request refetches
        record.error = `${failure.name}: ${failure.message}`;
      } else {
        noteStreamError(record, failure);
      }
      res.destroy(failure); // the client sees a cut, never a complete bad body
    }
    return true;
  }

  /**
   * Writes the head for the client's Range, then sends the body unless the request is a HEAD or was
   * answered 416 (then null: nothing sent). What was sent, and what it failed with (the response is then
   * the caller's to continue or cut).
   */
  private async sendBody(request: RegistryRequest, body: ContentBody): Promise<{ span: ByteSpan; sent: number; failure: Error | null } | null> {
    const { res, record } = request;
    const span = writeContentHead(res, body, request.range);
    if (!span || request.method === 'HEAD') {
      await body.close();
      if (span) res.end();
      return null;
    }
    let sent = 0;
    const failure = await body
      .sendTo(res, span, (n) => {
        sent += n;
        record.bytes += n;
      })
      .then(
        () => null,
        (err: Error) => err,
      );
    return { span, sent, failure };
  }

  /** A GET that the store cannot answer: join this origin's running fill, or start one. */
  private async serveMiss(request: RegistryRequest, content: ContentTarget, mayJoin: boolean): Promise<void> {
    const { res, record } = request;
    const admit = async (): Promise<boolean> => (await this.admit(request, content, undefined, 'fill-joined')) === 'yes';
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
        if (await this.serveStored(request, content)) return;
        return this.serveMiss(request, content, false);
      case 'joined':
        record.coalesced = true;
        if (outcome.fill.verified) record.cache = 'HIT'; // verified bytes, syncing to the store: no upstream involved
        return this.serveFill(request, outcome.body);
      case 'started':
        return this.serveFill(request, outcome.body);
      case 'declined':
        record.reason = `upstream answered ${outcome.answer.statusCode}; not cached`; // a MISS line would otherwise read as stored
        return relayResponse(outcome.answer, res, record); // 401, 404, 5xx: the client's business, never cached
      case 'bypassed':
        if (outcome.oversize && content.kind === 'manifest') {
          // A manifest past MANIFEST_MAX_SIZE is refused, as distribution refuses it on push; not relayed.
          discardBody(outcome.answer.body);
          record.cache = 'BYPASS';
          record.reason = outcome.reason;
          sendRegistryError(res, 'upstream-too-large', `the upstream manifest is ${outcome.reason} (regcache's bound)`);
          return;
        }
        record.cache = 'BYPASS';
        if (outcome.storeError === undefined) record.reason = outcome.reason;
        else record.error = `store: ${outcome.storeError}`;
        return relayResponse(outcome.answer, res, record);
    }
  }

  /** The upstream GET a fill starts from: only a 200 is filled. */
  private async fetch(request: RegistryRequest): Promise<{ answer: UpstreamResponse; body: FetchedBody | null }> {
    const response = await this.upstream.request({ url: request.upstreamUrl, method: 'GET', headers: contentRequestHeaders(request.headers) });
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
    if ((await this.admit(request, content, undefined, 'fill-head')) !== 'yes') return true;
    request.record.cache = 'HIT';
    writeContentHead(request.res, { digest: fill.digest, mediaType: fill.mediaType, size: fill.written }, undefined);
    request.res.end();
    return true;
  }

  /** Streams a fill that the caller has acquired (its body releases it). */
  private async serveFill(request: RegistryRequest, body: ContentBody): Promise<void> {
    const { res, record } = request;
    const total = body.size;
    const result = await this.sendBody(request, body);
    if (!result) return;
    const { span: range, sent, failure } = result;
    if (!failure || res.destroyed) return;
    if (failure instanceof FillError && failure.reason === 'store' && total !== null) {
      // Our disk failed (full), not the upstream: the client still gets the rest, from upstream, uncached.
      record.reason = `store failed mid-fill (${failure.message}); rest relayed from upstream`;
      await this.continueFromUpstream(request, range.start + sent, range.end ?? total - 1);
      return;
    }
    if (failure instanceof FillError && failure.reason === 'oversize') {
      // Past its bound as it grew: the spool is gone, nothing was evicted for it; this client gets the rest
      // from upstream uncached (a manifest that large is cut: no client takes one).
      record.cache = 'BYPASS';
      record.reason = failure.message;
      if (body.kind === 'blob') {
        await this.continueFromUpstream(request, range.start + sent, range.end ?? (total === null ? null : total - 1));
        return;
      }
    }
    record.error = `${failure.name}: ${failure.message}`;
    res.destroy(failure); // the client sees a cut, not bad data
  }

  /**
   * The gate's verdict on content of this origin that the store (entry) or a fill holds, acted on: 'yes';
   * 'elsewhere' when it is not this request's to have from the store (the caller goes upstream, as for a
   * MISS: another host, port or mirror ns= never gets it from the store); 'answered' when this client was
   * refused, answered with upstream's own answer to its request, so that a refusal of stored content is
   * byte for byte what upstream says of content it does not have (no cache oracle).
   */
  private async admit(
    request: RegistryRequest,
    content: ContentTarget,
    entry: Entry | undefined,
    answer: StoreAnswer,
    originNamedIt = false,
  ): Promise<Admission> {
    const { kind, digest } = content;
    const decision = await mayServe(this.access, {
      answer,
      kind,
      digest,
      entry,
      ref: content.from.ref,
      credentials: request.credentials,
      originNamedIt,
      askedAs: content.askedAs,
    });
    request.record.gate.push(`${answer}:${decision.serve ? 'serve' : decision.elsewhere ? 'elsewhere' : 'refused'}`);
    if (decision.serve) return 'yes';
    if (decision.elsewhere) return 'elsewhere';
    request.record.cache = 'DENIED';
    request.record.reason = decision.reason;
    await passThrough(this.upstream, request);
    return 'answered';
  }

  /**
   * Sends bytes [offset, last] of the object (last null: to its end, its length unknown) from upstream
   * with a Range request, or cuts the client. Of unknown length, a 200 (no ranges there) is read past the
   * first `offset` bytes instead.
   */
  private async continueFromUpstream(request: RegistryRequest, offset: number, last: number | null): Promise<void> {
    const { res, record } = request;
    try {
      const headers = { ...contentRequestHeaders(request.headers), range: `bytes=${offset}-${last ?? ''}` };
      const response = await this.upstream.request({ url: request.upstreamUrl, method: 'GET', headers });
      const whole = last === null && response.statusCode === 200;
      if (response.statusCode !== 206 && !whole) {
        discardBody(response.body);
        throw new Error(`upstream answered the continuation with ${response.statusCode}, not 206`);
      }
      response.body.on('data', (chunk: Buffer) => (record.bytes += chunk.length));
      await (whole ? pipeline(response.body, skipFirst(offset), res) : pipeline(response.body, res));
    } catch (err) {
      record.error = `continuation: ${errorMessage(err)}`;
      res.destroy();
    }
  }
}

/** Passes on what comes after the first n bytes. */
function skipFirst(n: number): Transform {
  let left = n;
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      if (left >= chunk.length) {
        left -= chunk.length;
        return callback();
      }
      const rest = chunk.subarray(left);
      left = 0;
      callback(null, rest);
    },
  });
}

/** The gate's verdict acted on: serve; not here (go upstream); refused and answered with upstream's answer. */
type Admission = 'yes' | 'elsewhere' | 'answered';

/** The answers read from the store itself (the others redirect to it, or read a fill). */
type FromStore = Exclude<StoreAnswer, 'digest-redirect' | 'fill-joined' | 'fill-head'>;

/** How the access log labels each answer from the store. */
const LABELS: Record<FromStore, CacheStatus> = {
  'digest-hit': 'HIT',
  'tag-hit': 'HIT',
  'tag-revalidated': 'REVALIDATED',
  'tag-stale': 'STALE',
  'referrers-stale': 'STALE',
};

/** The request's fill of this content: per origin (cache/fill-coordinator.ts). */
function fillKey(request: RegistryRequest, content: ContentTarget): FillKey {
  return { origin: request.origin.host, kind: content.kind, digest: content.digest };
}
