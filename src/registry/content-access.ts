// Private images: stored content is only served to clients upstream would serve it to, and only for the
// origin it came from. After a commit, regcache asks that origin as an anonymous client (its own token;
// AUTH_REGISTRIES credentials where configured, which makes that host's content shared by design) whether
// the content is public. Public content is anyone's (anyone can fetch it from there). Until then it is
// bound to the origins (host and port; only HTTPS is cached) it was fetched from: a request that names
// another origin is not served from the store at all, and one that names the same origin needs its own
// credentials to be good there for the repository it names: a HEAD with the client's Authorization,
// remembered per credential, repository and digest for a minute.
import crypto from 'node:crypto';
import type { ContentStore } from '../cache/content-store.js';
import type { Access, Entry, EntryKind } from '../cache/entry-index.js';
import type { Logger } from '../telemetry/log.js';
import { parseRepository } from '../reference/repository-reference.js';
import type { Upstream } from '../upstream/upstream-client.js';
import type { UpstreamTokens } from '../upstream/upstream-tokens.js';

const GRANT_MS = 60_000;
const MAX_GRANTS = 10_000;
const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

export type AccessDecision =
  | { allowed: true }
  | { allowed: false; elsewhere: true } // private to other origins: not this request's to have from the store
  | { allowed: false; elsewhere: false; reason: string }; // this origin refused this client

export class ContentAccess {
  private readonly grants = new Map<string, number>(); // sha256(credential, repository, digest) -> expiry
  private readonly classifying = new Set<string>(); // digests being asked about now
  private readonly asking = new Map<string, Promise<AccessDecision>>(); // checks in flight, by grant key

  constructor(
    private readonly store: ContentStore,
    private readonly upstream: Upstream,
    private readonly tokens: UpstreamTokens,
    private readonly log: Logger,
  ) {}

  /** Classifies every committed entry in the background, asking the origin that just delivered it. */
  start(): void {
    this.store.on('committed', (entry: Entry, ref: string | null) => void this.classify(entry, ref ?? entry.refs[0]));
  }

  async classify(entry: Entry, ref = entry.refs[0]): Promise<Access | undefined> {
    if (!ref || entry.access === 'public' || this.classifying.has(entry.digest)) return undefined;
    this.classifying.add(entry.digest);
    try {
      const res = await this.tokens.request({
        url: contentUrl(ref, entry.kind, entry.digest),
        method: 'HEAD',
        headers: entry.kind === 'manifest' ? { accept: MANIFEST_ACCEPT } : {},
      });
      res.body.resume();
      const access: Access | undefined = res.statusCode === 200 ? 'public' : [401, 403, 404].includes(res.statusCode) ? 'private' : undefined;
      // Public at any origin makes it public; private at one origin does not undo that.
      if (access === 'public' || (access === 'private' && entry.access === undefined)) await this.store.index.setAccess(entry.kind, entry.digest, access);
      this.log.debug({ digest: entry.digest, access: access ?? 'unknown', status: res.statusCode }, 'content access learned');
      return access;
    } catch (err) {
      this.log.debug({ digest: entry.digest, error: (err as Error).message }, 'could not learn whether content is public');
      return undefined;
    } finally {
      this.classifying.delete(entry.digest);
    }
  }

  /**
   * May a client with these credentials (its Authorization, if any) have this content under the
   * repository it names ("registry/repository")? `entry` is the stored entry, or undefined for the bytes
   * of a fill from the request's own origin.
   */
  async check(kind: EntryKind, digest: string, entry: Entry | undefined, ref: string, credentials: string | undefined): Promise<AccessDecision> {
    if (entry?.access === 'public') return { allowed: true };
    if (entry && !entry.refs.some((r) => registryOf(r) === registryOf(ref))) return { allowed: false, elsewhere: true };
    if (entry && entry.access === undefined) void this.classify(entry); // the first try failed (upstream down?): ask again
    const credential = credentials ?? '';
    const key = crypto.createHash('sha256').update(`${credential}\n${ref}\n${digest}`).digest('hex');
    const expiry = this.grants.get(key);
    if (expiry !== undefined && expiry > Date.now()) return { allowed: true };
    // Concurrent requests of one client for one blob (a herd of pulls) share a single upstream HEAD.
    const inFlight = this.asking.get(key);
    if (inFlight) return inFlight;
    const asked = this.askUpstream(kind, digest, ref, credential, key).finally(() => this.asking.delete(key));
    this.asking.set(key, asked);
    return asked;
  }

  private async askUpstream(kind: EntryKind, digest: string, ref: string, credential: string, key: string): Promise<AccessDecision> {
    const headers: Record<string, string> = kind === 'manifest' ? { accept: MANIFEST_ACCEPT } : {};
    if (credential) headers.authorization = credential;
    let status: number;
    try {
      const res = await this.upstream.request({ url: contentUrl(ref, kind, digest), method: 'HEAD', headers });
      res.body.resume();
      status = res.statusCode;
    } catch (err) {
      return { allowed: false, elsewhere: false, reason: `cannot ask upstream whether this client may read private content: ${(err as Error).message}` };
    }
    if (status === 200) {
      if (this.grants.size >= MAX_GRANTS) this.grants.clear();
      this.grants.set(key, Date.now() + GRANT_MS);
      return { allowed: true };
    }
    return { allowed: false, elsewhere: false, reason: `private content; upstream answered ${status} for this client` };
  }
}

/** "host[:port]/repository" -> "host[:port]": the origin a reference belongs to (HTTPS: only it is cached). */
function registryOf(ref: string): string {
  return parseRepository(ref).registry;
}

function contentUrl(ref: string, kind: EntryKind, digest: string): URL {
  const { registry, repository } = parseRepository(ref);
  return new URL(`https://${registry}/v2/${repository}/${kind === 'blob' ? 'blobs' : 'manifests'}/${digest}`);
}
