// tier: e2e
// One blob pulled through the proxy (CONNECT, intercepted) and the mirror (MIRROR_PORT, ?ns=) at the same
// moment, from the same origin: the doors share the store's fill coordinator, so the real docker-registry
// behind them serves one blob GET, and both clients get the verified bytes.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { makeImage, pushImage, type Image } from './harness/images.js';
import { freePort } from './harness/ports.js';
import { waitFor } from './harness/proc.js';
import { requestLines, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { ProxyClient } from './support/proxy-client.js';
import { startProxyFor, startUpstream, type Upstream } from './support/upstream-fixture.js';

const sha256 = (data: Buffer): string => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');

describe('one fill behind every door', () => {
  const tmp = new TmpDirs();
  let upstream: Upstream;
  let proxy: Regcache;
  let client: ProxyClient;
  let image: Image;

  before(async () => {
    const root = await tmp.make('regcache-shared-fill');
    upstream = await startUpstream(path.join(root, 'upstream'), ['registry.test'], ['shared-small']);
    // Large enough that the second request arrives while the first one's fill is still running.
    image = await makeImage(path.join(root, 'image'), { layers: [{ size: 64 * 1024 * 1024, seed: 'shared-fill' }], gzipLevel: 0 });
    await pushImage(upstream.registry.url, 'lib/big', 'v1', image, { caFile: upstream.ca.certFile });
    proxy = await startProxyFor(upstream, {
      dir: path.join(root, 'proxy'),
      env: { ADDITIONAL_REGISTRIES: 'registry.test', MIRROR_PORT: String(await freePort()) },
      routes: { 'registry.test': upstream.registry.port },
    });
    client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
  });

  after(async () => {
    await client?.close();
    await proxy?.stop();
    await upstream?.registry.stop();
    await tmp.cleanup();
  });

  it('makes one upstream GET when the proxy and the mirror pull the same blob at once', async () => {
    const digest = image.layers[0]!.digest;
    const throughMirror = async (): Promise<Buffer> => {
      const res = await request(`http://127.0.0.1:${proxy.mirrorPort}/v2/lib/big/blobs/${digest}?ns=registry.test`);
      assert.equal(res.statusCode, 200, 'mirror');
      return Buffer.from(await res.body.arrayBuffer());
    };
    const throughProxy = async (): Promise<Buffer> => {
      const res = await client.fetch(`https://registry.test/v2/lib/big/blobs/${digest}`);
      assert.equal(res.status, 200, 'proxy');
      return res.body;
    };
    const [viaMirror, viaProxy] = await Promise.all([throughMirror(), throughProxy()]);
    assert.equal(sha256(viaMirror), digest);
    assert.equal(sha256(viaProxy), digest);

    const lines = await requestLines(proxy, (l) => l.digest === digest && l.kind === 'blob', 2);
    assert.equal(lines.length, 2, JSON.stringify(lines));
    assert.equal(lines.filter((l) => l.coalesced === true).length, 1, `one request joined the other's fill: ${JSON.stringify(lines)}`);
    await proxy.waitForLog((l) => l.msg === 'fill committed' && l.digest === digest, 'the fill committed');
    await waitFor(async () => (await upstream.registry.countBlobGets(digest)) >= 1, { timeoutMs: 5000, what: "the registry's access log line" });
    assert.equal(await upstream.registry.countBlobGets(digest), 1, 'one blob GET upstream');
  });
});
