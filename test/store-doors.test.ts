// tier: e2e
// Issue 20, attack 1, at every door that answers from the store, over every store. Alice pulls a private
// image from registry.test with her credentials; evil.test, another allowlisted origin (a hostile TLS
// server this test starts, routed by CONNECT_TO), answers every manifest HEAD by tag 200 with
// Docker-Content-Digest set to Alice's private manifest, and every request by digest 404. An anonymous
// client then asks evil.test, through the proxy and through the mirror (?ns=evil.test), in every way the
// code answers from the store (STORE_ANSWERS, registry/content-gate.ts): it must get exactly what evil.test
// itself answers, never the private bytes; each attempt must have reached the gate as the answer it names
// (the request line's `gate`), and evil.test must never become a source of the entry. A STORE_ANSWERS row
// with neither an attempt nor a reasoned exclusion for a store fails the test: a new way of answering from
// the store needs a case here. Run over the local store, WORKERS=2, and the S3 store (Ceph RGW, with
// S3_REDIRECT and a local tier).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { S3Client } from '@aws-sdk/client-s3';
import { S3Client as Client } from '@aws-sdk/client-s3';
import { Agent, request, type Dispatcher } from 'undici';
import { STORE_ANSWERS, type StoreAnswer } from '../src/registry/content-gate.js';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { requestLines, type LogLine, type Regcache } from './harness/regcache.js';
import { listKeys, s3ClientConfig, startS3Server, type S3Server } from './harness/s3-server.js';
import { TmpDirs } from './harness/tmp.js';
import type { TokenServer } from './harness/token-server.js';
import { ProxyClient } from './support/proxy-client.js';
import { certDirFor, pullThrough, pushTo, startProxyFor, startTokenAuthUpstream, type Upstream } from './support/upstream-fixture.js';

type StoreName = 'local' | 'workers' | 's3';
type DoorName = 'proxy' | 'mirror';

const REPO = 'alice/private';
const BUCKET = 'regcache-doors';
const HOSTILE_MANIFEST = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","hostile":true}');

/** One request an anonymous client makes for evil.test, and the store answer it must reach (null: none to reach). */
interface Attempt {
  what: string;
  method: 'GET' | 'HEAD';
  path: string; // under /v2/REPO/
  headers?: Record<string, string>;
  answer: StoreAnswer | null;
  before?: () => void; // sets evil.test up for it
  retry?: boolean; // the path needs what an earlier request set asynchronously (a tag pointer): asked again until reached
}

/**
 * The store answers that cannot be reached from another origin, per store, and why. Each is a design
 * exclusion, not a skip: the reason says what makes the path unreachable there and where it is tested.
 */
const EXCLUDED: Partial<Record<StoreAnswer, { stores: StoreName[]; reason: string }>> = {
  'digest-redirect': { stores: ['local', 'workers'], reason: 'S3_REDIRECT needs CACHE_STORE: there is no bucket object to redirect to' },
  'fill-head': {
    stores: ['local', 'workers', 's3'],
    reason:
      "fills are keyed by origin (cache/fill-coordinator.ts): a HEAD for evil.test finds only evil.test's own fill; at the same origin the fill is verified and committed in one go, with no moment a test can hold it between the two (same-origin admission: fill-coordinator.test.ts)",
  },
};

/**
 * Store answers another origin cannot reach (fills are keyed by origin, referrers pointers by origin and
 * repository), tried here by the attack they do face: an anonymous client of the same origin joining
 * Alice's private fill while it runs, or asking for her last referrers list while that origin fails.
 */
const SAME_ORIGIN: StoreAnswer[] = ['fill-joined', 'referrers-stale'];
const IMAGE_INDEX = 'application/vnd.oci.image.index.v1+json';
const ALICE_BASIC = `Basic ${Buffer.from('alice:s3cret').toString('base64')}`;

function attemptsFor(store: StoreName, manifestDigest: string, layerDigest: string, hostile: HostileOrigin, subject: string): Attempt[] {
  const blobGet: StoreAnswer = store === 's3' ? 'digest-redirect' : 'digest-hit'; // S3_REDIRECT on the S3 run
  const flaky = `flaky-${store}`;
  const stable = `stable-${store}`; // MANIFEST_CACHE_PRIMARY_REGEX: trusted for 10 days once known
  return [
    { what: 'manifest by digest', method: 'GET', path: `manifests/${manifestDigest}`, answer: 'digest-hit' },
    { what: 'manifest by digest, HEAD', method: 'HEAD', path: `manifests/${manifestDigest}`, answer: 'digest-hit' },
    { what: 'manifest by digest, Range', method: 'GET', path: `manifests/${manifestDigest}`, headers: { range: 'bytes=0-9' }, answer: 'digest-hit' },
    { what: 'layer by digest', method: 'GET', path: `blobs/${layerDigest}`, answer: blobGet },
    { what: 'layer by digest, HEAD', method: 'HEAD', path: `blobs/${layerDigest}`, answer: 'digest-hit' },
    { what: 'layer by digest, Range', method: 'GET', path: `blobs/${layerDigest}`, headers: { range: 'bytes=10-99' }, answer: blobGet },
    { what: 'tag whose HEAD names the private digest', method: 'GET', path: 'manifests/v1', answer: 'tag-revalidated' },
    { what: 'tag whose HEAD names the private digest, HEAD', method: 'HEAD', path: 'manifests/v1', answer: 'tag-revalidated' },
    { what: 'manifest-cache tag, first', method: 'GET', path: `manifests/${stable}`, answer: 'tag-revalidated' },
    { what: 'manifest-cache tag, trusted', method: 'GET', path: `manifests/${stable}`, answer: 'tag-hit', retry: true },
    { what: 'tag, before upstream fails', method: 'GET', path: `manifests/${flaky}`, answer: 'tag-revalidated' },
    { what: 'tag, upstream failing', method: 'GET', path: `manifests/${flaky}`, answer: 'tag-stale', before: () => hostile.failing.add(flaky), retry: true },
    { what: 'tag, upstream failing, HEAD', method: 'HEAD', path: `manifests/${flaky}`, answer: 'tag-stale', retry: true },
    // Alice's referrers list of private.test is stored; a pointer is per origin: nothing of it to reach here.
    {
      what: "referrers of Alice's subject, upstream failing",
      method: 'GET',
      path: `referrers/${subject}`,
      answer: null,
      before: () => hostile.failing.add('referrers'),
    },
  ];
}

interface HostileOrigin {
  server: RunningServer;
  failing: Set<string>; // tags answered 503
  saw: string[];
}

/** evil.test: names the private manifest's digest for every tag, has nothing by digest. */
async function startHostile(upstream: Upstream, root: string, privateManifest: { digest: string; size: number; mediaType: string }): Promise<HostileOrigin> {
  const tls = await upstream.ca.issue(['evil.test'], root, 'hostile');
  const failing = new Set<string>();
  const saw: string[] = [];
  const server = await listenHttps(tls, (req, res) => {
    saw.push(`${req.method} ${req.url}`);
    if (/^\/v2\/.+\/referrers\//.test(req.url ?? '') && failing.has('referrers')) {
      res.writeHead(503, { 'content-type': 'text/plain', 'content-length': 5 }).end('down\n');
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/?]+)$/.exec(req.url ?? '');
    const reference = m?.[3] ?? '';
    if (!m || reference.startsWith('sha256:')) {
      const body = JSON.stringify({ errors: [{ code: m?.[2] === 'blobs' ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN', message: 'unknown' }] });
      res.writeHead(404, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (failing.has(reference)) {
      res.writeHead(503, { 'content-type': 'text/plain', 'content-length': 5 }).end(req.method === 'HEAD' ? undefined : 'down\n');
      return;
    }
    if (req.method === 'HEAD') {
      res
        .writeHead(200, { 'content-type': privateManifest.mediaType, 'content-length': privateManifest.size, 'docker-content-digest': privateManifest.digest })
        .end();
      return;
    }
    // Its own bytes, under the private digest's name: regcache must not store them either.
    res
      .writeHead(200, { 'content-type': privateManifest.mediaType, 'content-length': HOSTILE_MANIFEST.length, 'docker-content-digest': privateManifest.digest })
      .end(HOSTILE_MANIFEST);
  });
  return { server, failing, saw };
}

/**
 * private.test: blobs for Alice's Basic credentials only; a GET sends half, then waits for release(). And
 * one manifest of hers (the subject) with its referrers list, for her only; the list answered 503 while
 * referrersDown.
 */
interface GatedOrigin {
  server: RunningServer;
  subject: { digest: string; data: Buffer };
  list: { digest: string; data: Buffer };
  referrersDown: boolean;
  add(data: Buffer): string;
  halfSent(digest: string): Promise<void>;
  release(digest: string): void;
}

async function startGated(upstream: Upstream, root: string): Promise<GatedOrigin> {
  const tls = await upstream.ca.issue(['private.test'], root, 'gated');
  const blobs = new Map<string, Buffer>();
  const sent = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  const released = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  const signal = (map: typeof sent, digest: string) => {
    let entry = map.get(digest);
    if (!entry) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      entry = { promise, resolve };
      map.set(digest, entry);
    }
    return entry;
  };
  const subjectData = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', alice: 'private' }));
  const subject = { digest: sha256(subjectData), data: subjectData };
  const listData = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: IMAGE_INDEX,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: sha256(Buffer.from('her signature')),
          size: 13,
          artifactType: 'application/vnd.dev.cosign.artifact.sig.v1+json',
        },
      ],
    }),
  );
  const list = { digest: sha256(listData), data: listData };
  const origin = { referrersDown: false };
  const refuse = (req: IncomingMessage, res: ServerResponse): void => {
    const body = '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}';
    res
      .writeHead(401, { 'content-type': 'application/json', 'content-length': body.length, 'www-authenticate': 'Basic realm="private.test"' })
      .end(req.method === 'HEAD' ? undefined : body);
  };
  const server = await listenHttps(tls, async (req, res) => {
    if (req.url === `/v2/${REPO}/referrers/${subject.digest}`) {
      if (origin.referrersDown) return void res.writeHead(503, { 'content-type': 'text/plain', 'content-length': 5 }).end('down\n');
      if (req.headers.authorization !== ALICE_BASIC) return refuse(req, res);
      return void res.writeHead(200, { 'content-type': IMAGE_INDEX, 'content-length': list.data.length }).end(list.data);
    }
    if (req.url === `/v2/${REPO}/manifests/${subject.digest}`) {
      if (req.headers.authorization !== ALICE_BASIC) return refuse(req, res);
      res.writeHead(200, {
        'content-type': 'application/vnd.oci.image.manifest.v1+json',
        'content-length': subject.data.length,
        'docker-content-digest': subject.digest,
      });
      return void res.end(req.method === 'HEAD' ? undefined : subject.data);
    }
    const digest = /^\/v2\/.+\/blobs\/(sha256:[0-9a-f]{64})$/.exec(req.url ?? '')?.[1];
    const data = digest === undefined ? undefined : blobs.get(digest);
    if (!digest || !data) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(req.method === 'HEAD' ? undefined : '{"errors":[{"code":"BLOB_UNKNOWN"}]}');
      return;
    }
    if (req.headers.authorization !== ALICE_BASIC) return refuse(req, res);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': data.length, 'docker-content-digest': digest });
    if (req.method === 'HEAD') return void res.end();
    res.write(data.subarray(0, data.length / 2));
    signal(sent, digest).resolve();
    await signal(released, digest).promise;
    res.end(data.subarray(data.length / 2));
  });
  return {
    server,
    subject,
    list,
    get referrersDown() {
      return origin.referrersDown;
    },
    set referrersDown(down: boolean) {
      origin.referrersDown = down;
    },
    add: (data) => {
      const digest = sha256(data);
      blobs.set(digest, data);
      return digest;
    },
    halfSent: (digest) => signal(sent, digest).promise,
    release: (digest) => signal(released, digest).resolve(),
  };
}

function sha256(data: Buffer): string {
  return 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
}

interface Answer {
  status: number;
  body: Buffer;
}

async function read(res: Dispatcher.ResponseData): Promise<Answer> {
  const chunks: Buffer[] = [];
  for await (const chunk of res.body) chunks.push(chunk as Buffer);
  return { status: res.statusCode, body: Buffer.concat(chunks) };
}

describe('every door that answers from the store, against a hostile origin (issue 20, attack 1)', () => {
  const tmp = new TmpDirs();
  let root: string;
  let upstream: Upstream;
  let tokens: TokenServer;
  let caBundle: string;
  let hostile: HostileOrigin;
  let gated: GatedOrigin;
  let direct: Agent; // straight to evil.test: what it answers itself
  let directGated: Agent; // straight to private.test
  let s3: S3Server | null = null;

  before(async () => {
    root = await tmp.make('regcache-doors');
    const hub = await startTokenAuthUpstream(root, ['registry.test'], ['doors-a'], { users: { alice: 's3cret' }, privateRepos: [REPO] });
    ({ upstream, tokens, caBundle } = hub);
    await pushTo(upstream, REPO, 'v1', hub.seedToken(REPO));
    const { image } = upstream;
    hostile = await startHostile(upstream, root, { digest: image.manifestDigest, size: image.manifest.length, mediaType: image.manifestMediaType });
    gated = await startGated(upstream, root);
    const ca = await readFile(upstream.ca.certFile, 'utf8');
    direct = new Agent({ connect: { ca, servername: 'evil.test' } });
    directGated = new Agent({ connect: { ca, servername: 'private.test' } });
  });

  after(async () => {
    await direct?.close();
    await directGated?.close();
    await hostile?.server.close();
    await gated?.server.close();
    await upstream?.registry.stop();
    await tokens?.stop();
    await s3?.stop();
    await tmp.cleanup();
  });

  it('lists a case or a reasoned exclusion for every way the code answers from the store', () => {
    for (const store of ['local', 'workers', 's3'] as const) {
      const covered = new Set([...attemptsFor(store, 'sha256:x', 'sha256:y', hostile, 'sha256:z').map((a) => a.answer), ...SAME_ORIGIN]);
      for (const answer of Object.keys(STORE_ANSWERS) as StoreAnswer[]) {
        const excluded = EXCLUDED[answer]?.stores.includes(store) ?? false;
        assert.ok(covered.has(answer) || excluded, `${store}: no case for the store answer "${answer}" (${STORE_ANSWERS[answer]})`);
        assert.ok(!(covered.has(answer) && excluded), `${store}: "${answer}" is both tried and excluded`);
      }
    }
  });

  for (const store of ['local', 'workers', 's3'] as const) {
    describe(`${store} store`, () => {
      let proxy: Regcache;
      let client: ProxyClient;
      let s3Client: S3Client | null = null;
      const prefix = `${store}/`;

      before(async () => {
        const env: Record<string, string> = {
          UPSTREAM_CA_FILE: caBundle,
          ADDITIONAL_REGISTRIES: 'registry.test evil.test auth.test private.test',
          MIRROR_PORT: String(await freePort()),
          ENABLE_MANIFEST_CACHE: 'true',
          CONNECT_TO: [
            `registry.test:443:127.0.0.1:${upstream.registry.port}`,
            `auth.test:443:127.0.0.1:${tokens.port}`,
            `evil.test:443:127.0.0.1:${hostile.server.port}`,
            `private.test:443:127.0.0.1:${gated.server.port}`,
          ].join(' '),
        };
        if (store === 'workers') env.WORKERS = '2';
        if (store === 's3') {
          s3 ??= await startS3Server({ objectStore: 'memstore' });
          s3Client = new Client(s3ClientConfig(s3));
          Object.assign(env, s3.env, { CACHE_STORE: `s3://${BUCKET}/${prefix}`, S3_REDIRECT: 'true', LOCAL_TIER_MAX_SIZE: '100m' });
        }
        proxy = await startProxyFor(upstream, { dir: path.join(root, store), env, routes: {} });
        client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
        // Alice pulls her private image with her credentials: it is stored, and learned to be private.
        const certDir = await certDirFor(proxy, path.join(root, `${store}-certs.d`));
        const pulled = await pullThrough(
          proxy,
          `registry.test/${REPO}:v1`,
          path.join(root, `${store}-alice`),
          certDir,
          path.join(root, `${store}-skopeo`),
          'alice:s3cret',
        );
        assert.equal(pulled.code, 0, pulled.stderr);
        // And her referrers list of private.test (the subject's access is asked: private).
        const hers = await client.fetch(`https://private.test/v2/${REPO}/referrers/${gated.subject.digest}`, { headers: { authorization: ALICE_BASIC } });
        assert.equal(hers.status, 200);
        assert.ok(hers.body.equals(gated.list.data));
        for (const digest of [upstream.image.manifestDigest, upstream.image.layers[0]!.digest, gated.list.digest]) {
          await proxy.waitForLog((l) => l.msg === 'content access learned' && l.digest === digest && l.access === 'private', `${digest} known as private`);
        }
      });

      after(async () => {
        await client?.close();
        await proxy?.stop();
        s3Client?.destroy();
      });

      const ask = async (door: DoorName, attempt: Attempt): Promise<Answer> => {
        const init = { method: attempt.method, headers: attempt.headers ?? {} };
        if (door === 'proxy') return client.fetch(`https://evil.test/v2/${REPO}/${attempt.path}`, init);
        return read(await request(`http://127.0.0.1:${proxy.mirrorPort}/v2/${REPO}/${attempt.path}?ns=evil.test`, init));
      };
      /** The request line of the last request for `host` since `since` (written when its response closes: waited for). */
      const lineOf = async (since: number, host: string, what: string): Promise<LogLine> => {
        let found: LogLine | undefined;
        await waitFor(
          async () => {
            found = (await proxy.requests(since)).filter((l) => l.host === host).at(-1);
            return found !== undefined;
          },
          { timeoutMs: 10_000, what: `the request line of ${what}` },
        );
        return found!;
      };
      const evilAnswers = async (attempt: Attempt): Promise<Answer> =>
        read(
          await request(`https://127.0.0.1:${hostile.server.port}/v2/${REPO}/${attempt.path}`, {
            dispatcher: direct,
            method: attempt.method,
            headers: attempt.headers ?? {},
          }),
        );
      let privateBytes: Buffer[] = [];

      for (const door of ['proxy', 'mirror'] as const) {
        it(`${door}: an anonymous client gets what evil.test answers, never the private content, at every store answer`, async () => {
          hostile.failing.clear();
          const reached = new Set<StoreAnswer>();
          privateBytes = [upstream.image.manifest, ...(await Promise.all(upstream.image.layers.map((l) => readFile(l.file))))];
          for (const attempt of attemptsFor(store, upstream.image.manifestDigest, upstream.image.layers[0]!.digest, hostile, gated.subject.digest)) {
            attempt.before?.();
            for (let tries = 0; ; tries++) {
              const since = (await proxy.logs()).length;
              const got = await ask(door, attempt);
              const own = await evilAnswers(attempt);
              const label = `${door} ${attempt.what}`;
              assert.equal(got.status, own.status, `${label}: evil.test's status`);
              assert.ok(got.body.equals(own.body), `${label}: evil.test's body, got ${got.body.subarray(0, 80).toString()}`);
              for (const bytes of privateBytes) assert.ok(!got.body.includes(bytes.subarray(0, 64)), `${label}: private bytes`);
              const line = await lineOf(since, 'evil.test', label);
              assert.ok(!['HIT', 'REVALIDATED', 'STALE'].includes(String(line.cache)), `${label}: answered ${line.cache} from the store`);
              assert.notEqual(line.redirect, true, `${label}: redirected to the bucket`);
              const gate = (line.gate as string[] | undefined) ?? [];
              assert.ok(
                gate.every((g) => g.endsWith(':elsewhere')),
                `${label}: the gate let it through: ${gate.join(' ')}`,
              );
              if (attempt.answer === null || gate.includes(`${attempt.answer}:elsewhere`)) break;
              assert.ok(attempt.retry && tries < 50, `${label}: never reached the gate as ${attempt.answer}: ${JSON.stringify(line)}`);
            }
            if (attempt.answer) reached.add(attempt.answer);
          }
          for (const answer of Object.keys(STORE_ANSWERS) as StoreAnswer[]) {
            const elsewhere = SAME_ORIGIN.includes(answer) || EXCLUDED[answer]?.stores.includes(store);
            assert.ok(reached.has(answer) || elsewhere, `${door}: ${answer} was not reached`);
          }
          hostile.failing.clear();
        });
      }

      it("fill-joined: an anonymous client of the same origin joining Alice's private fill gets that origin's refusal", async () => {
        const data = crypto.randomBytes(300_000);
        const digest = gated.add(data);
        const blob = `v2/${REPO}/blobs/${digest}`;
        const alice = client.fetch(`https://private.test/${blob}`, { headers: { authorization: ALICE_BASIC } });
        void alice.catch(() => undefined); // awaited below; a failed assertion must not leave it unhandled
        try {
          await gated.halfSent(digest);
          const own = await read(await request(`https://127.0.0.1:${gated.server.port}/${blob}`, { dispatcher: directGated }));
          assert.equal(own.status, 401);
          for (const door of ['proxy', 'mirror'] as const) {
            for (let tries = 0; ; tries++) {
              const since = (await proxy.logs()).length;
              const got =
                door === 'proxy'
                  ? await client.fetch(`https://private.test/${blob}`)
                  : await read(await request(`http://127.0.0.1:${proxy.mirrorPort}/${blob}?ns=private.test`));
              assert.equal(got.status, own.status, `${door}: private.test's status`);
              assert.ok(got.body.equals(own.body), `${door}: private.test's body, got ${got.body.subarray(0, 80).toString()}`);
              const line = await lineOf(since, 'private.test', door);
              const gate = (line?.gate as string[] | undefined) ?? [];
              assert.ok(!gate.some((g) => g.endsWith(':serve')), `${door}: the gate let it through: ${gate.join(' ')}`);
              // The fill is registered once regcache has read the head: until then the request fetches alone.
              if (gate.includes('fill-joined:refused')) break;
              assert.ok(tries < 50, `${door}: never joined the fill: ${JSON.stringify(line)}`);
            }
          }
        } finally {
          gated.release(digest);
        }
        const mine = await alice;
        assert.equal(mine.status, 200);
        assert.ok(mine.body.equals(data), 'Alice gets her blob');
      });

      it("referrers-stale: an anonymous client of the same origin, while it fails, gets that origin's failure, never Alice's last list", async () => {
        const referrers = `v2/${REPO}/referrers/${gated.subject.digest}`;
        gated.referrersDown = true;
        try {
          const own = await read(await request(`https://127.0.0.1:${gated.server.port}/${referrers}`, { dispatcher: directGated }));
          assert.equal(own.status, 503);
          for (const door of ['proxy', 'mirror'] as const) {
            const since = (await proxy.logs()).length;
            const got =
              door === 'proxy'
                ? await client.fetch(`https://private.test/${referrers}`)
                : await read(await request(`http://127.0.0.1:${proxy.mirrorPort}/${referrers}?ns=private.test`));
            assert.equal(got.status, own.status, `${door}: private.test's status`);
            assert.ok(got.body.equals(own.body), `${door}: private.test's body, got ${got.body.subarray(0, 80).toString()}`);
            assert.ok(!got.body.includes(gated.list.data.subarray(0, 64)), `${door}: the private list`);
            const line = await lineOf(since, 'private.test', door);
            assert.deepEqual(line.gate, ['referrers-stale:refused'], `${door}: ${JSON.stringify(line)}`);
          }
          // Alice, whose credentials private.test accepts for the subject, is served her last list: the path is live.
          const since = (await proxy.logs()).length;
          const hers = await client.fetch(`https://private.test/${referrers}`, { headers: { authorization: ALICE_BASIC } });
          assert.equal(hers.status, 200);
          assert.ok(hers.body.equals(gated.list.data));
          const line = await lineOf(since, 'private.test', 'alice');
          assert.equal(line.cache, 'STALE', JSON.stringify(line));
          assert.deepEqual(line.gate, ['referrers-stale:serve']);
        } finally {
          gated.referrersDown = false;
        }
      });

      it('never makes evil.test a source of the entry, and still serves Alice from the store', async () => {
        if (store === 's3') {
          const keys = [...(await listKeys(s3Client!, BUCKET, prefix, 'sources/')).keys()];
          assert.ok(keys.length > 0, 'sources are recorded in the bucket');
          const named = keys.map((k) => Buffer.from(k.split('/').at(-1)!, 'base64url').toString('utf8'));
          assert.ok(named.includes(`registry.test/${REPO}`) && !named.some((ref) => ref.startsWith('evil.test')), named.join(' '));
        } else {
          const journal = await readFile(path.join(proxy.cacheDir, 'index.jsonl'), 'utf8');
          assert.match(journal, /"sources":\["registry\.test\/alice\/private"\]/);
          assert.doesNotMatch(journal, /"s":"evil\.test|"sources":\[[^\]]*evil\.test/);
        }
        // Alice, with her own token, is still served the stored manifest: her origin named it to her.
        const basic = Buffer.from('alice:s3cret').toString('base64');
        const tokenRes = await client.fetch(`https://auth.test/token?service=${encodeURIComponent(tokens.service)}&scope=repository:${REPO}:pull`, {
          headers: { authorization: `Basic ${basic}` },
        });
        const { token } = JSON.parse(tokenRes.body.toString()) as { token: string };
        const since = (await proxy.logs()).length;
        const res = await client.fetch(`https://registry.test/v2/${REPO}/manifests/v1`, {
          headers: { authorization: `Bearer ${token}`, accept: upstream.image.manifestMediaType },
        });
        assert.equal(res.status, 200);
        assert.ok(res.body.equals(upstream.image.manifest));
        const [line] = await requestLines(proxy, (l) => l.host === 'registry.test' && l.kind === 'manifest-by-tag', 1, { since });
        assert.equal(line?.cache, 'REVALIDATED', JSON.stringify(line));
        const hash = 'sha256:' + crypto.createHash('sha256').update(res.body).digest('hex');
        assert.equal(hash, upstream.image.manifestDigest);
      });
    });
  }
});
