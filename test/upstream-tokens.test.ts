// tier: unit
// regcache's own token requests (the mirror, the access checks) carry AUTH_REGISTRIES credentials only to a
// token realm on the challenging registry's own domain: a registry names its realm, and a token minted with
// the credentials goes back to that registry (decision #133). In process: the real upstream client over TLS
// to one local server playing the registries and their realms (CONNECT_TO-style routes).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { parseDestination } from '../src/config/config.js';
import { createLogger } from '../src/telemetry/log.js';
import { DestinationPolicy } from '../src/upstream/destination-policy.js';
import { Dialer } from '../src/upstream/dialer.js';
import { UpstreamClient } from '../src/upstream/upstream-client.js';
import { realmMayHaveCredentials, UpstreamTokens } from '../src/upstream/upstream-tokens.js';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { createTestCA } from './harness/pki.js';
import { TmpDirs } from './harness/tmp.js';

describe('which token realm may have AUTH_REGISTRIES credentials', () => {
  it('the registry itself, a name under it, or its own domain when that is more than a top-level one and not shared between owners', () => {
    for (const [registry, realm] of [
      ['quay.io', 'quay.io'],
      ['quay.io', 'auth.quay.io'],
      ['registry-1.docker.io', 'auth.docker.io'],
      ['registry.gitlab.com', 'gitlab.com'],
      ['registry.example.co.uk', 'sso.example.co.uk'],
      ['company.azurecr.io', 'company.azurecr.io'],
      ['registry.gitlab.example.com', 'gitlab.example.com'],
      ['10.0.0.5', '10.0.0.5'],
    ]) {
      assert.ok(realmMayHaveCredentials(registry!, realm!), `${registry} -> ${realm}`);
    }
    for (const [registry, realm] of [
      ['quay.io', 'auth.docker.io'],
      ['quay.io', 'evil.io'],
      ['registry.test', 'auth.test'],
      ['ghcr.io', 'ghcr.io.evil.com'],
      ['registry-1.docker.io', 'docker.io.evil.com'],
      ['registry-1.docker.io', 'evildocker.io'],
      ['10.0.0.5', '10.0.0.6'],
      ['reg.10.0.0.5', '0.0.5'],
      // The registry's domain is shared between owners: another tenant's registry must not get this one's token.
      ['vendor.azurecr.io', 'company.azurecr.io'],
      ['vendor.jfrog.io', 'company.jfrog.io'],
      ['111.dkr.ecr.us-east-1.amazonaws.com', '222.dkr.ecr.us-east-1.amazonaws.com'],
      ['someone.github.io', 'github.io'],
      ['example.co.uk', 'evil.co.uk'],
      ['example.com.au', 'evil.com.au'],
    ]) {
      assert.ok(!realmMayHaveCredentials(registry!, realm!), `${registry} -> ${realm}`);
    }
  });
});

describe('token requests regcache makes for itself', () => {
  const tmp = new TmpDirs();
  let server: RunningServer;
  let upstream: UpstreamClient;
  const lines: Record<string, unknown>[] = [];
  const tokenAsks: { realm: string; authorization: string | undefined }[] = [];
  // Each registry's challenge names the realm this map gives it.
  const realmOf: Record<string, string> = { 'quay.io': 'auth.docker.io', 'registry-1.docker.io': 'auth.docker.io' };

  before(async () => {
    const dir = await tmp.make('regcache-upstream-tokens');
    const ca = await createTestCA(dir, 'tokens CA');
    const hosts = ['quay.io', 'registry-1.docker.io', 'auth.docker.io'];
    server = await listenHttps(await ca.issue(hosts, dir, 'hosts'), (req, res) => {
      const host = (req.headers.host ?? '').replace(/:\d+$/, '');
      if (req.url?.startsWith('/token')) {
        tokenAsks.push({ realm: host, authorization: req.headers.authorization });
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `minted-for-${host}` }));
      } else if (req.headers.authorization?.startsWith('Bearer ')) {
        res.writeHead(200).end('ok');
      } else {
        const challenge = `Bearer realm="https://${realmOf[host]}/token",service="svc",scope="repository:acme/private:pull"`;
        res.writeHead(401, { 'www-authenticate': challenge }).end();
      }
    });
    const policy = new DestinationPolicy({ allow: [parseDestination('127.0.0.1')!], deny: [] });
    const connectTo = hosts.map((host) => ({ host, port: 443, toHost: '127.0.0.1', toPort: server.port }));
    const dialer = new Dialer({ connectTo, upstreamProxy: null, noProxy: [], connectTimeoutMs: 2000, policy });
    upstream = new UpstreamClient({
      dialer,
      verifySsl: true,
      upstreamCaFile: ca.certFile,
      headersTimeoutMs: 2000,
      bodyTimeoutMs: 2000,
      credentials: [{ host: 'auth.docker.io', user: 'operator', password: 'hub-s3cret' }],
    });
  });

  after(async () => {
    await upstream?.close();
    await server?.close();
    await tmp.cleanup();
  });

  const log = createLogger('info', false, undefined, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });

  it("asks a realm on another registry's domain without the credentials, and says so once", async () => {
    const tokens = new UpstreamTokens(upstream, log);
    for (let i = 0; i < 2; i++) {
      const before = tokenAsks.length;
      const res = await tokens.request({ url: new URL(`https://quay.io/v2/acme/private/manifests/v${i}`), method: 'GET' });
      res.body.resume();
      assert.equal(res.statusCode, 200);
      assert.ok(tokenAsks.length <= before + 1);
      assert.ok(
        tokenAsks.slice(before).every((t) => t.realm === 'auth.docker.io' && t.authorization === undefined),
        JSON.stringify(tokenAsks),
      );
    }
    assert.ok(tokenAsks.length >= 1, 'a token was asked for');
    const said = lines.filter((l) => String(l.msg).startsWith('token realm not on the registry'));
    assert.equal(said.length, 1, JSON.stringify(lines));
    assert.equal(said[0]!.registry, 'quay.io');
    assert.equal(said[0]!.realm, 'auth.docker.io');
  });

  it("gives them to the registry's own realm (Docker Hub's auth.docker.io), and its token is not the anonymous one", async () => {
    const tokens = new UpstreamTokens(upstream, log);
    (await tokens.request({ url: new URL('https://quay.io/v2/acme/private/manifests/v1'), method: 'GET' })).body.resume();
    const before = tokenAsks.length;
    const res = await tokens.request({ url: new URL('https://registry-1.docker.io/v2/acme/private/manifests/v1'), method: 'GET' });
    res.body.resume();
    assert.equal(res.statusCode, 200);
    assert.equal(tokenAsks.length, before + 1, 'not the token cached for the anonymous ask');
    assert.equal(tokenAsks.at(-1)!.authorization, `Basic ${Buffer.from('operator:hub-s3cret').toString('base64')}`);
  });
});
