// tier: e2e
// regcache is not an open proxy into its host or its network (issue 12, item 1-2), tried as an attacker
// on the same network would: tunnels and plain-HTTP requests to local services, to regcache's own ports,
// to cloud metadata, to names that resolve to loopback, through a registry's redirect or token realm, on
// ports off TUNNEL_PORTS; closed ports that must not be told from open ones; clients off ALLOWED_CLIENTS.
// Real regcache processes, a real local service on another loopback address, a hostile HTTPS registry.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { listenHttps, type RunningServer } from './harness/https-server.js';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { run, waitFor } from './harness/proc.js';
import { startRegcache, type Regcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';
import { ProxyClient } from './support/proxy-client.js';

const ROOT = path.resolve(import.meta.dirname, '..');
import { connectTunnel, exchange, proxyExchange } from './support/raw-socket.js';

/** An internal service on 127.0.0.2 that counts every connection it ever gets. */
async function startInternalService(): Promise<{ port: number; connections: () => number; close(): Promise<void> }> {
  let connections = 0;
  const server = http.createServer((_req, res) => res.end('internal secret\n'));
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.2', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

const status = (reply: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(reply)?.[1] ?? 0);
const CONNECT = (authority: string) => `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`;
const ownAddresses = () =>
  Object.values(os.networkInterfaces())
    .flat()
    .filter((a) => a && !a.internal && a.family === 'IPv4')
    .map((a) => a!.address);

describe('destination policy, default settings', () => {
  const tmp = new TmpDirs();
  let internal: Awaited<ReturnType<typeof startInternalService>>;
  let evil: RunningServer;
  let proxy: Regcache;
  let adminPort: number;

  before(async () => {
    const root = await tmp.make('regcache-open-proxy');
    internal = await startInternalService();
    // An allowlisted registry gone hostile: it redirects blobs, and sends token clients, into the host.
    const ca = await createTestCA(path.join(root, 'ca'), 'hostile registry CA');
    const inside = `http://127.0.0.2:${internal.port}`;
    evil = await listenHttps(await ca.issue(['evil.test'], root, 'evil'), (req, res) => {
      if (req.url?.includes('/blobs/')) return void res.writeHead(307, { location: `${inside}/latest/meta-data/` }).end();
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${inside}/token",service="evil"`, 'content-type': 'application/json' }).end('{}');
    });
    proxy = await startRegcache({
      dir: path.join(root, 'proxy'),
      env: {
        TUNNEL_PORTS: '1-65535', // every port may be tunnelled: what is left to refuse is the destination policy's
        ADDITIONAL_REGISTRIES: 'evil.test',
        CONNECT_TO: `evil.test:443:127.0.0.1:${evil.port}`,
        UPSTREAM_CA_FILE: ca.certFile,
        MIRROR_PORT: String(await freePort()),
        ADMIN_PORT: String(await freePort()),
      },
    });
    adminPort = Number((await proxy.logs()).find((l) => l.msg === 'listening')!.adminPort);
  });

  after(async () => {
    await proxy?.stop();
    await evil?.close();
    await internal?.close();
    await tmp.cleanup();
  });

  // After every test, whichever ran (alone, or with a name pattern): no attempt reached the service.
  afterEach(() => assert.equal(internal.connections(), 0, 'the internal service saw a connection'));

  it('refuses tunnels into the host: another loopback address, IPv6 loopback, 0.0.0.0', async () => {
    // Also as names the resolver reads as numbers: 2130706434 and 127.2 are 127.0.0.2.
    for (const authority of [
      `127.0.0.2:${internal.port}`,
      `[::1]:${internal.port}`,
      `0.0.0.0:${internal.port}`,
      `[::ffff:127.0.0.2]:${internal.port}`,
      `2130706434:${internal.port}`,
      `127.2:${internal.port}`,
    ]) {
      const reply = await proxyExchange(proxy.port, CONNECT(authority));
      assert.equal(status(reply), 403, `${authority}: ${reply}`);
      assert.match(reply, /loopback|unspecified/);
    }
    await proxy.waitForLog((l) => l.msg === 'tunnel refused' && l.tunnel === `127.0.0.2:${internal.port}`, 'the refusal logged');
  });

  it("refuses tunnels to its own ports (no nesting), on loopback and on the host's own address", async () => {
    const own = [proxy.port, proxy.mirrorPort!, adminPort];
    const addresses = ['127.0.0.1', ...ownAddresses()];
    for (const address of addresses) {
      for (const port of own) assert.equal(status(await proxyExchange(proxy.port, CONNECT(`${address}:${port}`))), 403, `${address}:${port}`);
    }
    // A nested CONNECT can only be sent after an outer one succeeded: the outer one already is refused.
    assert.ok(addresses.length > 1, `this machine should have a non-loopback IPv4 address to try (${addresses.join(', ')})`);
  });

  it('refuses cloud metadata and other link-local addresses, without trying to connect', async () => {
    const reply = await proxyExchange(proxy.port, CONNECT('169.254.169.254:80'));
    assert.equal(status(reply), 403);
    assert.match(reply, /link-local/, 'refused by the policy, not a failed dial');
    const forward = await proxyExchange(
      proxy.port,
      'GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n',
    );
    assert.equal(status(forward), 403);
  });

  it('refuses a name that resolves to loopback, on the address it resolved to', async () => {
    const reply = await proxyExchange(proxy.port, CONNECT(`localhost:${internal.port}`));
    assert.equal(status(reply), 403);
    assert.match(reply, /localhost resolves to (127\.0\.0\.1|::1)/);
    const forward = await proxyExchange(proxy.port, `GET http://localhost:${internal.port}/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`);
    assert.equal(status(forward), 403);
  });

  it('refuses plain-HTTP requests to internal pages, GET and POST', async () => {
    const get = await proxyExchange(proxy.port, `GET http://127.0.0.2:${internal.port}/ HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n`);
    assert.equal(status(get), 403);
    assert.doesNotMatch(get, /internal secret/);
    const post = await proxyExchange(
      proxy.port,
      `POST http://127.0.0.2:${internal.port}/admin HTTP/1.1\r\nHost: 127.0.0.2\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello`,
    );
    assert.equal(status(post), 403);
  });

  it("follows no registry into the host: a fill's redirect and a token realm are refused", async () => {
    const client = new ProxyClient(proxy.proxyUrl, proxy.caFile);
    try {
      const blob = await client.fetch(`https://evil.test/v2/lib/app/blobs/sha256:${'a'.repeat(64)}`);
      assert.equal(blob.status, 403, blob.body.toString());
      assert.match(blob.body.toString(), /DENIED/);
    } finally {
      await client.close();
    }
    // The mirror fetches upstream tokens itself: the realm is a destination like any other.
    const mirrored = await fetch(`http://127.0.0.1:${proxy.mirrorPort}/v2/lib/app/manifests/v1?ns=evil.test`);
    assert.equal(mirrored.status, 403);
  });
});

describe('destination policy, operator choices', () => {
  const tmp = new TmpDirs();
  let internal: Awaited<ReturnType<typeof startInternalService>>;
  let other: Awaited<ReturnType<typeof startInternalService>>;
  let proxy: Regcache;
  let closed: number;

  before(async () => {
    const root = await tmp.make('regcache-destinations');
    internal = await startInternalService();
    other = await startInternalService();
    closed = await freePort();
    const port = await freePort();
    proxy = await startRegcache({
      dir: path.join(root, 'proxy'),
      env: {
        PORT: String(port),
        ALLOW_DESTINATIONS: '127.0.0.0/8',
        TUNNEL_PORTS: `443 ${internal.port} ${closed} ${port}`,
        ADDITIONAL_REGISTRIES: 'registry.test',
      },
    });
  });

  after(async () => {
    await proxy?.stop();
    await internal?.close();
    await other?.close();
    await tmp.cleanup();
  });

  it('tunnels to what ALLOW_DESTINATIONS lists, but never to itself', async () => {
    const tunnel = await connectTunnel(proxy.port, `127.0.0.2:${internal.port}`);
    assert.match(await exchange(tunnel, 'GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /internal secret/);
    const self = await proxyExchange(proxy.port, CONNECT(`127.0.0.1:${proxy.port}`));
    assert.equal(status(self), 403);
    assert.match(self, /own listener/);
  });

  it('refuses a tunnel to a port off TUNNEL_PORTS before dialing, and a forward off FORWARD_PORTS', async () => {
    const reply = await proxyExchange(proxy.port, CONNECT(`127.0.0.2:${other.port}`));
    assert.equal(status(reply), 403);
    assert.match(reply, /TUNNEL_PORTS/);
    assert.equal(other.connections(), 0);
    const smtp = await proxyExchange(proxy.port, 'POST http://127.0.0.2:25/ HTTP/1.1\r\nHost: 127.0.0.2\r\nContent-Length: 4\r\nConnection: close\r\n\r\nHELO');
    assert.equal(status(smtp), 403);
    assert.match(smtp, /FORWARD_PORTS/);
  });

  it('sends a forward whose path begins with // to the host it names, never to the authority in its path', async () => {
    // http://A//B/... is a path on A; resolved again against A's origin it would be a URL on B (another host
    // and port: past FORWARD_PORTS, logged as A).
    const before = other.connections();
    const smuggled = `127.0.0.2:${other.port}`;
    const reply = await proxyExchange(proxy.port, `GET http://127.0.0.2:${closed}//${smuggled}/ HTTP/1.1\r\nHost: 127.0.0.2\r\nConnection: close\r\n\r\n`);
    assert.equal(status(reply), 502, reply);
    assert.doesNotMatch(reply, /internal secret/);
    assert.equal(other.connections(), before, `no connection to ${smuggled}`);
    const line = await proxy.waitForLog((l) => l.msg === 'request' && l.path === `//${smuggled}/`, 'the request line');
    assert.equal(line.host, `127.0.0.2:${closed}`);
  });

  it('reads an allowlist entry without a port as 443: the same host on another port is not intercepted', async () => {
    assert.equal(status(await proxyExchange(proxy.port, CONNECT('registry.test:8443'))), 403, 'not intercepted, and 8443 is not a tunnel port');
  });

  it('tells a client nothing that separates a closed port from an open one', async () => {
    const tunnel = await proxyExchange(proxy.port, CONNECT(`127.0.0.1:${closed}`));
    assert.equal(status(tunnel), 502);
    const forward = await proxyExchange(proxy.port, `GET http://127.0.0.1:${closed}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`);
    assert.equal(status(forward), 502);
    for (const reply of [tunnel, forward]) assert.doesNotMatch(reply, /ECONNREFUSED|refused|127\.0\.0\.1/i);
    await proxy.waitForLog((l) => l.msg === 'tunnel failed' && /ECONNREFUSED/.test(String(l.error)), 'the cause, in the log only');
  });
});

describe('ALLOWED_CLIENTS', () => {
  const tmp = new TmpDirs();
  let proxy: Regcache;
  let adminPort: number;

  before(async () => {
    const root = await tmp.make('regcache-clients');
    proxy = await startRegcache({
      dir: path.join(root, 'proxy'),
      env: { ALLOWED_CLIENTS: '10.0.0.0/8', MIRROR_PORT: String(await freePort()), ADMIN_PORT: String(await freePort()) },
    });
    adminPort = Number((await proxy.logs()).find((l) => l.msg === 'listening')!.adminPort);
  });

  after(async () => {
    await proxy?.stop();
    await tmp.cleanup();
  });

  it('refuses a client off the list with 403 on every listener, before anything else runs', async () => {
    const before = (await proxy.logs()).filter((l) => l.msg === 'client refused (ALLOWED_CLIENTS)').length;
    assert.equal((await fetch(`http://127.0.0.1:${proxy.port}/`)).status, 403);
    assert.equal(status(await proxyExchange(proxy.port, CONNECT('registry-1.docker.io:443'))), 403);
    assert.equal(status(await proxyExchange(proxy.port, 'GET http://example.test/ HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n')), 403);
    assert.equal((await fetch(`http://127.0.0.1:${proxy.mirrorPort}/v2/`)).status, 403);
    assert.equal((await fetch(`http://127.0.0.1:${adminPort}/metrics`)).status, 403);
    const refused = async () => (await proxy.logs()).filter((l) => l.msg === 'client refused (ALLOWED_CLIENTS)');
    await waitFor(async () => (await refused()).length - before === 5, { timeoutMs: 5000, what: 'one refusal logged per request' });
    assert.ok((await refused()).every((l) => l.client === '::ffff:127.0.0.1' || l.client === '127.0.0.1'));
  });

  // A kubelet probes from its node's address, a balancer from its own, the image's HEALTHCHECK from inside
  // the container: none need be in ALLOWED_CLIENTS for the probes to pass (docs/security.md says why that is safe).
  it('answers /healthz, /readyz and /ca.crt to any address on PORT and ADMIN_PORT; the image HEALTHCHECK passes', async () => {
    for (const port of [proxy.port, adminPort]) {
      for (const target of ['/healthz', '/readyz', '/ca.crt', '/healthz?verbose=1']) {
        const res = await fetch(`http://127.0.0.1:${port}${target}`);
        assert.equal(res.status, 200, `${target} on ${port}: ${await res.text()}`);
      }
      assert.equal((await fetch(`http://127.0.0.1:${port}/ca.crt`, { method: 'HEAD' })).status, 200);
      for (const target of ['/', '/metrics', '/api/v1/cache', '/setup/containerd'])
        assert.equal((await fetch(`http://127.0.0.1:${port}${target}`)).status, 403, target);
      assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`, { method: 'POST' })).status, 403, 'only reads are open');
    }
    // The Dockerfile's HEALTHCHECK command as Docker runs it (exec form), with the image's PORT.
    const dockerfile = await readFile(path.join(ROOT, 'Dockerfile'), 'utf8');
    const command = JSON.parse(/^HEALTHCHECK .*\\\n\s*CMD (\[.*\])$/m.exec(dockerfile)![1]!) as string[];
    assert.equal(command[0], 'node');
    const check = await run(process.execPath, command.slice(1), { env: { PATH: process.env.PATH ?? '', PORT: String(proxy.port) } });
    assert.equal(check.code, 0, `the HEALTHCHECK failed: ${check.stderr}`);
  });
});
