// Requests inside an intercepted connection (or plain-HTTP requests to an allowlisted registry):
// classify, then serve from the cache, pass through, or refuse.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ContentStore } from '../cache/content-store.js';
import type { Logger } from '../log.js';
import type { AccessLog, RequestRecord } from '../access-log.js';
import type { Upstream } from '../upstream/upstream-client.js';
import type { ContentResponder } from './content-responder.js';
import { passThrough } from './pass-through.js';
import { classify } from './request-classifier.js';
import { sendRegistryError } from './registry-errors.js';
import { serveTagManifest, type TagPolicy } from './tag-manifest.js';

export interface RegistryHandlerDeps {
  log: Logger;
  accessLog: AccessLog;
  store: ContentStore;
  upstream: Upstream;
  content: ContentResponder;
  allowPush: boolean;
  tagPolicy: TagPolicy;
}

export class RegistryHandler {
  constructor(private readonly deps: RegistryHandlerDeps) {}

  async handle(origin: URL, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const { log, store, upstream, content } = this.deps;
    const record = this.deps.accessLog.record(req, res, origin.host);
    const request = classify(req.method ?? 'GET', req.url ?? '/');
    record.kind = request.kind === 'passthrough' ? request.what : request.kind;
    try {
      if (origin.protocol !== 'https:' && (request.kind === 'blob' || request.kind === 'manifest-by-digest' || request.kind === 'manifest-by-tag')) {
        // Plain HTTP can be forged by anyone on the path: what it says must never become what an HTTPS pull
        // is served (a tag pointer, a stored manifest), and it is not served from what HTTPS stored either.
        record.reason = 'plain HTTP is never cached';
        return await passThrough(upstream, origin, req, res, record); // redirects go to the client, as for any forward
      }
      switch (request.kind) {
        case 'blob':
          if (req.method === 'HEAD' && this.deps.allowPush) {
            // A pusher asks whether *this repository* has the blob; our cache cannot answer for it.
            record.digest = request.digest;
            record.reason = 'HEAD of a blob with ALLOW_PUSH goes upstream';
            return await passThrough(upstream, origin, req, res, record, { followRedirects: true });
          }
          return await content.serve(origin, 'blob', request.digest, request.name, req, res, record);
        case 'manifest-by-digest':
          return await content.serve(origin, 'manifest', request.digest, request.name, req, res, record);
        case 'manifest-by-tag':
          return await serveTagManifest({ upstream, store, content, log, policy: this.deps.tagPolicy }, origin, request.name, request.tag, req, res, record);
        case 'passthrough':
          if (request.what === 'ping' && this.deps.tagPolicy.serveStale) {
            // With upstream gone, clients must still get past their first request to pull what is cached.
            return await passThrough(upstream, origin, req, res, record, { fallback: (err) => answerPingLocally(res, record, err) });
          }
          return await passThrough(upstream, origin, req, res, record);
        case 'write':
          if (this.deps.allowPush) return await passThrough(upstream, origin, req, res, record);
          record.cache = 'REJECTED';
          return sendRegistryError(res, 'write-refused', 'regcache is a pull-through cache: pushes and deletes are refused. Set ALLOW_PUSH=true on the proxy to pass them through.', {
            allow: 'GET, HEAD',
          });
        case 'invalid':
          record.cache = 'REJECTED';
          record.error = request.message;
          return sendRegistryError(res, request.error, request.message);
      }
    } catch (err) {
      // Anything unforeseen: answer 500 if we still can, never take the process down.
      record.error = `internal: ${(err as Error).message}`;
      sendRegistryError(res, 'internal', 'regcache internal error');
    }
  }
}

function answerPingLocally(res: ServerResponse, record: RequestRecord, err: unknown): boolean {
  record.cache = 'STALE';
  record.reason = `upstream unreachable (${(err as Error).message}); ping answered locally`;
  res.writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0', warning: '110 regcache "Response is Stale"' }).end('{}');
  return true;
}
