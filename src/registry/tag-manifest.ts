// Manifests by tag: tags move, so each request is revalidated upstream with a HEAD carrying the client's
// Accept and Authorization (Docker Hub does not count HEADs against the pull limit). If the digest is
// one we hold, it is served from the store (REVALIDATED); otherwise the GET goes upstream and its body is
// stored under its verified digest (MISS). What a tag pointed at is remembered per Accept set, so a client
// never gets a media type it did not ask for; with ENABLE_MANIFEST_CACHE a tag is trusted for its tier's
// time without asking (HIT), and when upstream fails the last known manifest is served (STALE).
import crypto from 'node:crypto';
import type { RequestRecord } from '../telemetry/access-log.js';
import type { ContentIndex, Provenance } from '../cache/content-store.js';
import type { FillCoordinator } from '../cache/fill-coordinator.js';
import type { ManifestCacheTier } from '../config/config.js';
import type { Logger } from '../telemetry/log.js';
import { isSha256Digest } from '../reference/digest.js';
import { formatRepository, formatTag, type TagReference } from '../reference/repository-reference.js';
import { contentRequestHeaders, headerValue } from '../upstream/header-filter.js';
import { discardBody, type Upstream, type UpstreamResponse } from '../upstream/upstream-client.js';
import type { ContentResponder } from './content-responder.js';
import { answerUpstreamFailure, forwardGet, relayResponse } from './pass-through.js';
import { sendRegistryError } from './registry-errors.js';
import type { RegistryRequest } from './registry-request.js';
import { errorMessage } from '../telemetry/error-message.js';

export interface TagPolicy {
  serveStale: boolean;
  manifestCache: ManifestCacheTier[] | null;
  /** MANIFEST_MAX_SIZE: a larger manifest is refused (502), or cut when upstream did not say its length. */
  manifestMaxBytes: number;
}

export interface TagManifestDeps {
  upstream: Upstream;
  coordinator: FillCoordinator;
  content: ContentResponder;
  log: Logger;
  policy: TagPolicy;
}

export async function serveTagManifest(deps: TagManifestDeps, request: RegistryRequest, tagged: TagReference): Promise<void> {
  const { content, policy } = deps;
  const { res, record } = request;
  const store = deps.coordinator.store;
  const index = store.index;
  const from: Provenance = { ref: formatRepository(tagged), tag: formatTag(tagged) };
  const pointerKey = `${from.tag}|${normaliseAccept(request.headers.accept)}`;
  // From the store, not only this process's index: a fleet replica reads what another one resolved.
  const pointer = await store.lookupPointer(pointerKey);
  const known = pointer && (await store.lookup('manifest', pointer.digest)) ? pointer : undefined;
  const manifest = (digest: string) => ({ kind: 'manifest' as const, digest, from });

  const ttl = policy.manifestCache?.find((tier) => tier.pattern.test(tagged.tag))?.ttlMs;
  if (known && ttl !== undefined && Date.now() - known.checkedAt < ttl) {
    if (await content.serveStored(request, manifest(known.digest), 'tag-hit')) return;
  }

  const serveStale = async (why: string): Promise<boolean> => {
    const digest = known?.digest ?? (policy.serveStale ? acceptedStoredManifest(index, from.tag!, request.headers.accept) : undefined);
    if (!policy.serveStale || !digest) return false;
    record.reason = `upstream failed (${why}); last known manifest served`;
    res.setHeader('warning', '110 regcache "Response is Stale"');
    return content.serveStored(request, manifest(digest), 'tag-stale');
  };

  let head: UpstreamResponse;
  try {
    head = await deps.upstream.request({ url: request.upstreamUrl, method: 'HEAD', headers: contentRequestHeaders(request.headers) });
  } catch (err) {
    if (await serveStale(errorMessage(err))) return;
    answerUpstreamFailure(res, record, err);
    return;
  }
  head.body.resume();
  record.noteUpstream(head.headers);
  if (head.statusCode >= 500 || head.statusCode === 429) {
    if (await serveStale(`status ${head.statusCode}`)) return;
  }
  const claimed = head.statusCode === 200 ? headerValue(head.headers['docker-content-digest']) : undefined;
  const digest = claimed && isSha256Digest(claimed) ? claimed : undefined;
  // Remembered even before the manifest is stored: dockerd and containerd resolve a tag with this HEAD and
  // then GET the manifest by digest, which is never tagged itself. The index tags it when it arrives.
  if (digest) void index.setPointer(pointerKey, digest).catch(() => undefined);
  // Served when the store has it, whichever process or replica stored it (a fleet replica asks the bucket):
  // a tag another replica pulled costs this one a HEAD upstream, never a GET. Only when the gate agrees: a
  // digest an origin names is no proof that it has the bytes (issue 20).
  if (digest) {
    if (await content.serveStored(request, manifest(digest), 'tag-revalidated', true)) return;
  }
  record.cache = 'MISS';
  if (request.method === 'HEAD') {
    await relayResponse(head, res, record); // a HEAD stays a HEAD: upstream's answer is the answer
    return;
  }
  let response: UpstreamResponse;
  try {
    response = await forwardGet(deps.upstream, request); // redirects go back to the client
  } catch (err) {
    answerUpstreamFailure(res, record, err);
    return;
  }
  const length = headerValue(response.headers['content-length']);
  const max = policy.manifestMaxBytes;
  if (response.statusCode === 200 && length !== undefined && Number(length) > max) {
    discardBody(response.body);
    record.noteUpstream(response.headers);
    record.cache = 'BYPASS';
    record.reason = `larger than MANIFEST_MAX_SIZE: upstream announced ${length} bytes, the bound is ${max}`;
    sendRegistryError(res, 'upstream-too-large', `the upstream manifest is larger than MANIFEST_MAX_SIZE (regcache's bound)`);
    return;
  }
  await relayResponse(response, res, record, (r) => storeBody(deps, r, record, from, pointerKey));
}

/** Collects the body of a 200 as it streams to the client, and stores it under its verified digest. */
function storeBody(deps: TagManifestDeps, response: UpstreamResponse, record: RequestRecord, from: Provenance, pointerKey: string): void {
  if (response.statusCode !== 200) return;
  const chunks: Buffer[] = [];
  let size = 0;
  const max = deps.policy.manifestMaxBytes;
  response.body.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= max) chunks.push(chunk);
    else if (!response.body.destroyed) {
      // No Content-Length, and past the bound: the client is cut (no client takes such a manifest), nothing held.
      chunks.length = 0;
      record.cache = 'BYPASS';
      record.reason = `larger than MANIFEST_MAX_SIZE: past ${max} bytes with no Content-Length; cut`;
      response.body.destroy(new Error(`upstream manifest larger than MANIFEST_MAX_SIZE (${max} bytes)`));
    }
  });
  response.body.once('end', () => {
    if (size > max) return;
    const body = Buffer.concat(chunks);
    const digest = 'sha256:' + crypto.createHash('sha256').update(body).digest('hex');
    const claimed = headerValue(response.headers['docker-content-digest']);
    if (claimed?.startsWith('sha256:') && claimed !== digest) {
      deps.log.warn({ path: record.path, claimed, digest }, 'upstream manifest does not match its Docker-Content-Digest; not stored');
      return;
    }
    record.digest = digest;
    const mediaType = headerValue(response.headers['content-type']) ?? 'application/octet-stream';
    deps.coordinator
      .storeVerified({ kind: 'manifest', digest, size: body.length, mediaType }, body, from)
      .then(() => deps.coordinator.store.index.setPointer(pointerKey, digest))
      .catch((err: Error) => deps.log.warn({ digest, error: err.message }, 'storing manifest failed'));
  });
}

/**
 * With upstream down and nothing stored for this client's Accept set: the most recently confirmed stored
 * manifest of the tag, resolved for any client, whose media type this client accepts; else the stored
 * manifest the tag was last on (its pointers may already name a newer one that never arrived).
 */
function acceptedStoredManifest(index: ContentIndex, tag: string, accept: string | string[] | undefined): string | undefined {
  const accepted = normaliseAccept(accept).split(',').filter(Boolean);
  const acceptable = (digest: string) => {
    const mediaType = index.get('manifest', digest)?.mediaType;
    return (
      mediaType !== undefined && (accepted.length === 0 || accepted.includes('*/*') || accepted.includes(mediaType.split(';', 1)[0]!.trim().toLowerCase()))
    );
  };
  const confirmed = index
    .pointersOf(tag)
    .sort((a, b) => b.checkedAt - a.checkedAt)
    .map((p) => p.digest);
  return [...confirmed, index.taggedManifest(tag)?.digest].find((digest) => digest !== undefined && acceptable(digest));
}

/** The Accept set as a key: media types without parameters, lower-case, sorted, deduplicated. */
export function normaliseAccept(accept: string | string[] | undefined): string {
  const joined = Array.isArray(accept) ? accept.join(',') : (accept ?? '');
  const types = joined
    .split(',')
    .map((t) => t.split(';', 1)[0]!.trim().toLowerCase())
    .filter(Boolean);
  return [...new Set(types)].sort().join(',');
}
