// The one decision whether content regcache holds (a stored entry, or a fill of the request's own origin)
// may be served to this request, whatever answers it: HIT, REVALIDATED or STALE, GET, HEAD or Range, from
// the local store, a worker, the bucket, a replica's local tier or a presigned redirect. It only decides;
// content-responder.ts answers. STORE_ANSWERS lists every way the code answers from what it holds; each
// call names one, and test/store-doors.test.ts runs a hostile origin against each.
//
// The rule: public content (a source serves it anonymously) is anyone's. Otherwise it is bound to its
// sources, the origins that delivered bytes that hashed to its digest (Entry.sources; naming a digest in a
// header never makes one): a request for another origin is not served from the store at all, as for a
// MISS. A request for a source needs that origin to authorise this client for the repository it names:
// either the origin just answered this client's own request 200 naming the digest (a tag's revalidation),
// or a HEAD by digest with the client's credentials (content-access.ts, remembered for a minute).
// A referrers list, which no origin serves by its own digest, is asked about as its subject manifest in
// the same repository (askedAs: the same pull scope).
import type { Entry, EntryKind } from '../cache/entry-index.js';
import { parseRepository } from '../reference/repository-reference.js';
import type { AskedContent, ContentAccess } from './content-access.js';

/** Every way regcache answers a request from content it holds (the door test enumerates these). */
export const STORE_ANSWERS = {
  'digest-hit': 'a blob or a manifest by digest from the store: GET, HEAD, Range (HIT)',
  'digest-redirect': 'a stored blob GET answered 307 to a presigned URL of its object in the bucket (S3_REDIRECT)',
  'fill-joined': "a GET joining this origin's running fill of the content (coalesced)",
  'fill-head': 'a HEAD answered from a verified fill of this origin not yet committed',
  'tag-hit': 'a manifest by tag trusted for its tier without asking upstream (ENABLE_MANIFEST_CACHE, HIT)',
  'tag-revalidated': 'a manifest by tag whose digest upstream just confirmed with a HEAD (REVALIDATED)',
  'tag-stale': 'a manifest by tag, last known, while upstream fails (SERVE_STALE, STALE)',
  'referrers-stale': "a subject's referrers list (OCI 1.1 referrers API), last known, while upstream fails (SERVE_STALE, STALE)",
} as const;

export type StoreAnswer = keyof typeof STORE_ANSWERS;

export interface StoreRequest {
  answer: StoreAnswer;
  kind: EntryKind;
  digest: string;
  /** The stored entry; undefined for the bytes of a fill of the request's own origin. */
  entry: Entry | undefined;
  /** "registry/repository" the request names; null when it names none. */
  ref: string | null;
  /** The client's Authorization, if any. */
  credentials: string | undefined;
  /** The request's origin answered this client's own request 200 naming this digest (a tag's HEAD). */
  originNamedIt?: boolean;
  /** What the origin is asked about instead of the content (a referrers list: its subject manifest). */
  askedAs?: AskedContent;
}

export type Verdict =
  | { serve: true }
  | { serve: false; elsewhere: true } // not this request's to have from the store: answer as for a MISS
  | { serve: false; elsewhere: false; reason: string }; // this origin refused this client: answer with its answer

const SERVE: Verdict = { serve: true };
const ELSEWHERE: Verdict = { serve: false, elsewhere: true };

/** Whether the content may be served to this request (decides only). */
export async function mayServe(access: ContentAccess, asked: StoreRequest): Promise<Verdict> {
  const { entry, ref } = asked;
  if (entry?.access === 'public') return SERVE;
  if (ref === null) return ELSEWHERE; // no repository to ask an origin about
  const origin = registryOf(ref);
  // A fill is keyed by the request's origin (cache/fill-coordinator.ts): that origin is delivering it.
  if (entry && !entry.sources.some((source) => registryOf(source) === origin)) return ELSEWHERE;
  if (entry && entry.access === undefined) access.classifyAgain(entry, asked.askedAs && ref, asked.askedAs); // the first try failed (upstream down?)
  // A source that answers this client's own request naming the digest authorises it: it has the bytes.
  if (asked.originNamedIt) return SERVE;
  const about = asked.askedAs ?? asked;
  const grant = await access.authorises(about.kind, about.digest, ref, asked.credentials);
  return grant.granted ? SERVE : { serve: false, elsewhere: false, reason: grant.reason };
}

/** "host[:port]/repository" -> "host[:port]": the origin a reference belongs to (HTTPS: only it is cached). */
export function registryOf(ref: string): string {
  return parseRepository(ref).registry;
}
