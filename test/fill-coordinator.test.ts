// tier: unit
// The cache core in process, as distribution's proxyblobstore_test.go tests its proxy blob store: a real
// LocalStore in a temp dir, the FillCoordinator shared by every door, a fake upstream fetch that counts
// its calls. Coalescing (one fetch for concurrent requests of one origin, none shared across origins), a
// failed fill letting its waiters retry, eviction sparing content being filled or read, and the access
// decisions (public, elsewhere, refused) made against a fake upstream.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import type { StoredContent } from '../src/cache/content-store.js';
import type { Entry } from '../src/cache/entry-index.js';
import type { Backend } from '../src/cache/backend.js';
import { FillCoordinator, type Fetched, type FillKey } from '../src/cache/fill-coordinator.js';
import { FillReader } from '../src/cache/fill-reader.js';
import type { Fill } from '../src/cache/fill.js';
import { DiskEvictor } from '../src/cache/local/disk-eviction.js';
import { openLocalBackend } from '../src/cache/local/local-backend.js';
import { LocalStore } from '../src/cache/local/local-store.js';
import { LocalFillTable } from '../src/cache/fill-table.js';
import { Room } from '../src/cache/room.js';
import { TrustedFiles } from '../src/cache/trusted-files.js';
import { createLogger } from '../src/telemetry/log.js';
import { ContentAccess } from '../src/registry/content-access.js';
import { mayServe, type StoreRequest } from '../src/registry/content-gate.js';
import type { Upstream, UpstreamRequest, UpstreamResponse } from '../src/upstream/upstream-client.js';
import type { UpstreamTokens } from '../src/upstream/upstream-tokens.js';
import { waitFor } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeFetches } from './support/fake-fetches.js';
import { Sink } from './support/sink.js';

const log = createLogger('silent', false);
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const FROM = { ref: 'registry.test/lib/app', tag: null };
const OTHER = { ref: 'registry.test/lib/other', tag: null };
const admitAll = () => Promise.resolve(true);

async function drain(fill: Fill): Promise<Buffer> {
  const sink = new Sink();
  await new FillReader(fill, 0, null).sendTo(sink, () => undefined);
  return sink.data;
}

const settled = (fill: Fill): Promise<unknown> => (fill.settled ? Promise.resolve() : once(fill, 'settled'));

describe('fill coordinator (in-process, temp-dir store, fake upstream)', () => {
  const tmp = new TmpDirs();
  let backend: Backend<LocalStore>;
  let store: LocalStore;
  let coordinator: FillCoordinator;

  before(async () => {
    const cacheDir = await tmp.make('regcache-coordinator');
    backend = await openLocalBackend({ cacheDir, cacheMaxSize: 1024 * 1024 * 1024, cacheInactiveMs: 86_400_000 }, log);
    store = backend.store;
    coordinator = new FillCoordinator(backend, log);
  });
  after(async () => {
    await backend.close();
    await tmp.cleanup();
  });

  it('makes one upstream fetch for concurrent requests of one origin, and every request gets the bytes; each is listed under its repository', async () => {
    const data = crypto.randomBytes(3 * 1024 * 1024 + 17);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const upstream = new FakeFetches();
    const events: string[] = [];
    coordinator.on('fill-started', () => events.push('started')).on('fill-joined', () => events.push('joined'));
    // The first request leads; the others join it from another repository of the same origin.
    const outcomes = await Promise.all(Array.from({ length: 5 }, (_, i) => coordinator.fill(key, i === 0 ? FROM : OTHER, upstream.ok(data.length), admitAll)));
    assert.equal(outcomes[0]!.kind, 'started');
    assert.equal(upstream.calls, 1, 'one upstream GET');
    assert.deepEqual(outcomes.map((o) => o.kind).sort(), ['joined', 'joined', 'joined', 'joined', 'started']);
    assert.deepEqual(events.sort(), ['joined', 'joined', 'joined', 'joined', 'started']);
    const fills = outcomes.map((o) => (o.kind === 'started' || o.kind === 'joined' ? o.fill : null));
    assert.ok(
      fills.every((f) => f === fills[0]),
      'one fill shared',
    );
    const reads = fills.map((f) => drain(f!));
    upstream.bodies[0]!.end(data);
    for (const got of await Promise.all(reads)) assert.ok(got.equals(data));
    await settled(fills[0]!);
    assert.equal(fills[0]!.state, 'committed');
    await waitFor(async () => (store.index.get('blob', key.digest)?.refs.length ?? 0) >= 2, { timeoutMs: 5000, what: 'both repositories noted' });
    assert.deepEqual(store.index.get('blob', key.digest)?.refs.sort(), [FROM.ref, OTHER.ref], "the joiners' repository too, not only the leader's");
    assert.deepEqual(store.index.get('blob', key.digest)?.sources, [FROM.ref], 'only the leader delivered bytes');
    const body = await coordinator.read(key, FROM, { redirect: false }, () => Promise.resolve(true));
    assert.equal(body?.size, data.length, 'stored afterwards');
    await body?.close();
    assert.equal(coordinator.fillsInFlight, 0);
  });

  it('trusts what its own fill committed (VERIFY_ON_READ=once, decision #116), nothing of a fill that failed', async () => {
    const trusted = new TrustedFiles();
    const trusting = new FillCoordinator(backend, log, { trusted });
    const fillOf = async (digest: string, bytes: Buffer): Promise<Fill> => {
      const upstream = new FakeFetches();
      const outcome = await trusting.fill({ origin: 'registry.test', kind: 'blob', digest }, FROM, upstream.ok(bytes.length), admitAll);
      assert.equal(outcome.kind, 'started');
      const fill = (outcome as { fill: Fill }).fill;
      const reading = drain(fill).catch(() => null);
      upstream.bodies[0]!.end(bytes);
      await reading;
      await settled(fill);
      return fill;
    };
    const data = crypto.randomBytes(300_000);
    const digest = digestOf(data);
    assert.equal((await fillOf(digest, data)).state, 'committed');
    const file = (await store.open({ kind: 'blob', digest, size: data.length, mediaType: 'application/octet-stream' }))!;
    await file.close();
    assert.ok(trusted.trusts(digest, file.identity), 'its first read is not hashed again');

    const wrong = digestOf(Buffer.from('something else'));
    assert.equal((await fillOf(wrong, data)).state, 'failed', 'the bytes do not hash to the digest asked for');
    assert.equal(trusted.trusts(wrong, file.identity), false);
  });

  it('never lets a request join a fill of another origin', async () => {
    const data = crypto.randomBytes(64 * 1024);
    const digest = digestOf(data);
    const upstream = new FakeFetches();
    const [a, b] = await Promise.all([
      coordinator.fill({ origin: 'registry.test', kind: 'blob', digest }, FROM, upstream.ok(data.length), admitAll),
      coordinator.fill(
        { origin: 'registry.test:8443', kind: 'blob', digest },
        { ref: 'registry.test:8443/lib/app', tag: null },
        upstream.ok(data.length),
        admitAll,
      ),
    ]);
    assert.equal(upstream.calls, 2, 'each origin fetches its own bytes');
    assert.equal(a.kind, 'started');
    assert.equal(b.kind, 'started');
    for (const body of upstream.bodies) body.end(data);
    await Promise.all([a, b].map((o) => (o.kind === 'started' ? Promise.all([drain(o.fill), settled(o.fill)]) : null)));
    const entry = store.index.get('blob', digest)!;
    assert.deepEqual([...entry.refs].sort(), ['registry.test/lib/app', 'registry.test:8443/lib/app'], 'one entry that learned both origins');
  });

  it('turns a request away from a running fill when admit says no, without a fetch of its own', async () => {
    const data = crypto.randomBytes(32 * 1024);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const upstream = new FakeFetches();
    const [leader, refused] = await Promise.all([
      coordinator.fill(key, FROM, upstream.ok(data.length), admitAll),
      coordinator.fill(key, FROM, upstream.ok(data.length), () => Promise.resolve(false)),
    ]);
    assert.equal(leader.kind, 'started');
    assert.equal(refused.kind, 'refused');
    assert.equal(upstream.calls, 1);
    upstream.bodies[0]!.end(data);
    if (leader.kind === 'started') await Promise.all([drain(leader.fill), settled(leader.fill)]);
  });

  it('lets waiters retry on their own when the leader gets nothing to fill, or its fetch fails', async () => {
    const data = crypto.randomBytes(16 * 1024);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const upstream = new FakeFetches();
    const [declined, waiter] = await Promise.all([
      coordinator.fill(key, FROM, upstream.declined(), admitAll),
      coordinator.fill(key, FROM, upstream.ok(data.length), admitAll),
    ]);
    assert.equal(declined.kind, 'declined');
    assert.equal(waiter.kind, 'ended', 'the waiter is told the fill ended without content');
    assert.equal(upstream.calls, 1);

    // A fetch that throws (upstream unreachable) rejects its own request; the waiter is told 'ended' too.
    const failing = async (): Promise<Fetched<string>> => {
      upstream.calls++;
      await new Promise((resolve) => setImmediate(resolve));
      throw new Error('connect ECONNREFUSED');
    };
    const [thrown, waiter2] = await Promise.allSettled([
      coordinator.fill(key, FROM, failing, admitAll),
      coordinator.fill(key, FROM, upstream.ok(data.length), admitAll),
    ]);
    assert.equal(thrown.status, 'rejected');
    assert.equal(waiter2.status === 'fulfilled' && waiter2.value.kind, 'ended');
    // The retry (not joining) fetches again and fills.
    const retry = await coordinator.fill(key, FROM, upstream.ok(data.length), null);
    assert.equal(retry.kind, 'started');
    assert.equal(upstream.calls, 3);
    upstream.bodies.at(-1)!.end(data);
    if (retry.kind === 'started') assert.ok((await drain(retry.fill)).equals(data));
  });

  it('cuts the readers of a fill whose bytes do not match, and lets no one join it afterwards', async () => {
    const data = crypto.randomBytes(200 * 1024);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const upstream = new FakeFetches();
    const [leader, joined] = await Promise.all([
      coordinator.fill(key, FROM, upstream.ok(data.length), admitAll),
      coordinator.fill(key, FROM, upstream.ok(data.length), admitAll),
    ]);
    assert.equal(joined.kind, 'joined');
    const bad = Buffer.from(data);
    bad[1000] = bad[1000]! ^ 0xff;
    const reads = [leader, joined].map((o) => (o.kind === 'started' || o.kind === 'joined' ? drain(o.fill) : Promise.reject(new Error(o.kind))));
    upstream.bodies[0]!.end(bad);
    // Both at once: awaiting one while the other rejects would leave that rejection unhandled for a while.
    await Promise.all(reads.map((read) => assert.rejects(read, /hash to/)));
    assert.equal(await store.lookup('blob', key.digest), null, 'nothing stored');
    // The failed fill cannot be joined; the request looks in the store and then fetches on its own.
    assert.equal((await coordinator.fill(key, FROM, upstream.ok(data.length), admitAll)).kind, 'ended');
    const again = await coordinator.fill(key, FROM, upstream.ok(data.length), null);
    assert.equal(again.kind, 'started', 'a new fill, not the failed one');
    upstream.bodies.at(-1)!.end(data);
    if (again.kind === 'started') assert.ok((await drain(again.fill)).equals(data));
  });

  it('reads stored content in one call: one lookup, the gate asked with the entry before anything is opened, a refusal noted nowhere', async () => {
    const data = crypto.randomBytes(100_000);
    const digest = digestOf(data);
    await store.putVerified({ kind: 'blob', digest, size: data.length, mediaType: 'application/x-test' }, data, FROM);
    const opened: string[] = [];
    const open = store.open.bind(store);
    store.open = (content: StoredContent) => (opened.push(content.digest), open(content));
    try {
      const asked: [Entry, boolean][] = [];
      const refused = await coordinator.read({ kind: 'blob', digest }, FROM, { redirect: true }, (entry, redirect) => {
        asked.push([entry, redirect]);
        return Promise.resolve(false);
      });
      assert.equal(refused, null);
      assert.equal(asked.length, 1, 'the gate is asked once');
      assert.equal(asked[0]![0].digest, digest, 'with the entry (its sources and access)');
      assert.equal(asked[0]![1], false, 'a directory never redirects');
      assert.deepEqual(opened, [], 'nothing opened for a refused request');
      const lastAccess = store.index.get('blob', digest)!.lastAccess;
      const body = await coordinator.read({ kind: 'blob', digest }, { ref: 'registry.test/other/app', tag: null }, { redirect: false }, admitAll);
      assert.ok(body && body.location === null);
      assert.deepEqual(opened, [digest]);
      assert.ok(store.index.get('blob', digest)!.refs.includes('registry.test/other/app'), 'the read is noted under its repository');
      assert.ok(store.index.get('blob', digest)!.lastAccess >= lastAccess);
      const sink = new Sink();
      await body.sendTo(sink, { start: 10, end: 99 }, () => undefined);
      assert.ok(sink.data.equals(data.subarray(10, 100)), 'the span, verified against the whole file');
    } finally {
      store.open = open;
    }
  });

  it('never evicts content being filled, and a read in progress outlives the eviction of its entry', async () => {
    // Room for the 1 MiB fill, not for the 2 MiB stored beside it: enforcing the bound evicts every entry.
    const tight = new DiskEvictor(store, { maxBytes: 1.5 * 1024 * 1024, inactiveMs: 86_400_000 }, log);
    const tightCoordinator = new FillCoordinator({ store, room: new Room(store, 1.5 * 1024 * 1024, tight), fills: new LocalFillTable() }, log);
    // Stored content, opened for a read before it is evicted.
    const storedData = crypto.randomBytes(2 * 1024 * 1024);
    const storedDigest = digestOf(storedData);
    await store.putVerified({ kind: 'blob', digest: storedDigest, size: storedData.length, mediaType: 'application/octet-stream' }, storedData, FROM);
    const body = await tightCoordinator.read({ kind: 'blob', digest: storedDigest }, FROM, { redirect: false }, () => Promise.resolve(true));
    assert.ok(body);
    const sink = new Sink();
    const read = body.sendTo(sink, { start: 0, end: null }, () => undefined).then(() => sink.data);
    // A fill running meanwhile: not in the index, so no eviction can take it.
    const data = crypto.randomBytes(1024 * 1024);
    const key: FillKey = { origin: 'registry.test', kind: 'blob', digest: digestOf(data) };
    const upstream = new FakeFetches();
    const outcome = await tightCoordinator.fill(key, FROM, upstream.ok(data.length), admitAll);
    assert.equal(outcome.kind, 'started');
    upstream.bodies[0]!.write(data.subarray(0, 512 * 1024));
    await tight.enforce(); // evicts everything the index holds: the stored blob, not the fill
    assert.equal(store.index.get('blob', storedDigest), undefined, 'the stored blob was evicted');
    assert.ok((await read).equals(storedData), 'the read that had it open got every byte, verified');
    upstream.bodies[0]!.end(data.subarray(512 * 1024));
    if (outcome.kind === 'started') {
      assert.ok((await drain(outcome.fill)).equals(data));
      await settled(outcome.fill);
      assert.equal(outcome.fill.state, 'committed', 'the fill committed whatever the eviction did');
    }
    await tight.stop();
  });
});

/** An upstream that answers HEADs with a fixed status per Authorization, and records them. */
class FakeUpstream implements Upstream {
  readonly seen: UpstreamRequest[] = [];
  constructor(private readonly status: (authorization: string | undefined) => number) {}

  request(request: UpstreamRequest): Promise<UpstreamResponse> {
    this.seen.push(request);
    return Promise.resolve({ statusCode: this.status(request.headers?.authorization), headers: {}, body: Readable.from([]), url: request.url });
  }
}

describe('access decisions (in-process, fake upstream)', () => {
  const tmp = new TmpDirs();
  let store: LocalStore;

  before(async () => {
    store = await LocalStore.open(await tmp.make('regcache-access'));
  });
  after(async () => {
    await store.close();
    await tmp.cleanup();
  });

  const stored = async (seed: string, ref: string, access?: 'public' | 'private'): Promise<Entry> => {
    const data = Buffer.from(seed);
    const content: StoredContent = { kind: 'blob', digest: digestOf(data), size: data.length, mediaType: 'application/octet-stream' };
    await store.putVerified(content, data, { ref, tag: null });
    if (access) await store.index.setAccess('blob', content.digest, access);
    return store.index.get('blob', content.digest)!;
  };
  const accessWith = (upstream: FakeUpstream) => new ContentAccess(store, upstream, {} as UpstreamTokens, log);
  const ask = (entry: Entry, ref: string, credentials: string | undefined, more: Partial<StoreRequest> = {}): StoreRequest => ({
    answer: 'digest-hit',
    kind: 'blob',
    digest: entry.digest,
    entry,
    ref,
    credentials,
    ...more,
  });

  it('serves public content to anyone, at any origin, without asking upstream', async () => {
    const entry = await stored('public', 'registry.test/lib/app', 'public');
    const upstream = new FakeUpstream(() => 401);
    assert.deepEqual(await mayServe(accessWith(upstream), ask(entry, 'elsewhere.test/other/repo', undefined)), { serve: true });
    assert.equal(upstream.seen.length, 0);
  });

  it('sends a request for private content at another origin elsewhere (upstream, as a MISS), without asking', async () => {
    const entry = await stored('private elsewhere', 'registry.test/lib/app', 'private');
    const upstream = new FakeUpstream(() => 200);
    const decision = await mayServe(accessWith(upstream), ask(entry, 'registry.test:8443/lib/app', 'Bearer x'));
    assert.deepEqual(decision, { serve: false, elsewhere: true });
    assert.equal(upstream.seen.length, 0);
  });

  it('asks the origin with the client credentials for private content: refused, or allowed and remembered', async () => {
    const entry = await stored('private here', 'registry.test/lib/app', 'private');
    const upstream = new FakeUpstream((authorization) => (authorization === 'Bearer alice' ? 200 : 401));
    const access = accessWith(upstream);
    const refused = await mayServe(access, ask(entry, 'registry.test/lib/app', 'Bearer mallory'));
    assert.equal(refused.serve, false);
    assert.match(!refused.serve && !refused.elsewhere ? refused.reason : '', /upstream answered 401/);
    assert.deepEqual(await mayServe(access, ask(entry, 'registry.test/lib/app', 'Bearer alice')), { serve: true });
    assert.deepEqual(await mayServe(access, ask(entry, 'registry.test/lib/app', 'Bearer alice')), { serve: true });
    assert.equal(upstream.seen.length, 2, 'the grant is remembered: one HEAD per credential');
    const head = upstream.seen[1]!;
    assert.equal(head.method, 'HEAD');
    assert.equal(head.url.href, `https://registry.test/v2/lib/app/blobs/${entry.digest}`);
  });

  it('asks about the subject manifest, not the list, for a private referrers list; the grant is the subject’s', async () => {
    const entry = await stored('a private referrers list', 'registry.test/alice/private', 'private');
    const subject = digestOf(Buffer.from('the subject manifest'));
    const upstream = new FakeUpstream((authorization) => (authorization === 'Bearer alice' ? 200 : 401));
    const access = accessWith(upstream);
    const list = { answer: 'referrers-stale', kind: 'manifest', askedAs: { kind: 'manifest', digest: subject } } as const;
    const anonymous = await mayServe(access, ask(entry, 'registry.test/alice/private', undefined, list));
    assert.equal(anonymous.serve, false);
    assert.deepEqual(await mayServe(access, ask(entry, 'registry.test/alice/private', 'Bearer alice', list)), { serve: true });
    assert.deepEqual(
      upstream.seen.map((r) => `${r.method} ${r.url.pathname}`),
      [`HEAD /v2/alice/private/manifests/${subject}`, `HEAD /v2/alice/private/manifests/${subject}`],
    );
    // Her grant for the subject manifest (a pull by digest a moment ago) covers its list: nothing more is asked.
    const pulled = await mayServe(access, ask(entry, 'registry.test/alice/private', 'Bearer alice', { kind: 'manifest', digest: subject }));
    assert.deepEqual(pulled, { serve: true });
    assert.equal(upstream.seen.length, 2);
  });

  it('binds private content to the origins that delivered it, not to those that only named it or asked for it', async () => {
    const entry = await stored('private, named elsewhere', 'registry.test/lib/app', 'private');
    store.use('blob', entry.digest, { ref: 'hostile.test/lib/app', tag: null }); // a request by digest via another origin
    await store.index.setPointer('hostile.test/lib/app:v1|', entry.digest); // a HEAD there that named the digest
    const named = store.index.get('blob', entry.digest)!;
    assert.deepEqual(named.sources, ['registry.test/lib/app']);
    const upstream = new FakeUpstream(() => 200); // the hostile origin says yes to everything
    const access = accessWith(upstream);
    for (const answer of ['digest-hit', 'tag-revalidated', 'tag-stale', 'tag-hit', 'digest-redirect', 'referrers-stale'] as const) {
      const verdict = await mayServe(access, ask(named, 'hostile.test/lib/app', undefined, { answer, kind: 'blob', originNamedIt: true }));
      assert.deepEqual(verdict, { serve: false, elsewhere: true }, answer);
    }
    assert.equal(upstream.seen.length, 0, 'the hostile origin is not even asked');
  });

  it('counts an origin as a source once it delivered the same bytes, and only then', async () => {
    const data = Buffer.from('delivered twice');
    const content: StoredContent = { kind: 'blob', digest: digestOf(data), size: data.length, mediaType: 'application/octet-stream' };
    await store.putVerified(content, data, { ref: 'registry.test/lib/app', tag: null });
    await store.index.setAccess('blob', content.digest, 'private');
    await store.putVerified(content, data, { ref: 'mirror.test/lib/app', tag: null });
    const entry = store.index.get('blob', content.digest)!;
    assert.deepEqual(entry.sources, ['registry.test/lib/app', 'mirror.test/lib/app']);
    const upstream = new FakeUpstream(() => 200);
    assert.deepEqual(await mayServe(accessWith(upstream), ask(entry, 'mirror.test/lib/app', undefined)), { serve: true });
    assert.equal(upstream.seen.length, 1, 'asked that source with the client credentials');
  });
});
