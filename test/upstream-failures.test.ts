// tier: unit
// An upstream request that gets no answer fails with a typed cause, set where the failure happens (the
// destination policy, the TLS handshake, undici's head timeout), not read out of its message. In-process.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseDestination } from '../src/config/config.js';
import { DestinationPolicy } from '../src/upstream/destination-policy.js';
import { Dialer } from '../src/upstream/dialer.js';
import { UpstreamClient } from '../src/upstream/upstream-client.js';
import { UpstreamFailure } from '../src/upstream/upstream-failure.js';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { createTestCA } from './harness/pki.js';
import { TmpDirs } from './harness/tmp.js';

describe('upstream failures are typed where they happen', () => {
  const tmp = new TmpDirs();
  let hanging: RunningServer;
  let trusted: string;
  const clients: UpstreamClient[] = [];

  const client = (opts: { allowLoopback: boolean; caFile: string | null }) => {
    const policy = new DestinationPolicy({ allow: opts.allowLoopback ? [parseDestination('127.0.0.1')!] : [], deny: [] });
    const dialer = new Dialer({ connectTo: [], upstreamProxy: null, noProxy: [], connectTimeoutMs: 2000, policy });
    const c = new UpstreamClient({ dialer, verifySsl: true, upstreamCaFile: opts.caFile, headersTimeoutMs: 300, bodyTimeoutMs: 1000 });
    clients.push(c);
    return c;
  };
  const failure = async (promise: Promise<unknown>): Promise<UpstreamFailure> => {
    const err = await promise.then(
      () => null,
      (e: unknown) => e,
    );
    assert.ok(err instanceof UpstreamFailure, `an UpstreamFailure, got ${String(err)}`);
    return err;
  };

  before(async () => {
    const dir = await tmp.make('regcache-upstream-failures');
    const ca = await createTestCA(dir, 'failures CA');
    trusted = ca.certFile;
    hanging = await listenHttps(await ca.issue(['127.0.0.1'], dir, 'hanging'), () => new Promise(() => undefined)); // never answers
  });
  after(async () => {
    for (const c of clients) await c.close();
    await hanging.close();
    await tmp.cleanup();
  });

  it('refused: a destination the policy does not connect to', async () => {
    const f = await failure(
      client({ allowLoopback: false, caFile: trusted }).request({ url: new URL(`https://127.0.0.1:${hanging.port}/v2/`), method: 'GET' }),
    );
    assert.equal(f.failure, 'refused');
    assert.match(f.message, /does not connect to 127\.0\.0\.1/);
  });

  it('tls: a certificate regcache does not trust', async () => {
    const f = await failure(client({ allowLoopback: true, caFile: null }).request({ url: new URL(`https://127.0.0.1:${hanging.port}/v2/`), method: 'GET' }));
    assert.equal(f.failure, 'tls');
  });

  it('timeout: no response head in time', async () => {
    const f = await failure(client({ allowLoopback: true, caFile: trusted }).request({ url: new URL(`https://127.0.0.1:${hanging.port}/v2/`), method: 'GET' }));
    assert.equal(f.failure, 'timeout');
    assert.equal(f.code, 'UND_ERR_HEADERS_TIMEOUT');
  });
});
