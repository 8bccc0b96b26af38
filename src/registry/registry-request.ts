// One client request to a registry, as everything below the doors sees it. The door that received it (an
// intercepted connection, a plain-HTTP forward, the mirror) knows the origin it is for and the path as
// meant for upstream (the mirror's ns= removed, a forward's absolute URI cut to its path); the registry
// handler builds this object from it once, and nothing downstream reads or rewrites req.url.
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { RequestRecord } from '../telemetry/access-log.js';
import type { RepositoryReference } from '../reference/repository-reference.js';
import type { Route } from './request-classifier.js';

export interface RegistryRequest {
  /** https://host[:port] the request is for (http: for a plain-HTTP forward, which is never cached). */
  readonly origin: URL;
  readonly method: string;
  /** Path and query as upstream gets them (origin-form). */
  readonly target: string;
  /** The request's URL at its origin (origin + target), made when first asked for: a HIT never asks. */
  readonly upstreamUrl: URL;
  readonly route: Route;
  /** The repository the route names, at this origin; null for routes that name none (ping, catalog, tokens). */
  readonly repository: RepositoryReference | null;
  /** The client's headers (what of them goes upstream is upstream/header-filter.ts's business). */
  readonly headers: IncomingHttpHeaders;
  /** The client's Range header, if any. */
  readonly range: string | undefined;
  /** The client's Authorization: what access checks ask upstream with. */
  readonly credentials: string | undefined;
  /** The client's request, as a body to stream upstream (pushes). */
  readonly body: IncomingMessage;
  readonly res: ServerResponse;
  readonly record: RequestRecord;
}

/** What a door hands the registry handler: the origin the request is for and its path as meant for upstream. */
export interface DoorRequest {
  origin: URL;
  target: string; // path and query, origin-form
  req: IncomingMessage;
  res: ServerResponse;
}
