// tier: unit
// Upstream TLS is verified against the system roots plus UPSTREAM_CA_FILE; VERIFY_SSL=false is the
// explicit, logged way out.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createTestCA } from './harness/pki.js';
import { TmpDirs } from './harness/tmp.js';
import { startInProcessRegcache, type InProcessRegcache } from './support/in-process-regcache.js';
import { FakeRegistry, makeBlob } from './support/fake-registry.js';
import { ProxyClient } from './support/proxy-client.js';

describe('upstream certificate verification', () => {
  const tmp = new TmpDirs();
  const upstream = new FakeRegistry();
  const running: { proxy: InProcessRegcache; client: ProxyClient }[] = [];
  const blob = makeBlob(10_000, 'tls');
  let dir: string;

  const start = async (name: string, env: Record<string, string>) => {
    const proxy = await startInProcessRegcache({
      dir: `${dir}/${name}`,
      env: { ADDITIONAL_REGISTRIES: 'registry.test', CONNECT_TO: `registry.test:443:127.0.0.1:${upstream.port}`, ...env },
    });
    const client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    running.push({ proxy, client });
    return { proxy, client };
  };

  before(async () => {
    dir = await tmp.make('regcache-upstream-tls');
    const ca = await createTestCA(dir, 'untrusted CA'); // in no trust store regcache reads by default
    await upstream.start(await ca.issue(['registry.test'], dir, 'upstream'));
    upstream.add(blob);
  });

  after(async () => {
    for (const { proxy, client } of running) {
      await client.close();
      await proxy.stop();
    }
    await upstream.close();
    await tmp.cleanup();
  });

  it('refuses an upstream whose certificate it cannot verify with 502, and caches nothing', async () => {
    const { proxy, client } = await start('strict', {});
    const res = await client.fetch(`https://registry.test/v2/lib/app/blobs/${blob.digest}`);
    assert.equal(res.status, 502);
    assert.equal(upstream.count('GET', blob.digest), 0);
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.digest === blob.digest, 'the request line');
    assert.match(String(line.error), /certificate|verify|issuer/i);
  });

  it('accepts it with VERIFY_SSL=false, after a startup warning', async () => {
    const { proxy, client } = await start('lax', { VERIFY_SSL: 'false' });
    await proxy.waitForLog((l) => l.level === 'warn' && /VERIFY_SSL=false/.test(l.msg), 'the startup warning');
    const res = await client.fetch(`https://registry.test/v2/lib/app/blobs/${blob.digest}`);
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(blob.data));
  });
});
