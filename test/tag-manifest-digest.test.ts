// tier: unit
// A manifest by tag whose Docker-Content-Digest disagrees with its bytes is passed to the client but never
// stored (issue 20: storing it anyway went unnoticed). In process: a regcache routed to a FakeRegistry that
// answers a tag with one manifest and names another digest; the whole log captured.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';
import { startProxy, type RunningProxy } from '../src/assembly/proxy.js';
import { loadConfig } from '../src/config/config.js';
import type { Logger } from '../src/telemetry/log.js';
import { waitFor } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';
import { FakeUpstream } from './support/fake-upstream.js';
import { ProxyClient } from './support/proxy-client.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

describe('a manifest whose digest header disagrees with its bytes', () => {
  const tmp = new TmpDirs();
  const fake = new FakeUpstream();
  const records: Record<string, unknown>[] = [];
  let proxy: RunningProxy;
  let client: ProxyClient;
  let root: string;

  const data = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: {}, layers: [] }));
  const real = 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
  const named = 'sha256:' + crypto.createHash('sha256').update('another manifest').digest('hex');

  before(async () => {
    root = await tmp.make('regcache-manifest-digest');
    await fake.start(root, 'manifest-digest');
    fake.upstream.tags.set('lib/app:v1', { digest: named, data, mediaType: OCI_MANIFEST }); // the header names `named`
    fake.upstream.add({ digest: real, data, mediaType: OCI_MANIFEST }); // by its own digest, served as it is
    const log = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, done) => (records.push(JSON.parse(chunk.toString())), done()) }));
    const env = { ...fake.env, PORT: '0', MIRROR_PORT: '0', CA_DIR: path.join(root, 'certs'), CACHE_DIR: path.join(root, 'cache') };
    proxy = await startProxy(loadConfig(env), log as Logger);
    client = new ProxyClient(`http://127.0.0.1:${proxy.port}`, path.join(root, 'certs', 'ca.crt'));
  });
  after(async () => {
    await client?.close();
    await proxy?.close(0);
    await fake.upstream.close();
    await tmp.cleanup();
  });

  it('passes it through, logs the mismatch, and stores nothing: a GET by its digest goes upstream', async () => {
    const byTag = await client.fetch('https://registry.test/v2/lib/app/manifests/v1', { headers: { accept: OCI_MANIFEST } });
    assert.equal(byTag.status, 200);
    assert.ok(byTag.body.equals(data));
    await waitFor(async () => records.some((r) => r.msg === 'upstream manifest does not match its Docker-Content-Digest; not stored' && r.claimed === named), {
      timeoutMs: 5000,
      what: 'the mismatch logged',
    });
    assert.ok(!records.some((r) => r.digest === real && r.msg === 'fill committed'), 'never committed');
    // Fetched by its own digest it is stored (its bytes hash to it): the first GET must still go upstream.
    const byDigest = await client.fetch(`https://registry.test/v2/lib/app/manifests/${real}`, { headers: { accept: OCI_MANIFEST } });
    assert.equal(byDigest.status, 200);
    assert.equal(fake.upstream.count('GET', `/manifests/${real}`), 1, 'the GET by digest went upstream: nothing was stored under it');
  });
});
