// Requests inside an intercepted connection, plain-HTTP requests to an allowlisted registry, and the
// mirror's: classify, then serve from the cache, pass through, or refuse.
import type { ServerResponse } from 'node:http';
import type { AccessLog, RequestRecord } from '../telemetry/access-log.js';
import { StoreUnavailableError } from '../cache/content-store.js';
import type { FillCoordinator } from '../cache/fill-coordinator.js';
import type { Logger } from '../telemetry/log.js';
import type { Upstream } from '../upstream/upstream-client.js';
import type { ContentResponder } from './content-responder.js';
import { passThrough } from './pass-through.js';
import { sendRegistryError } from './registry-errors.js';
import type { DoorRequest, RegistryRequest } from './registry-request.js';
import { classify } from './request-classifier.js';
import { serveReferrers } from './referrers.js';
import { serveTagManifest, type TagPolicy } from './tag-manifest.js';
import { errorMessage } from '../telemetry/error-message.js';

export interface RegistryHandlerDeps {
  log: Logger;
  accessLog: AccessLog;
  coordinator: FillCoordinator;
  upstream: Upstream;
  content: ContentResponder;
  allowPush: boolean;
  tagPolicy: TagPolicy;
}

export class RegistryHandler {
  constructor(private readonly deps: RegistryHandlerDeps) {}

  async handle(door: DoorRequest): Promise<void> {
    const { log, coordinator, upstream, content } = this.deps;
    const { origin, res } = door;
    const record = this.deps.accessLog.record(door.req, res, origin.host, door.target);
    const request = registryRequest(door, record);
    const { route } = request;
    record.kind = route.kind === 'passthrough' ? route.what : route.kind;
    if ('name' in route && route.name !== null) record.repository = route.name;
    if (route.kind === 'manifest-by-tag') record.tag = route.tag;
    try {
      if (origin.protocol !== 'https:' && ['blob', 'manifest-by-digest', 'manifest-by-tag', 'referrers'].includes(route.kind)) {
        // Plain HTTP can be forged by anyone on the path: what it says must never become what an HTTPS pull
        // is served (a tag pointer, a stored manifest), and it is not served from what HTTPS stored either.
        record.reason = 'plain HTTP is never cached';
        return await passThrough(upstream, request); // redirects go to the client, as for any forward
      }
      switch (route.kind) {
        case 'blob':
          if (request.method === 'HEAD' && this.deps.allowPush) {
            // A pusher asks whether *this repository* has the blob; our cache cannot answer for it.
            record.digest = route.digest;
            record.reason = 'HEAD of a blob with ALLOW_PUSH goes upstream';
            return await passThrough(upstream, request, { followRedirects: true });
          }
          return await content.serve(request, 'blob', route.digest);
        case 'manifest-by-digest':
          return await content.serve(request, 'manifest', route.digest);
        case 'manifest-by-tag':
          return await serveTagManifest({ upstream, coordinator, content, log, policy: this.deps.tagPolicy }, request, {
            registry: origin.host,
            repository: route.name,
            tag: route.tag,
          });
        case 'referrers':
          return await serveReferrers({ upstream, coordinator, content, log, policy: this.deps.tagPolicy }, request, {
            registry: origin.host,
            repository: route.name,
            subject: route.digest,
            artifactType: route.artifactType,
          });
        case 'passthrough':
          if (route.what === 'ping' && this.deps.tagPolicy.serveStale) {
            // With upstream gone, clients must still get past their first request to pull what is cached.
            return await passThrough(upstream, request, { fallback: (err) => answerPingLocally(res, record, err) });
          }
          return await passThrough(upstream, request);
        case 'write':
          if (this.deps.allowPush) return await passThrough(upstream, request);
          record.cache = 'REJECTED';
          return sendRegistryError(
            res,
            'write-refused',
            'regcache is a pull-through cache: pushes and deletes are refused. Set ALLOW_PUSH=true on the proxy to pass them through.',
            {
              allow: 'GET, HEAD',
            },
          );
        case 'invalid':
          record.cache = 'REJECTED';
          record.error = route.message;
          return sendRegistryError(res, route.error, route.message);
      }
    } catch (err) {
      if (err instanceof StoreUnavailableError) {
        // The bucket is down or refuses (the store logged it once, with the reason): the client may retry, or another replica serve it.
        record.error = `store: ${err.message}`;
        return sendRegistryError(res, 'store-unavailable', 'the cache store is unavailable');
      }
      // Anything unforeseen: answer 500 if we still can, never take the process down.
      record.error = `internal: ${errorMessage(err)}`;
      sendRegistryError(res, 'internal', 'regcache internal error');
    }
  }
}

function answerPingLocally(res: ServerResponse, record: RequestRecord, err: unknown): boolean {
  record.cache = 'STALE';
  record.reason = `upstream unreachable (${errorMessage(err)}); ping answered locally`;
  res
    .writeHead(200, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0', warning: '110 regcache "Response is Stale"' })
    .end('{}');
  return true;
}

/** The request as everything below the doors sees it (registry-request.ts), built once per request. */
export function registryRequest({ origin, target, req, res }: DoorRequest, record: RequestRecord): RegistryRequest {
  const method = req.method ?? 'GET';
  const route = classify(method, target);
  const name = 'name' in route ? route.name : null;
  let url: URL | undefined;
  return {
    origin,
    method,
    target,
    get upstreamUrl() {
      return (url ??= new URL(target, origin));
    },
    route,
    repository: name === null ? null : { registry: origin.host, repository: name },
    headers: req.headers,
    // Node keeps the first Authorization and joins repeated Range headers (a list: ignored, as multi-range).
    range: req.headers.range,
    credentials: req.headers.authorization,
    body: req,
    res,
    record,
  };
}
