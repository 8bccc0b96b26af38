// Private images: what regcache learns from origins about stored content, for the gate
// (content-gate.ts, which holds the rule). After a commit, regcache asks the origin that delivered it as an
// anonymous client (its own token; AUTH_REGISTRIES credentials where configured for a realm on the
// registry's own domain, #133, which makes that host's content shared by design) whether the content is
// public. And whether a client may read private content at an origin that delivered it: a HEAD with the
// client's Authorization for the repository it names, remembered per credential, repository and digest for
// a minute.
import crypto from 'node:crypto';
import type { ContentStore } from '../cache/content-store.js';
import type { Access, Entry, EntryKind } from '../cache/entry-index.js';
import type { Logger } from '../telemetry/log.js';
import { parseRepository } from '../reference/repository-reference.js';
import type { Upstream } from '../upstream/upstream-client.js';
import type { UpstreamTokens } from '../upstream/upstream-tokens.js';
import { errorMessage } from '../telemetry/error-message.js';

const GRANT_MS = 60_000;
const MAX_GRANTS = 10_000;
const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

/** Whether an origin lets a client read content: what the gate (content-gate.ts) weighs. */
export type OriginGrant = { granted: true } | { granted: false; reason: string };

/**
 * What an origin is asked about for stored content: the content itself, or for a referrers list (no origin
 * serves one by its own digest) the subject manifest it lists for, in the same repository: the same pull
 * scope answers for both.
 */
export interface AskedContent {
  kind: EntryKind;
  digest: string;
}

export class ContentAccess {
  private readonly grants = new Map<string, number>(); // sha256(credential, repository, digest) -> expiry
  private readonly classifying = new Set<string>(); // digests being asked about now
  private readonly asking = new Map<string, Promise<OriginGrant>>(); // checks in flight, by grant key

  constructor(
    private readonly store: ContentStore,
    private readonly upstream: Upstream,
    private readonly tokens: UpstreamTokens,
    private readonly log: Logger,
  ) {}

  /** Classifies every committed entry in the background, asking the origin that just delivered it. */
  start(): void {
    this.store.on('committed', (entry: Entry, ref: string | null) => void this.classify(entry, ref ?? entry.sources[0]));
  }

  /**
   * Asks a source of the entry (`ref`: the one that just delivered it) whether it serves it anonymously
   * (`asked`: what to ask about, when the origin does not serve the entry by its own digest).
   */
  async classify(entry: Entry, ref = entry.sources[0], asked: AskedContent = entry): Promise<Access | undefined> {
    const asking = `${entry.digest} ${asked.digest}`;
    if (!ref || entry.access === 'public' || this.classifying.has(asking)) return undefined;
    this.classifying.add(asking);
    try {
      const res = await this.tokens.request({
        url: contentUrl(ref, asked.kind, asked.digest),
        method: 'HEAD',
        headers: asked.kind === 'manifest' ? { accept: MANIFEST_ACCEPT } : {},
      });
      res.body.resume();
      const access: Access | undefined = res.statusCode === 200 ? 'public' : [401, 403, 404].includes(res.statusCode) ? 'private' : undefined;
      // Public at any origin makes it public; private at one origin does not undo that.
      // Read again: another question about the same entry (a referrers list's subject) may have answered meanwhile.
      const known = this.store.index.get(entry.kind, entry.digest)?.access ?? entry.access;
      if (access === 'public' || (access === 'private' && known === undefined)) await this.store.index.setAccess(entry.kind, entry.digest, access);
      this.log.debug({ digest: entry.digest, access: access ?? 'unknown', status: res.statusCode }, 'content access learned');
      return access;
    } catch (err) {
      this.log.debug({ digest: entry.digest, error: errorMessage(err) }, 'could not learn whether content is public');
      return undefined;
    } finally {
      this.classifying.delete(asking);
    }
  }

  /** The first try to learn whether the entry is public failed (upstream down?): ask again, in the background. */
  classifyAgain(entry: Entry, ref?: string, asked?: AskedContent): void {
    void this.classify(entry, ref ?? entry.sources[0], asked ?? entry);
  }

  /**
   * Does the origin of `ref` ("registry/repository") let a client with these credentials (its
   * Authorization, if any) read this content under that repository?
   */
  async authorises(kind: EntryKind, digest: string, ref: string, credentials: string | undefined): Promise<OriginGrant> {
    const credential = credentials ?? '';
    const key = crypto.createHash('sha256').update(`${credential}\n${ref}\n${digest}`).digest('hex');
    const expiry = this.grants.get(key);
    if (expiry !== undefined && expiry > Date.now()) return { granted: true };
    // Concurrent requests of one client for one blob (a herd of pulls) share a single upstream HEAD.
    const inFlight = this.asking.get(key);
    if (inFlight) return inFlight;
    const asked = this.askUpstream(kind, digest, ref, credential, key).finally(() => this.asking.delete(key));
    this.asking.set(key, asked);
    return asked;
  }

  private async askUpstream(kind: EntryKind, digest: string, ref: string, credential: string, key: string): Promise<OriginGrant> {
    const headers: Record<string, string> = kind === 'manifest' ? { accept: MANIFEST_ACCEPT } : {};
    if (credential) headers.authorization = credential;
    let status: number;
    try {
      const res = await this.upstream.request({ url: contentUrl(ref, kind, digest), method: 'HEAD', headers });
      res.body.resume();
      status = res.statusCode;
    } catch (err) {
      return { granted: false, reason: `cannot ask upstream whether this client may read private content: ${errorMessage(err)}` };
    }
    if (status === 200) {
      if (this.grants.size >= MAX_GRANTS) this.grants.clear();
      this.grants.set(key, Date.now() + GRANT_MS);
      return { granted: true };
    }
    return { granted: false, reason: `private content; upstream answered ${status} for this client` };
  }
}

function contentUrl(ref: string, kind: EntryKind, digest: string): URL {
  const { registry, repository } = parseRepository(ref);
  return new URL(`https://${registry}/v2/${repository}/${kind === 'blob' ? 'blobs' : 'manifests'}/${digest}`);
}
