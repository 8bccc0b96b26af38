// tier: e2e
// The local tier end to end (LOCAL_TIER_MAX_SIZE, decision #89): two regcache replicas (separate processes)
// on one bucket of a real Ceph RADOS Gateway started by the test; B keeps a local tier. A blob A fetched is
// a HIT on B twice: the first reads the bucket, the second makes no request for the content object at all
// (counted in radosgw's own request log, which the first HIT proves is being written), bytes identical.
// In process over an in-memory bucket: test/s3-local-tier.test.ts.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { startRegcache, type Regcache } from './harness/regcache.js';
import { startS3Server, type S3Server } from './harness/s3-server.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeRegistry, makeBlob } from './support/fake-registry.js';
import { get } from './support/plain-http.js';

const BUCKET = 'regcache-tier';
const PREFIX = 'cache/';
const MIB = 1024 * 1024;
const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');

describe('the local tier of a replica on an S3 bucket (Ceph RGW)', () => {
  const tmp = new TmpDirs();
  const registry = new FakeRegistry(); // tier.test
  let root: string;
  let s3: S3Server;
  let caFile: string;
  let a: Regcache;
  let b: Regcache;

  const startReplica = async (name: string, env: Record<string, string> = {}): Promise<Regcache> =>
    startRegcache({
      dir: path.join(root, name),
      caDir: path.join(root, 'ca'),
      env: {
        ...s3.env,
        CACHE_STORE: `s3://${BUCKET}/${PREFIX}`,
        ADDITIONAL_REGISTRIES: 'tier.test',
        MIRROR_PORT: String(await freePort()),
        UPSTREAM_CA_FILE: caFile,
        CONNECT_TO: `tier.test:443:127.0.0.1:${registry.port}`,
        ...env,
      },
    });

  /** Requests radosgw logged for one object (its request lines: method, path), e.g. `GET` of the content. */
  const gatewayRequests = async (method: string, key: string): Promise<number> => {
    const text = await readFile(s3.gatewayLogFile, 'utf8');
    return text.split('\n').filter((line) => line.includes(`"${method} /${BUCKET}/${PREFIX}${key}`)).length;
  };

  /**
   * Sends radosgw a request of its own and waits for its line in the log: the requests that ended before
   * it was sent are logged by then, so counting them is final (no waiting for a request that never comes).
   */
  const loggedMarker = async (): Promise<void> => {
    const key = `marker-${crypto.randomBytes(6).toString('hex')}`;
    const res = await fetch(`${s3.endpoint}/${BUCKET}/${PREFIX}${key}`, { method: 'HEAD' });
    await res.arrayBuffer();
    await waitFor(async () => (await gatewayRequests('HEAD', key)) > 0, { timeoutMs: 10_000, what: `radosgw to log HEAD ${key}` });
  };

  before(async () => {
    root = await tmp.make('regcache-s3-tier');
    s3 = await startS3Server();
    const ca = await createTestCA(path.join(root, 'upstream-ca'), 'tier test CA');
    caFile = ca.certFile;
    await registry.start(await ca.issue(['tier.test'], root, 'tier'));
    a = await startReplica('a');
    b = await startReplica('b', { LOCAL_TIER_MAX_SIZE: '64m' });
  });

  after(async () => {
    await a?.stop();
    await b?.stop();
    await s3?.stop();
    await registry.close();
    await tmp.cleanup();
  });

  it('a blob the other replica fetched: the first HIT here reads the bucket, the second makes no request for it', async () => {
    const blob = registry.add(makeBlob(12 * MIB, 'tier-hit'));
    const target = `/v2/lib/tier/blobs/${blob.digest}?ns=tier.test`;
    const key = `content/sha256/${blob.digest.slice('sha256:'.length)}`;
    const cold = await get(a.mirrorPort!, target);
    assert.ok(cold.status === 200 && cold.complete && sha256(cold.body) === blob.digest, `cold: ${cold.status}`);
    await a.waitForLog((l) => l.msg === 'fill committed' && l.digest === blob.digest, 'the fill to commit');

    const before = await gatewayRequests('GET', key);
    const first = await get(b.mirrorPort!, target);
    assert.ok(first.status === 200 && first.complete && first.body.equals(blob.data), `first HIT: ${first.status}`);
    // The control: radosgw logged B's read of the content (the log is written, and read right).
    await waitFor(async () => (await gatewayRequests('GET', key)) > before, { timeoutMs: 10_000, what: "the first HIT's GET in the gateway's log" });
    const afterFirst = await gatewayRequests('GET', key);
    await loggedMarker(); // and nothing more of the first HIT comes after this
    const heads = await gatewayRequests('HEAD', key);

    const second = await get(b.mirrorPort!, target);
    assert.ok(second.status === 200 && second.complete && second.body.equals(blob.data), `second HIT: ${second.status}`);
    assert.ok(second.body.equals(first.body), 'bytes identical');
    await loggedMarker(); // a request of the second HIT would have been logged before this one
    assert.equal(await gatewayRequests('GET', key), afterFirst, 'no GET of the content for the second HIT');
    assert.equal(await gatewayRequests('HEAD', key), heads, 'no HEAD either');
    const lines = (await b.requests()).filter((l) => l.digest === blob.digest);
    assert.deepEqual(
      lines.map((l) => l.cache),
      ['HIT', 'HIT'],
    );
    assert.equal(registry.count('GET', `/blobs/${blob.digest}`), 1, 'one upstream GET');
  });
});
