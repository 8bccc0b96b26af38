// Streams a request to the upstream and its response back, uncached: pings, token requests, tags/list,
// referrers, pushes when allowed, and upstream answers that are not cacheable (401, 404, 5xx).
import type { ServerResponse } from 'node:http';
import { pipeline } from 'node:stream/promises';
import type { RequestRecord } from '../telemetry/access-log.js';
import { BodyTooLargeError } from '../upstream/bounded-body.js';
import { clientResponseHeaders, upstreamRequestHeaders } from '../upstream/header-filter.js';
import type { Upstream, UpstreamResponse } from '../upstream/upstream-client.js';
import { upstreamFailure } from '../upstream/upstream-failure.js';
import { sendRegistryError } from './registry-errors.js';
import type { RegistryRequest } from './registry-request.js';
import { errorCode, errorMessage } from '../telemetry/error-message.js';

export interface PassThroughOptions {
  followRedirects?: boolean;
  /** Sees the upstream response before it is streamed (to attach extra 'data' listeners). */
  observe?: (response: UpstreamResponse) => void;
  /** When upstream cannot be reached: answer locally and return true, or false for the usual 502/504. */
  fallback?: (err: unknown) => boolean;
}

/** What a pass-through needs of a request (a forward to a host off the allowlist has no route). */
export type PassThroughRequest = Pick<RegistryRequest, 'origin' | 'method' | 'target' | 'upstreamUrl' | 'headers' | 'body' | 'res' | 'record'>;

export async function passThrough(upstream: Upstream, request: PassThroughRequest, options: PassThroughOptions = {}): Promise<void> {
  const hasBody = request.method !== 'GET' && request.method !== 'HEAD';
  let response: UpstreamResponse;
  try {
    response = await upstream.request({
      url: request.upstreamUrl,
      method: request.method,
      headers: upstreamRequestHeaders(request.headers),
      body: hasBody ? request.body : null,
      followRedirects: options.followRedirects ?? false,
    });
  } catch (err) {
    if (!options.fallback?.(err)) answerUpstreamFailure(request.res, request.record, err);
    return;
  }
  await relayResponse(response, request.res, request.record, options.observe);
}

/** A GET sent upstream as the client sent it (its headers filtered), redirects left for the client. */
export function forwardGet(upstream: Upstream, request: PassThroughRequest): Promise<UpstreamResponse> {
  return upstream.request({ url: request.upstreamUrl, method: 'GET', headers: upstreamRequestHeaders(request.headers), followRedirects: false });
}

/** Sends an upstream response to the client as it is. */
export async function relayResponse(
  response: UpstreamResponse,
  res: ServerResponse,
  record: RequestRecord,
  observe?: (response: UpstreamResponse) => void,
): Promise<void> {
  record.noteUpstream(response.headers);
  res.writeHead(response.statusCode, clientResponseHeaders(response.headers));
  observe?.(response);
  record.count(response.body);
  try {
    await pipeline(response.body, res);
  } catch (err) {
    noteStreamError(record, err);
  }
}

/** A client that goes away is not an error (the record says aborted); anything else is. */
export function noteStreamError(record: RequestRecord, err: unknown): void {
  if (errorCode(err) !== 'ERR_STREAM_PREMATURE_CLOSE') record.error = `${err instanceof Error ? err.name : 'Error'}: ${errorMessage(err)}`;
}

/**
 * 403 for a destination regcache does not connect to (with the reason); 502, or 504 on a timeout, for an
 * upstream that could not be reached or did not answer. The cause of a 502 is logged, not sent: its text
 * ("connection refused", an address) would make regcache a port scanner of its network.
 */
export function answerUpstreamFailure(res: ServerResponse, record: RequestRecord, err: unknown): void {
  if (err instanceof BodyTooLargeError) {
    // Upstream answered, with more than regcache holds in memory (a token response): its size is no secret.
    record.error = `upstream: ${err.message}`;
    sendRegistryError(res, 'upstream-too-large', err.message);
    return;
  }
  const failure = upstreamFailure(err);
  if (failure.failure === 'refused') {
    record.cache = 'REJECTED';
    record.error = failure.message;
    sendRegistryError(res, 'denied', `${failure.message} (ALLOW_DESTINATIONS)`);
    return;
  }
  record.countUpstreamFailure(failure.failure);
  record.error = `upstream: ${failure.code ? failure.code + ' ' : ''}${failure.message}`;
  if (failure.failure === 'timeout') sendRegistryError(res, 'upstream-timeout', 'the upstream did not answer in time');
  else sendRegistryError(res, 'upstream-unreachable', 'regcache could not reach the upstream');
}
