// tier: unit
// The private-content decision (src/registry/content-access.ts) in process, over a temp-dir store and a
// scripted upstream, for what the coordinator's access tests (test/fill-coordinator.test.ts) leave out:
// what regcache's own anonymous HEAD concludes from each status, the Accept a manifest is asked with, a
// grant's minute and its bound, checks of one client shared, and an upstream that cannot be asked.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { StoredContent } from '../src/cache/content-store.js';
import type { Entry } from '../src/cache/entry-index.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import { ContentAccess } from '../src/registry/content-access.js';
import { mayServe } from '../src/registry/content-gate.js';
import { createLogger } from '../src/telemetry/log.js';
import type { Upstream, UpstreamClient, UpstreamRequest, UpstreamResponse } from '../src/upstream/upstream-client.js';
import { UpstreamTokens } from '../src/upstream/upstream-tokens.js';
import { TmpDirs } from './harness/tmp.js';
import { checkAccess } from './support/access-check.js';

const log = createLogger('silent', false);
const REF = 'registry.test/lib/app';
const MANIFEST_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
];

/** An upstream whose answers are scripted per request (a status, or a failure), recorded; answers wait for `gate` when set. */
class ScriptedUpstream implements Upstream {
  readonly seen: UpstreamRequest[] = [];
  gate: Promise<void> | null = null;
  constructor(public answer: (request: UpstreamRequest) => number | Error) {}
  async request(request: UpstreamRequest): Promise<UpstreamResponse> {
    this.seen.push(request);
    if (this.gate) await this.gate;
    const answer = this.answer(request);
    if (answer instanceof Error) throw answer;
    return { statusCode: answer, headers: {}, body: Readable.from([]), url: new URL(request.url) };
  }
}

describe('content access (in-process, scripted upstream)', () => {
  const tmp = new TmpDirs();
  let store: LocalStore;
  let n = 0;

  before(async () => {
    store = await LocalStore.open(await tmp.make('regcache-content-access'));
  });
  after(async () => {
    await store.close();
    await tmp.cleanup();
  });

  const stored = async (kind: 'blob' | 'manifest' = 'blob'): Promise<Entry> => {
    const data = Buffer.from(`content ${n++}`);
    const content: StoredContent = {
      kind,
      digest: 'sha256:' + crypto.createHash('sha256').update(data).digest('hex'),
      size: data.length,
      mediaType: 'application/octet-stream',
    };
    await store.putVerified(content, data, { ref: REF, tag: null });
    return store.index.get(kind, content.digest)!;
  };
  const accessWith = (upstream: ScriptedUpstream) => new ContentAccess(store, upstream, new UpstreamTokens(upstream as unknown as UpstreamClient), log);

  it('learns public from 200, private from 401, 403 and 404, and nothing from other answers or a failure', async () => {
    const statuses: (number | Error)[] = [200, 401, 403, 404, 500, 429, new Error('connect ECONNREFUSED')];
    const learned: unknown[] = [];
    for (const status of statuses) {
      const entry = await stored();
      learned.push([await accessWith(new ScriptedUpstream(() => status)).classify(entry), store.index.get('blob', entry.digest)?.access]);
    }
    assert.deepEqual(learned, [
      ['public', 'public'],
      ['private', 'private'],
      ['private', 'private'],
      ['private', 'private'],
      [undefined, undefined],
      [undefined, undefined],
      [undefined, undefined],
    ]);
  });

  it("asks anonymously, at the entry's origin, with a manifest's Accept; public content and a classification in progress are not asked again", async () => {
    const upstream = new ScriptedUpstream(() => 401);
    const access = accessWith(upstream);
    const manifest = await stored('manifest');
    const blob = await stored('blob');
    await Promise.all([access.classify(manifest), access.classify(manifest)]); // one HEAD for both
    await access.classify(blob);
    assert.equal(upstream.seen.length, 2);
    const [m, b] = upstream.seen as [UpstreamRequest, UpstreamRequest];
    assert.deepEqual([m.method, String(m.url), m.headers?.authorization], ['HEAD', `https://registry.test/v2/lib/app/manifests/${manifest.digest}`, undefined]);
    assert.deepEqual(String(m.headers?.accept).split(', '), MANIFEST_TYPES);
    assert.deepEqual([b.method, String(b.url), b.headers?.accept], ['HEAD', `https://registry.test/v2/lib/app/blobs/${blob.digest}`, undefined]);
    // A private answer never undoes public; public content is not asked about at all.
    await accessWith(new ScriptedUpstream(() => 200)).classify(store.index.get('blob', blob.digest)!);
    assert.equal(store.index.get('blob', blob.digest)?.access, 'public');
    const after = new ScriptedUpstream(() => 401);
    assert.equal(await accessWith(after).classify(store.index.get('blob', blob.digest)!), undefined);
    assert.equal(after.seen.length, 0);
    assert.equal(await accessWith(after).classify({ ...blob, refs: [] }), undefined, 'nowhere to ask');
    assert.equal(after.seen.length, 0);
  });

  it("asks a client's check with its credentials and a manifest's Accept; concurrent checks of one client share a HEAD", async () => {
    const upstream = new ScriptedUpstream((r) => (r.headers?.authorization === 'Bearer alice' ? 200 : 401));
    const access = accessWith(upstream);
    const manifest = await stored('manifest');
    await store.index.setAccess('manifest', manifest.digest, 'private');
    const entry = store.index.get('manifest', manifest.digest)!;
    let open!: () => void;
    upstream.gate = new Promise((resolve) => (open = resolve));
    const checks = Array.from({ length: 5 }, () => checkAccess(access, 'manifest', entry.digest, entry, REF, 'Bearer alice'));
    open();
    assert.ok((await Promise.all(checks)).every((d) => d.allowed));
    assert.equal(upstream.seen.length, 1, 'one HEAD for five concurrent checks');
    assert.equal(upstream.seen[0]!.headers?.authorization, 'Bearer alice');
    assert.deepEqual(String(upstream.seen[0]!.headers?.accept).split(', '), MANIFEST_TYPES);
    const anonymous = await checkAccess(access, 'manifest', entry.digest, entry, REF, undefined);
    assert.equal(anonymous.allowed, false);
    assert.equal(upstream.seen[1]!.headers?.authorization, undefined, 'no credentials sent for an anonymous client');
  });

  it('checks the bytes of a fill (no entry yet) with upstream, and asks again about content not yet classified', async () => {
    const upstream = new ScriptedUpstream((r) => (r.method === 'HEAD' && r.headers?.authorization === undefined ? 503 : 401));
    const access = accessWith(upstream);
    const digest = 'sha256:' + 'f'.repeat(64);
    assert.equal((await checkAccess(access, 'blob', digest, undefined, REF, 'Bearer mallory')).allowed, false, "a fill is not anyone's by default");
    const entry = await stored();
    assert.equal(entry.access, undefined);
    await checkAccess(access, 'blob', entry.digest, entry, REF, 'Bearer mallory');
    assert.ok(
      upstream.seen.some((r) => r.headers?.authorization === undefined && String(r.url).endsWith(entry.digest)),
      'the anonymous classification was asked again',
    );
  });

  it('classifies what the store commits, asking the origin that delivered it; a classification that failed is asked again', async () => {
    const upstream = new ScriptedUpstream(() => 503);
    const access = accessWith(upstream);
    access.start();
    const entry = await stored();
    await new Promise((resolve) => setImmediate(resolve)); // the listener's HEAD is sent synchronously; let it settle
    assert.ok(
      upstream.seen.some((r) => String(r.url) === `https://registry.test/v2/lib/app/blobs/${entry.digest}`),
      'asked on commit',
    );
    const before = upstream.seen.length;
    upstream.answer = () => 401;
    assert.equal(await access.classify(store.index.get('blob', entry.digest)!), 'private', 'asked again after the 503');
    assert.equal(upstream.seen.length, before + 1);
  });

  it('remembers a grant for a minute, then asks again', async (t) => {
    let now = 1_900_000_000_000;
    t.mock.method(Date, 'now', () => now);
    const upstream = new ScriptedUpstream(() => 200);
    const access = accessWith(upstream);
    const entry = await stored();
    await store.index.setAccess('blob', entry.digest, 'private');
    const check = () => checkAccess(access, 'blob', entry.digest, store.index.get('blob', entry.digest), REF, 'Bearer alice');
    await check();
    now += 59_000;
    await check();
    assert.equal(upstream.seen.length, 1, 'within the minute');
    now += 2_000;
    await check();
    assert.equal(upstream.seen.length, 2, 'after it');
  });

  it('keeps at most 10,000 grants: beyond, they are forgotten and asked again', async () => {
    const upstream = new ScriptedUpstream(() => 200);
    const access = accessWith(upstream);
    const entry = await stored();
    await store.index.setAccess('blob', entry.digest, 'private');
    const check = (i: number) => checkAccess(access, 'blob', entry.digest, store.index.get('blob', entry.digest), REF, `Bearer client-${i}`);
    for (let i = 0; i < 10_000; i++) await check(i);
    await check(0);
    assert.equal(upstream.seen.length, 10_000, 'all 10,000 remembered');
    await check(10_000); // the 10,001st: the grants are cleared to make room
    await check(0);
    assert.equal(upstream.seen.length, 10_002, 'the first client is asked again');
  });

  it("the gate: a request that names no repository is never served another's private content (elsewhere, nothing asked)", async () => {
    const upstream = new ScriptedUpstream(() => 200);
    const entry = await stored();
    await store.index.setAccess('blob', entry.digest, 'private');
    const verdict = await mayServe(accessWith(upstream), {
      answer: 'digest-hit',
      kind: 'blob',
      digest: entry.digest,
      entry: store.index.get('blob', entry.digest),
      ref: null,
      credentials: 'Bearer alice',
    });
    assert.deepEqual(verdict, { serve: false, elsewhere: true });
    assert.equal(upstream.seen.length, 0, 'no origin to ask');
  });

  it("the gate: a source that just named the digest to this client's own request authorises it, without another HEAD", async () => {
    const upstream = new ScriptedUpstream(() => 401); // asked again, the origin would refuse
    const entry = await stored('manifest');
    await store.index.setAccess('manifest', entry.digest, 'private');
    const asked = { answer: 'tag-revalidated' as const, kind: 'manifest' as const, digest: entry.digest, ref: REF, credentials: 'Bearer alice' };
    const current = store.index.get('manifest', entry.digest);
    assert.deepEqual(await mayServe(accessWith(upstream), { ...asked, entry: current, originNamedIt: true }), { serve: true });
    assert.equal(upstream.seen.length, 0, 'the HEAD the origin answered was the proof');
    assert.equal((await mayServe(accessWith(upstream), { ...asked, entry: current })).serve, false, 'without it, the origin is asked and refuses');
  });

  it('refuses, with the reason, when upstream cannot be asked', async () => {
    const access = accessWith(new ScriptedUpstream(() => new Error('connect ECONNREFUSED 10.0.0.1:443')));
    const entry = await stored();
    await store.index.setAccess('blob', entry.digest, 'private');
    const decision = await checkAccess(access, 'blob', entry.digest, store.index.get('blob', entry.digest), REF, 'Bearer alice');
    assert.deepEqual(decision, {
      allowed: false,
      elsewhere: false,
      reason: 'cannot ask upstream whether this client may read private content: connect ECONNREFUSED 10.0.0.1:443',
    });
  });
});
