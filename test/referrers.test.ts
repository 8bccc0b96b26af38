// tier: e2e
// Signatures and attestations with upstream down (issue 23, item 8): cosign's signature tags and the OCI
// 1.1 referrers API (GET /v2/<name>/referrers/<digest>, with and without artifactType) answered from the
// cache when upstream fails (503, or every connection cut), through the proxy and the mirror, with the
// manifests' access rules: a private repository's list never reaches an anonymous client. The upstream is
// a real-TLS registry that serves referrers (support/referrers-registry.ts; docker-registry 2.8 has no
// referrers API), routed by CONNECT_TO. Over the local store (regcache in this process), WORKERS=2 and the
// S3 store (Ceph RGW): the lists are stored as manifests under pointers, which every store keeps. No
// client installed here queries referrers (skopeo 1.x does not), so the requests are plain HTTP ones, as
// cosign and oras send them.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startRegcache, type LogLine } from './harness/regcache.js';
import { startS3Server, type S3Server } from './harness/s3-server.js';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { TmpDirs } from './harness/tmp.js';
import { startInProcessRegcache, type InProcessRegcache } from './support/in-process-regcache.js';
import { request } from './support/plain-http.js';
import { ProxyClient } from './support/proxy-client.js';
import { ATTESTATION_TYPE, OCI_INDEX, OCI_MANIFEST, ReferrersRegistry, SIGNATURE_TYPE, type SignedRepository } from './support/referrers-registry.js';

const ALICE = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

type StoreName = 'local' | 'workers' | 's3';
type Running = Pick<InProcessRegcache, 'port' | 'mirrorPort' | 'proxyUrl' | 'caFile' | 'waitForLog' | 'logMark' | 'stop'>;

describe('signatures and attestations offline: cosign tags and the OCI 1.1 referrers API', () => {
  const tmp = new TmpDirs();
  let root: string;
  let caFile: string;
  let s3: S3Server | null = null;

  before(async () => {
    root = await tmp.make('regcache-referrers');
  });
  after(async () => {
    await s3?.stop();
    await tmp.cleanup();
  });

  for (const store of ['local', 'workers', 's3'] as const) {
    describe(`${store} store`, () => referrersOver(store));
  }

  function referrersOver(store: StoreName): void {
    const upstream = new ReferrersRegistry();
    let regcache: Running;
    let client: ProxyClient;
    let open: SignedRepository; // lib/app: anyone reads it
    let closed: SignedRepository; // alice/private: Alice's credentials only
    let legacy: SignedRepository; // lib/old: no referrers API (404)

    before(async () => {
      const dir = path.join(root, store);
      const ca = await createTestCA(dir, 'referrers CA');
      caFile = ca.certFile;
      await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
      open = upstream.addRepository('lib/app');
      closed = upstream.addRepository('alice/private', { credentials: ALICE });
      legacy = upstream.addRepository('lib/old', { referrersApi: false });
      const env: Record<string, string> = {
        MIRROR_PORT: String(await freePort()),
        ADDITIONAL_REGISTRIES: 'registry.test',
        UPSTREAM_CA_FILE: caFile,
        CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}`,
      };
      if (store === 'local') {
        regcache = await startInProcessRegcache({ dir, env });
      } else {
        if (store === 'workers') env.WORKERS = '2';
        if (store === 's3') {
          s3 ??= await startS3Server({ objectStore: 'memstore' });
          Object.assign(env, s3.env, { CACHE_STORE: 's3://regcache-referrers/' });
        }
        regcache = await startRegcache({ dir, env });
      }
      client = new ProxyClient(regcache.proxyUrl, regcache.caFile);
    });
    after(async () => {
      await client?.close();
      await regcache?.stop();
      await upstream.close();
    });

    /** GET of /v2/<repo>/<rest> at registry.test, through the proxy (CONNECT) or the mirror (?ns=). */
    const get = async (door: 'proxy' | 'mirror', repo: string, rest: string, headers: Record<string, string> = {}): Promise<Answer> => {
      if (door === 'proxy') {
        const res = await client.fetch(`https://registry.test/v2/${repo}/${rest}`, { headers });
        return { ...res, body: res.body.toString() };
      }
      const res = await request(regcache.mirrorPort!, `/v2/${repo}/${rest}${rest.includes('?') ? '&' : '?'}ns=registry.test`, { headers });
      return { status: res.status, headers: res.headers, body: res.body };
    };
    const requestLine = async (since: number, pathPart: string): Promise<LogLine> =>
      regcache.waitForLog((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.includes(pathPart), `the request line of ${pathPart}`, { since });
    /** A 200, or a failure that says what regcache logged for the request (cache, reason, gate). */
    const expectOk = async (res: { status: number; body: string }, since: number, pathPart: string, what: string): Promise<void> => {
      if (res.status === 200) return;
      const line = await requestLine(since, pathPart).then(
        (l) => JSON.stringify({ cache: l.cache, status: l.status, reason: l.reason, gate: l.gate, error: l.error }),
        (err: unknown) => `no request line (${String(err)})`,
      );
      assert.fail(`${what}: ${res.status} ${res.body}; regcache logged ${line}`);
    };
    const learned = (digest: string, access: 'public' | 'private') =>
      regcache.waitForLog((l) => l.msg === 'content access learned' && l.digest === digest && l.access === access, `${digest} learned ${access}`);

    const referrers = (repo: SignedRepository) => `referrers/${repo.subject.digest}`;
    const filtered = (repo: SignedRepository, type: string) => `referrers/${repo.subject.digest}?artifactType=${encodeURIComponent(type)}`;

    it('answers the referrers list, filtered or not, and the cosign signature tag from the cache when upstream fails, at both doors', async () => {
      upstream.mode = 'up';
      const accept = { accept: OCI_MANIFEST };
      for (const door of ['proxy', 'mirror'] as const) {
        const all = await get(door, open.name, referrers(open));
        assert.equal(all.status, 200, `${door}: ${all.body}`);
        assert.equal(all.body, open.referrers.data.toString());
        assert.equal(all.headers['content-type'], OCI_INDEX);
        const signatures = await get(door, open.name, filtered(open, SIGNATURE_TYPE));
        assert.equal(signatures.status, 200);
        assert.equal(signatures.body, open.filtered(SIGNATURE_TYPE).data.toString());
        assert.equal(signatures.headers['oci-filters-applied'], 'artifactType');
        const signatureTag = await get(door, open.name, `manifests/${open.signatureTag}`, accept);
        assert.equal(signatureTag.status, 200);
        assert.equal(signatureTag.body, open.signature.data.toString());
      }
      // Anyone may have them offline once the origin said it serves them to anyone.
      await learned(open.referrers.digest, 'public');
      await learned(open.filtered(SIGNATURE_TYPE).digest, 'public');
      await learned(open.signature.digest, 'public');

      for (const mode of ['503', 'cut'] as const) {
        upstream.mode = mode;
        for (const door of ['proxy', 'mirror'] as const) {
          const what = `${door}, upstream ${mode}`;
          let mark = await regcache.logMark();
          const all = await get(door, open.name, referrers(open));
          await expectOk(all, mark, referrers(open), what);
          assert.equal(all.body, open.referrers.data.toString(), what);
          assert.equal(all.headers['content-type'], OCI_INDEX);
          assert.equal(all.headers['oci-filters-applied'], undefined, `${what}: the whole list is not filtered`);
          assert.match(String(all.headers.warning), /Stale/);
          const line = await requestLine(mark, referrers(open));
          assert.equal(line.cache, 'STALE', what);
          assert.deepEqual(line.gate, ['referrers-stale:serve'], what);

          mark = await regcache.logMark();
          const signatures = await get(door, open.name, filtered(open, SIGNATURE_TYPE));
          await expectOk(signatures, mark, referrers(open), what);
          assert.equal(signatures.body, open.filtered(SIGNATURE_TYPE).data.toString(), what);
          assert.equal(signatures.headers['oci-filters-applied'], 'artifactType', what);
          assert.equal((await requestLine(mark, referrers(open))).cache, 'STALE', what);

          // A filter never asked before: the whole list, unfiltered and saying so (the client filters).
          const attestations = await get(door, open.name, filtered(open, ATTESTATION_TYPE));
          assert.equal(attestations.status, 200, what);
          assert.equal(attestations.body, open.referrers.data.toString(), what);
          assert.equal(attestations.headers['oci-filters-applied'], undefined, what);

          const signatureTag = await get(door, open.name, `manifests/${open.signatureTag}`, accept);
          assert.equal(signatureTag.status, 200, what);
          assert.equal(signatureTag.body, open.signature.data.toString(), what);
        }
      }
      upstream.mode = 'up';
    });

    it('never gives a private repository’s list to an anonymous client; its owner gets it while her access is known', async () => {
      upstream.mode = 'up';
      const alice = { authorization: ALICE };
      const hers = await get('proxy', closed.name, referrers(closed), alice);
      assert.equal(hers.status, 200);
      assert.equal(hers.body, closed.referrers.data.toString());
      const anonymous = await get('proxy', closed.name, referrers(closed));
      assert.equal(anonymous.status, 401, 'upstream refuses an anonymous client');
      await learned(closed.referrers.digest, 'private');
      // Her pull of the image: the manifest by digest stored, then served from the store, which asks the origin with her credentials.
      assert.equal((await get('proxy', closed.name, `manifests/${closed.subject.digest}`, { ...alice, accept: OCI_MANIFEST })).status, 200);
      await learned(closed.subject.digest, 'private'); // stored (then asked about)
      let mark = await regcache.logMark();
      assert.equal((await get('proxy', closed.name, `manifests/${closed.subject.digest}`, { ...alice, accept: OCI_MANIFEST })).status, 200);
      assert.equal((await requestLine(mark, `manifests/${closed.subject.digest}`)).cache, 'HIT');

      upstream.mode = '503';
      for (const door of ['proxy', 'mirror'] as const) {
        mark = await regcache.logMark();
        const refused = await get(door, closed.name, referrers(closed));
        assert.equal(refused.status, 503, `${door}: an anonymous client gets upstream's own answer`);
        assert.ok(!refused.body.includes(closed.signature.digest), `${door}: none of the list`);
        const line = await requestLine(mark, referrers(closed));
        assert.equal(line.cache, 'DENIED', door);
        assert.deepEqual(line.gate, ['referrers-stale:refused'], door);
      }
      mark = await regcache.logMark();
      const offline = await get('proxy', closed.name, referrers(closed), alice);
      assert.equal(offline.status, 200, offline.body);
      assert.equal(offline.body, closed.referrers.data.toString());
      assert.equal((await requestLine(mark, referrers(closed))).cache, 'STALE');
      upstream.mode = 'up';
    });

    it('passes through the answer of a registry without the referrers API, and stores nothing of it', async () => {
      upstream.mode = 'up';
      const absent = await get('proxy', legacy.name, referrers(legacy));
      assert.equal(absent.status, 404, 'clients then read the sha256-<hex> tag');
      upstream.mode = '503';
      const down = await get('proxy', legacy.name, referrers(legacy));
      assert.equal(down.status, 503, 'nothing to serve stale');
      upstream.mode = 'up';
      // The fallback tag itself is a manifest by tag like any other.
      const tag = await get('proxy', legacy.name, `manifests/${legacy.signatureTag}`, { accept: OCI_MANIFEST });
      assert.equal(tag.status, 200);
      assert.equal(tag.body, legacy.signature.data.toString());
    });

    it('keeps referrers lists out of tag listings', async () => {
      const tags = await request(regcache.mirrorPort!, `/v2/${open.name}/tags/list?ns=registry.test`);
      assert.equal(tags.status, 200, tags.body);
      const listed = (JSON.parse(tags.body) as { tags: string[] }).tags;
      assert.ok(listed.includes(open.signatureTag), `the signature tag is listed: ${tags.body}`);
      assert.ok(!listed.some((t) => t.includes('@') || t.includes('referrers')), `no referrers pointer shows as a tag: ${tags.body}`);
    });
  }
});
