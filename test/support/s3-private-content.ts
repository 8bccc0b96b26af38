// What the S3 store keeps of "is this content public?" (issue 20: no S3 test covered private content, and
// a setAccess that recorded every entry public, or an access marker read back public, went unnoticed).
// One scenario over any Bucket, run in process over the in-memory bucket (test/s3-private-content.test.ts)
// and over a real Ceph RGW (test/s3-private-content-rgw.test.ts): two replicas share a bucket; the origin
// that delivered a private blob answers regcache's anonymous HEAD 401; the replica that learned it, a
// replica that finds the entry later, and a replica started afterwards all hold it private, and none of
// them serves it to an anonymous client. Public at another origin then makes it public everywhere.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { Readable } from 'node:stream';
import type { Bucket } from '../../src/cache/s3/bucket.js';
import { S3Store } from '../../src/cache/s3/s3-store.js';
import { ContentAccess } from '../../src/registry/content-access.js';
import { createLogger } from '../../src/telemetry/log.js';
import type { Upstream, UpstreamClient, UpstreamRequest } from '../../src/upstream/upstream-client.js';
import { UpstreamTokens } from '../../src/upstream/upstream-tokens.js';
import { checkAccess } from './access-check.js';

const log = createLogger('silent', false);

/** An upstream whose every HEAD gets the status `statusOf` gives its host, and which remembers the requests. */
class ScriptedUpstream implements Upstream {
  readonly seen: UpstreamRequest[] = [];
  constructor(private readonly statusOf: (host: string, authorization: string | undefined) => number) {}
  async request(request: UpstreamRequest) {
    this.seen.push(request);
    const url = new URL(request.url);
    return { statusCode: this.statusOf(url.host, request.headers?.authorization), headers: {}, body: Readable.from([]), url };
  }
}

/**
 * Runs the scenario on `bucket` (empty under `prefix`); `dir()` gives each replica a CACHE_DIR of its own.
 * Returns the stores it opened, for the caller to close.
 */
export async function privateContentOnS3(bucket: Bucket, prefix: string, dir: () => Promise<string>, stores: S3Store[]): Promise<void> {
  const replica = async (): Promise<S3Store> => {
    const { store } = await S3Store.open({ bucket, prefix, dir: await dir(), log, probeMs: 60_000, refreshMs: 600_000 });
    stores.push(store);
    return store;
  };
  const [a, b] = [await replica(), await replica()];
  const data = crypto.randomBytes(2000);
  const digest = 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
  await a.putVerified({ kind: 'blob', digest, size: data.length, mediaType: 'application/octet-stream' }, data, {
    ref: 'private.test/alice/secret',
    tag: null,
  });

  // regcache's own anonymous HEAD: private.test refuses it, public.test (later) serves it.
  const upstream = new ScriptedUpstream((host, authorization) => (host === 'public.test' || authorization === 'Basic YWxpY2U6czNjcmV0' ? 200 : 401));
  const access = (store: S3Store) => new ContentAccess(store, upstream, new UpstreamTokens(upstream as unknown as UpstreamClient), log);
  const learned = await access(a).classify(a.index.get('blob', digest)!);
  assert.equal(learned, 'private');
  assert.equal(a.index.get('blob', digest)?.access, 'private', 'the replica that asked holds it private');

  // Replica b did not know the entry: the lookup reads it, and its access marker, from the bucket.
  assert.equal(b.index.get('blob', digest), undefined);
  assert.ok(await b.lookup('blob', digest));
  assert.equal(b.index.get('blob', digest)?.access, 'private', 'a replica that finds it in the bucket reads it private');
  // A replica started afterwards reads everything with its first refresh.
  const c = await replica();
  assert.equal(c.index.get('blob', digest)?.access, 'private', 'a replica started afterwards reads it private');

  // None of them serves it to an anonymous client (the origin refuses it, and upstream is asked), nor for another origin.
  for (const store of [a, b, c]) {
    const entry = store.index.get('blob', digest);
    const asked = upstream.seen.length;
    const anonymous = await checkAccess(access(store), 'blob', digest, entry, 'private.test/alice/secret', undefined);
    assert.equal(anonymous.allowed, false, 'refused to an anonymous client');
    assert.equal(upstream.seen.length, asked + 1, 'upstream was asked about this client');
    assert.deepEqual(await checkAccess(access(store), 'blob', digest, entry, 'hostile.test/alice/secret', undefined), { allowed: false, elsewhere: true });
    assert.deepEqual(
      await checkAccess(access(store), 'blob', digest, entry, 'private.test/alice/secret', 'Basic YWxpY2U6czNjcmV0'),
      { allowed: true },
      'the owner',
    );
  }

  // Public at any origin makes it public, here and on the other replicas (both markers are in the bucket).
  assert.equal(await access(b).classify(b.index.get('blob', digest)!, 'public.test/library/copy'), 'public');
  assert.equal(b.index.get('blob', digest)?.access, 'public');
  await a.index.refresh();
  assert.equal(a.index.get('blob', digest)?.access, 'public', 'public wins over private on refresh');
  const d = await replica();
  assert.equal(d.index.get('blob', digest)?.access, 'public', 'and for a replica started afterwards');
  // A private answer after that does not make it private again.
  await c.index.refresh();
  assert.equal(await access(c).classify({ ...c.index.get('blob', digest)!, access: undefined }), 'private');
  assert.equal(c.index.get('blob', digest)?.access, 'public');
}
