// Assembles a running proxy from a Config: CA, store, upstream client, handlers, listener.
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import { handleAdmin } from './admin/admin-routes.js';
import { ContentStore } from './cache/content-store.js';
import { describeConfig, type Config } from './config.js';
import type { Logger } from './log.js';
import { Allowlist } from './registry/allowlist.js';
import { ContentResponder } from './registry/content-responder.js';
import { RegistryHandler } from './registry/registry-handler.js';
import { createProxyServers } from './server/proxy-server.js';
import { TlsInterceptor } from './server/tls-interceptor.js';
import { Tunnels } from './server/tunnel.js';
import { loadOrCreateCa } from './tls/certificate-authority.js';
import { LeafCertificates } from './tls/leaf-certificates.js';
import { Dialer } from './upstream/dialer.js';
import { UpstreamClient } from './upstream/upstream-client.js';
import { VERSION } from './version.js';

export interface RunningProxy {
  port: number;
  close(): Promise<void>;
}

export async function startProxy(config: Config, log: Logger): Promise<RunningProxy> {
  const { ca, created } = await loadOrCreateCa(config.caDir);
  log.info({ caCert: ca.certFile, created }, created ? 'created a new CA: clients must trust it' : 'loaded CA');
  if (!config.verifySsl) log.warn('VERIFY_SSL=false: upstream certificates are NOT verified');
  const [leaves, store] = await Promise.all([LeafCertificates.create(ca), openStore(config.cacheDir)]);

  const dialer = new Dialer({
    connectTo: config.connectTo,
    upstreamProxy: config.upstreamProxy,
    noProxy: config.noProxy,
    connectTimeoutMs: 10_000,
  });
  const upstream = new UpstreamClient({
    dialer,
    verifySsl: config.verifySsl,
    upstreamCaFile: config.upstreamCaFile,
    headersTimeoutMs: 60_000,
    bodyTimeoutMs: 60_000,
  });
  const content = new ContentResponder(store, upstream, log);
  const registry = new RegistryHandler({ log, store, upstream, content, allowPush: config.allowPush });
  const { server, intercepted } = createProxyServers({
    log,
    allowlist: new Allowlist(config.registries),
    registry,
    upstream,
    tunnels: new Tunnels(dialer, log),
    interceptor: (s) => new TlsInterceptor(leaves, s, log),
    admin: (req, res) => handleAdmin({ log, caCertPem: ca.certPem, version: VERSION }, req, res),
  });

  await listen(server, config.port, config.disableIpv6);
  const port = (server.address() as AddressInfo).port;
  log.info({ port, version: VERSION, config: describeConfig(config) }, 'listening');
  return {
    port,
    async close() {
      await Promise.all([closeServer(server), closeServer(intercepted)]);
      await upstream.close();
    },
  };
}

async function openStore(dir: string): Promise<ContentStore> {
  const store = new ContentStore(dir);
  await store.init();
  return store;
}

/** Dual-stack on "::" unless IPv6 is disabled or missing, then 0.0.0.0. */
function listen(server: http.Server, port: number, disableIpv6: boolean): Promise<void> {
  const attempt = (host: string) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host, ipv6Only: false }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  if (disableIpv6) return attempt('0.0.0.0');
  return attempt('::').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL') return attempt('0.0.0.0');
    throw err;
  });
}

function closeServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
}
