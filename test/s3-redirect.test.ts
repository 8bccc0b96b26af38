// tier: unit
// S3_REDIRECT in process, over an in-memory bucket (test/support/fake-bucket.ts): a GET of a stored blob
// that the client may read is answered 307 to a presigned URL of its object; HEADs and manifests are
// answered locally; content refused to this client stays refused (upstream's own answer, no URL minted);
// the URL's signature is never in a log line. Against a real S3 server (Ceph RGW): test/s3-fleet.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { AccessLog } from '../src/telemetry/access-log.js';
import { FillCoordinator } from '../src/cache/fill-coordinator.js';
import { LocalFillTable } from '../src/cache/fill-table.js';
import { Room } from '../src/cache/room.js';
import { S3Store } from '../src/cache/s3/s3-store.js';
import { loadConfig } from '../src/config/config.js';
import { Metrics } from '../src/telemetry/metrics.js';
import type { ContentAccess } from '../src/registry/content-access.js';
import { ContentResponder } from '../src/registry/content-responder.js';
import { registryRequest } from '../src/registry/registry-handler.js';
import type { Upstream, UpstreamRequest } from '../src/upstream/upstream-client.js';
import { TmpDirs } from './harness/tmp.js';
import { FAKE_SIGNATURE, FakeBucket } from './support/fake-bucket.js';

const PREFIX = 'fleet/';
const ORIGIN = new URL('https://registry.test');
const digestOf = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const from = (repository: string) => ({ ref: `registry.test/${repository}`, tag: null });
const ALLOWED = 'Bearer may-read';

describe('S3_REDIRECT (in process, fake bucket)', () => {
  const tmp = new TmpDirs();
  const lines: string[] = [];
  const upstreamSaw: UpstreamRequest[] = [];
  const bucket = new FakeBucket();
  const metrics = new Metrics();
  const publicBlob = crypto.randomBytes(200_000);
  const privateBlob = crypto.randomBytes(50_000);
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', layers: [] }));
  let store: S3Store;
  let server: http.Server;
  let base: string;

  before(async () => {
    const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, done) => (lines.push(chunk.toString()), done()) }));
    ({ store } = await S3Store.open({ bucket, prefix: PREFIX, dir: await tmp.make('regcache-redirect'), log, probeMs: 60_000, refreshMs: 60_000 }));
    await store.putVerified(
      { kind: 'blob', digest: digestOf(publicBlob), size: publicBlob.length, mediaType: 'application/octet-stream' },
      publicBlob,
      from('library/public'),
    );
    await store.putVerified(
      { kind: 'blob', digest: digestOf(privateBlob), size: privateBlob.length, mediaType: 'application/octet-stream' },
      privateBlob,
      from('alice/private'),
    );
    await store.putVerified(
      { kind: 'manifest', digest: digestOf(manifest), size: manifest.length, mediaType: 'application/vnd.oci.image.manifest.v1+json' },
      manifest,
      from('library/public'),
    );
    const coordinator = new FillCoordinator(
      { store, room: new Room(store, 1e12), fills: new LocalFillTable(), redirect: (digest) => bucket.presign(store.layout.content(digest), 60) },
      log,
    );
    // The private blob: only a client with ALLOWED credentials may read it; upstream refuses the others.
    const access = {
      classifyAgain: () => undefined,
      authorises: async (_kind: string, digest: string, _ref: string, credentials: string | undefined) =>
        digest !== digestOf(privateBlob) || credentials === ALLOWED
          ? { granted: true }
          : { granted: false, reason: 'private content; upstream answered 401 for this client' },
    } as unknown as ContentAccess;
    const upstream: Upstream = {
      request: async (request) => {
        upstreamSaw.push(request);
        return {
          statusCode: 401,
          headers: { 'content-type': 'application/json', 'www-authenticate': 'Bearer realm="https://auth.test/token"' },
          body: Readable.from([Buffer.from('{"errors":[{"code":"UNAUTHORIZED"}]}')]),
          url: new URL(request.url),
        };
      },
    };
    const responder = new ContentResponder(coordinator, upstream, access);
    const accessLog = new AccessLog(log, metrics);
    server = http.createServer((req, res) => {
      const request = registryRequest({ origin: ORIGIN, target: req.url ?? '/', req, res }, accessLog.record(req, res, ORIGIN.host));
      const route = request.route;
      if (route.kind !== 'blob' && route.kind !== 'manifest-by-digest') return void res.writeHead(404).end();
      void responder.serve(request, route.kind === 'blob' ? 'blob' : 'manifest', route.digest).catch((err: Error) => res.writeHead(500).end(err.message));
    });
    server.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(async () => {
    server.closeAllConnections();
    server.close();
    await store.close();
    await tmp.cleanup();
  });

  const ask = async (method: string, path: string, headers: Record<string, string> = {}) => {
    const res = await fetch(base + path, { method, headers, redirect: 'manual' });
    return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  };
  /** The request line of the last request to `path`, once written (when the response closed). */
  const lineOf = async (method: string, path: string): Promise<Record<string, unknown>> => {
    for (let i = 0; i < 50; i++) {
      const found = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.msg === 'request' && l.method === method && l.path === path);
      if (found.length > 0) return found.at(-1)!;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    throw new Error(`no request line for ${method} ${path}`);
  };
  const blobPath = (repository: string, data: Buffer) => `/v2/${repository}/blobs/${digestOf(data)}`;

  it('answers a GET of a stored blob 307 to a presigned URL of its object, logged as a HIT with redirect, without the signature', async () => {
    const path = blobPath('library/public', publicBlob);
    const presigns = bucket.count('presign');
    const res = await ask('GET', path);
    assert.equal(res.status, 307);
    assert.equal(
      res.headers.get('location'),
      `http://fake-bucket.invalid/${store.layout.content(digestOf(publicBlob))}?X-Amz-Expires=60&X-Amz-Signature=${FAKE_SIGNATURE}`,
    );
    assert.equal(res.headers.get('docker-content-digest'), digestOf(publicBlob));
    assert.equal(res.headers.get('content-length'), '0');
    assert.equal(res.body.length, 0);
    assert.equal(bucket.count('presign'), presigns + 1);
    const line = await lineOf('GET', path);
    assert.equal(line.cache, 'HIT');
    assert.equal(line.redirect, true);
    assert.equal(line.status, 307);
    assert.equal(line.bytes, 0);
    assert.ok(!lines.some((l) => l.includes(FAKE_SIGNATURE) || l.includes('X-Amz-')), 'no presigned URL in any log line');
    assert.match(await metrics.registry.metrics(), /^regcache_redirects_total 1$/m);
    assert.equal(upstreamSaw.length, 0, 'nothing asked upstream');
  });

  it('redirects a ranged GET too (the bucket answers the Range)', async () => {
    const res = await ask('GET', blobPath('library/public', publicBlob), { range: 'bytes=0-99' });
    assert.equal(res.status, 307);
  });

  it('answers a HEAD of a stored blob itself', async () => {
    const path = blobPath('library/public', publicBlob);
    const res = await ask('HEAD', path);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-length'), String(publicBlob.length));
    assert.equal(res.headers.get('docker-content-digest'), digestOf(publicBlob));
    assert.equal(res.headers.get('location'), null);
    const line = await lineOf('HEAD', path);
    assert.equal(line.cache, 'HIT');
    assert.equal(line.redirect, undefined);
  });

  it('serves a manifest by digest itself, with its media type', async () => {
    const res = await ask('GET', `/v2/library/public/manifests/${digestOf(manifest)}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/vnd.oci.image.manifest.v1+json');
    assert.deepEqual(res.body, manifest);
  });

  it("refuses private content to a client upstream refuses, with upstream's answer and no URL minted", async () => {
    const path = blobPath('alice/private', privateBlob);
    const presigns = bucket.count('presign');
    const refused = await ask('GET', path);
    assert.equal(refused.status, 401);
    assert.equal(refused.headers.get('location'), null);
    assert.equal(bucket.count('presign'), presigns, 'no presigned URL for a refused client');
    const line = await lineOf('GET', path);
    assert.equal(line.cache, 'DENIED');
    assert.equal(line.redirect, undefined);
    const allowed = await ask('GET', path, { authorization: ALLOWED });
    assert.equal(allowed.status, 307);
    assert.equal(bucket.count('presign'), presigns + 1);
  });
});

describe('S3_REDIRECT configuration', () => {
  it('is off by default, with a 5 minute URL lifetime', () => {
    const config = loadConfig({ CACHE_STORE: 's3://regcache/cache' });
    assert.equal(config.s3.redirect, false);
    assert.equal(config.s3.redirectTtlMs, 300_000);
  });

  it('needs CACHE_STORE', () => {
    assert.throws(() => loadConfig({ S3_REDIRECT: 'true' }), /S3_REDIRECT="true" is not valid: expected false \(or unset\) without CACHE_STORE/);
    assert.equal(loadConfig({ S3_REDIRECT: 'false' }).s3.redirect, false);
    assert.equal(loadConfig({ CACHE_STORE: 's3://regcache/cache', S3_REDIRECT: 'true', S3_REDIRECT_TTL: '30s' }).s3.redirectTtlMs, 30_000);
  });

  it('takes a lifetime a presigned URL can have', () => {
    for (const ttl of ['8d', '1500ms', '0s']) assert.throws(() => loadConfig({ CACHE_STORE: 's3://regcache/cache', S3_REDIRECT_TTL: ttl }), /S3_REDIRECT_TTL/);
  });
});
