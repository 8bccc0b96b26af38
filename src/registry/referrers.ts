// The OCI 1.1 referrers API (GET /v2/<name>/referrers/<digest>[?artifactType=<type>]): the signatures,
// attestations and SBOMs that name a manifest as their subject, listed as an image index. A list grows as
// artifacts are pushed, so every request goes upstream with the client's headers and upstream's answer is
// relayed; a 200 within MANIFEST_MAX_SIZE is also stored as a manifest under its digest, named by a
// pointer per registry, repository, subject and filter. When upstream fails (unreachable, 5xx, 429) the
// last list is served STALE through the gate (content-gate.ts), as a tag's manifest is: a list not known
// public only to a client whose credentials the origin accepts for the subject manifest in that repository
// (the same pull scope). Anything else upstream says is relayed as it is: a 404 means no referrers API,
// and clients then read the `sha256-<hex>` fallback tag, a manifest by tag like any other.
import crypto from 'node:crypto';
import type { Provenance } from '../cache/content-store.js';
import { formatRepository, type RepositoryReference } from '../reference/repository-reference.js';
import { headerValue } from '../upstream/header-filter.js';
import { discardBody, type UpstreamResponse } from '../upstream/upstream-client.js';
import type { ContentTarget } from './content-responder.js';
import { answerUpstreamFailure, forwardGet, relayResponse } from './pass-through.js';
import type { RegistryRequest } from './registry-request.js';
import { errorMessage } from '../telemetry/error-message.js';
import type { TagManifestDeps } from './tag-manifest.js';

const IMAGE_INDEX = 'application/vnd.oci.image.index.v1+json';

export interface ReferrersQuery extends RepositoryReference {
  subject: string; // sha256 digest of the manifest the artifacts refer to
  artifactType: string | null; // the filter asked for, if any
}

/** "registry/repository@subject|referrers;artifactType=<type or empty>": holds no ':tag', so it tags no manifest. */
export function referrersPointerKey(ref: string, subject: string, artifactType: string | null): string {
  return `${ref}@${subject}|referrers;artifactType=${artifactType ?? ''}`;
}

export async function serveReferrers(deps: TagManifestDeps, request: RegistryRequest, query: ReferrersQuery): Promise<void> {
  const { content, policy } = deps;
  const { res, record } = request;
  const store = deps.coordinator.store;
  const ref = formatRepository(query);
  const from: Provenance = { ref, tag: null };
  const unfiltered = referrersPointerKey(ref, query.subject, null);
  const filtered = query.artifactType === null ? null : referrersPointerKey(ref, query.subject, query.artifactType);
  record.digest = query.subject;
  const list = (digest: string): ContentTarget => ({ kind: 'manifest', digest, from, askedAs: { kind: 'manifest', digest: query.subject } });

  // A filtered list upstream filtered, else the whole list without OCI-Filters-Applied: the client filters (as the spec lets it).
  const serveStale = async (why: string): Promise<boolean> => {
    if (!policy.serveStale) return false;
    for (const key of filtered === null ? [unfiltered] : [filtered, unfiltered]) {
      const pointer = await store.lookupPointer(key);
      if (!pointer || !(await store.lookup('manifest', pointer.digest))) continue;
      record.reason = `upstream failed (${why}); last known referrers list served`;
      res.setHeader('warning', '110 regcache "Response is Stale"');
      if (key === filtered) res.setHeader('oci-filters-applied', 'artifactType');
      if (await content.serveStored(request, list(pointer.digest), 'referrers-stale')) return true;
      res.removeHeader('warning');
      res.removeHeader('oci-filters-applied');
      return false;
    }
    return false;
  };

  let response: UpstreamResponse;
  try {
    response = await forwardGet(deps.upstream, request); // redirects go back to the client
  } catch (err) {
    if (await serveStale(errorMessage(err))) return;
    answerUpstreamFailure(res, record, err);
    return;
  }
  if (response.statusCode >= 500 || response.statusCode === 429) {
    if (await serveStale(`status ${response.statusCode}`)) {
      record.noteUpstream(response.headers);
      discardBody(response.body);
      return;
    }
  }
  record.cache = 'MISS';
  const why = uncacheable(response, policy.manifestMaxBytes);
  if (why !== null) {
    if (response.statusCode === 200) {
      record.cache = 'BYPASS';
      record.reason = why;
    }
    await relayResponse(response, res, record);
    return;
  }
  const applied = (headerValue(response.headers['oci-filters-applied']) ?? '').split(',').some((f) => f.trim() === 'artifactType');
  const key = filtered !== null && applied ? filtered : unfiltered;
  await relayResponse(response, res, record, (r) => storeList(deps, r, from, key, query.subject));
}

/** Why a referrers answer is relayed without being stored; null when it is stored. */
function uncacheable(response: UpstreamResponse, max: number): string | null {
  if (response.statusCode !== 200) return 'not a 200';
  const mediaType = headerValue(response.headers['content-type'])?.split(';', 1)[0]!.trim().toLowerCase();
  if (mediaType !== IMAGE_INDEX) return `referrers answered as ${mediaType ?? 'no media type'}, not an image index; not cached`;
  if (headerValue(response.headers.link) !== undefined) return 'a paged referrers list (Link); not cached';
  const length = headerValue(response.headers['content-length']);
  if (length !== undefined && Number(length) > max) return `larger than MANIFEST_MAX_SIZE: upstream announced ${length} bytes, the bound is ${max}; not cached`;
  return null;
}

/** Collects the list as it streams to the client; stores it (within MANIFEST_MAX_SIZE) and points the key at it. */
function storeList(deps: TagManifestDeps, response: UpstreamResponse, from: Provenance, key: string, subject: string): void {
  const chunks: Buffer[] = [];
  let size = 0;
  const max = deps.policy.manifestMaxBytes;
  response.body.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size <= max) chunks.push(chunk);
    else chunks.length = 0; // past the bound with no Content-Length: relayed whole, not stored
  });
  response.body.once('end', () => {
    if (size > max) return;
    const body = Buffer.concat(chunks);
    const digest = 'sha256:' + crypto.createHash('sha256').update(body).digest('hex');
    const store = deps.coordinator.store;
    deps.coordinator
      .storeVerified({ kind: 'manifest', digest, size: body.length, mediaType: IMAGE_INDEX }, body, from)
      .then(() => store.index.setPointer(key, digest))
      // Public or not is asked about the subject: no origin serves a referrers list by its own digest.
      .then(() => deps.content.learnAccess('manifest', digest, from.ref!, { kind: 'manifest', digest: subject }))
      .catch((err: Error) => deps.log.warn({ digest, error: err.message }, 'storing referrers list failed'));
  });
}
