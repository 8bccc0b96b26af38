// One log line per request, written when the response closes: the fields operators grep for
// (cache=HIT/MISS/...), and nothing that could carry a credential (no headers, no query strings). Each
// line is also counted (the proxy's Metrics), so the data path makes no metric calls of its own, and
// the counts are the log's: a refused pull is DENIED in both, never a MISS.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import type { Logger } from './log.js';
import type { Metrics } from './metrics.js';
import { errorMessage } from './error-message.js';

/** What a request's line is counted in. */
export type RequestCounters = Pick<Metrics, 'request' | 'rateLimitRemaining' | 'upstreamError'>;

/** The registry label of an origin ("host" or "host:port"): its allowlist entry, or "other". */
export type RegistryLabel = (origin: string) => string;

// Plain-HTTP forwards may name any host: past this many origins, labels are worked out each time.
const MAX_LABELS = 1000;

/** The request lines of one proxy: its logger, its counters, and how an origin is named in them. */
export class AccessLog {
  private readonly labels = new Map<string, string>();

  constructor(
    private readonly log: Logger,
    private readonly counters: RequestCounters,
    private readonly registryOf: RegistryLabel = () => 'other',
  ) {}

  /**
   * An origin's label, worked out once: its allowlist entry does not change while regcache runs. Fills
   * are counted under the same labels (proxy.ts), from this one memo.
   */
  readonly labelOf = (origin: string): string => {
    let label = this.labels.get(origin);
    if (label === undefined) {
      label = this.registryOf(origin);
      if (this.labels.size < MAX_LABELS) this.labels.set(origin, label);
    }
    return label;
  };

  /**
   * Starts the line of a request, written when the response closes. `host` is the origin as logged;
   * `path` the request's path as it is meant (default: the request target), its query string removed.
   */
  record(req: IncomingMessage, res: ServerResponse, host: string, path = req.url ?? ''): RequestRecord {
    return new RequestRecord(this.log, this.counters, req, res, host, path.split('?', 1)[0] ?? '', this.labelOf);
  }
}

// LOCAL: answered by regcache itself, from neither the cache nor upstream (the mirror's /v2/ ping).
export type CacheStatus = 'HIT' | 'MISS' | 'REVALIDATED' | 'STALE' | 'CORRUPT' | 'DENIED' | 'BYPASS' | 'REJECTED' | 'ADMIN' | 'LOCAL';

export class RequestRecord {
  cache: CacheStatus = 'BYPASS';
  kind = 'other';
  repository: string | undefined; // the registry API's <name>
  tag: string | undefined; // a manifest asked for by tag
  digest: string | undefined;
  coalesced = false;
  redirect = false; // S3_REDIRECT: answered 307 to a presigned URL of the bucket's object (never logged: a credential)
  reason: string | undefined; // why a cacheable request was not cached (BYPASS)
  gate: string[] = []; // "answer:verdict" for each time the content gate was asked (registry/content-gate.ts)
  ratelimitRemaining: string | undefined; // Docker Hub's pull allowance, when upstream tells it
  error: string | undefined;
  bytes = 0;
  quiet = false; // a health probe: logged at debug, every few seconds of it would drown the rest
  private readonly started = process.hrtime.bigint();
  private readonly client: string | undefined; // read now: the socket is gone by the time the line is written

  constructor(
    private readonly log: Logger,
    private readonly counters: RequestCounters,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly host: string,
    /** The request path without its query string (queries may carry signatures or tokens). */
    readonly path: string,
    private readonly registryOf: RegistryLabel,
  ) {
    this.client = req.socket.remoteAddress;
    res.once('close', () => {
      try {
        this.write();
      } catch (err) {
        // A bug in a log line costs that line, not the process and every transfer in it.
        log.error({ error: errorMessage(err) }, 'writing a request line failed');
      }
    });
  }

  /** Keeps what operators want to see from an upstream answer (Docker Hub's `ratelimit-remaining`). */
  noteUpstream(headers: Record<string, string | string[] | undefined>): void {
    const remaining = headers['ratelimit-remaining'];
    if (typeof remaining === 'string') {
      this.ratelimitRemaining = remaining.slice(0, 64);
      this.counters.rateLimitRemaining(remaining);
    }
  }

  /** An upstream that could not be reached (or did not answer in time): counted by its cause. */
  countUpstreamFailure(cause: string): void {
    this.counters.upstreamError(cause);
  }

  /** Counts the body bytes of a stream that is being piped to the client. */
  count(body: Readable): void {
    body.on('data', (chunk: Buffer) => {
      this.bytes += chunk.length;
    });
  }

  private write(): void {
    const ms = Number(process.hrtime.bigint() - this.started) / 1e6;
    const status = this.res.statusCode;
    // Upstream refused this client (a private image without its credentials): nothing was fetched or
    // stored, so it is no MISS, whichever path relayed the refusal.
    if (this.cache === 'MISS' && (status === 401 || status === 403)) {
      this.cache = 'DENIED';
      this.reason ??= `upstream refused this client (${status})`;
    }
    const line: Record<string, unknown> = {
      cache: this.cache,
      kind: this.kind,
      method: this.req.method,
      host: this.host,
      ...(this.repository ? { repository: this.repository } : {}),
      path: this.path,
      status,
      bytes: this.bytes,
      ms: Math.round(ms * 10) / 10,
      client: this.client,
    };
    if (this.digest) line.digest = this.digest;
    if (this.coalesced) line.coalesced = true;
    if (this.redirect) line.redirect = true;
    if (this.reason) line.reason = this.reason;
    if (this.gate.length > 0) line.gate = this.gate;
    if (this.ratelimitRemaining) line.ratelimitRemaining = this.ratelimitRemaining;
    if (!this.res.writableFinished) line.aborted = true;
    if (this.error) line.error = this.error;
    this.log[this.error ? 'warn' : this.quiet ? 'debug' : 'info'](line, 'request');
    this.counters.request({
      cache: this.cache,
      kind: this.kind,
      method: this.req.method ?? '',
      status,
      bytes: this.bytes,
      path: this.path,
      registry: this.registryOf(this.host),
      repository: this.repository ?? null,
      tag: this.tag ?? null,
      digest: this.digest ?? null,
      redirect: this.redirect,
      error: this.error ?? null,
      reason: this.reason ?? null,
    });
  }
}
