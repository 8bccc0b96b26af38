// Assembles a running proxy from a Config: CA, store, upstream client, handlers, listener.
import { createServer, type Server } from 'node:http';
import fs from 'node:fs/promises';
import type net from 'node:net';
import type tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'undici';
import { handleAdmin } from './admin/admin-routes.js';
import { listenControl } from './admin/control-socket.js';
import { PORTS_COMMAND, type ServerPorts } from './admin/server-ports.js';
import { loadDoors } from './auth/doors.js';
import { PasswordGuard } from './auth/password-guard.js';
import { CacheAdmin } from './cache/cache-admin.js';
import { LocalStore } from './cache/local-store.js';
import { Evictor } from './cache/eviction.js';
import { FillCoordinator } from './cache/fill-coordinator.js';
import type { Fill } from './cache/fill.js';
import { AccessLog } from './access-log.js';
import { describeConfig, type Config } from './config.js';
import { Metrics } from './metrics.js';
import { checkStartup, listenError } from './startup-checks.js';
import type { Logger } from './log.js';
import { Allowlist } from './registry/allowlist.js';
import { ContentAccess } from './registry/content-access.js';
import { ContentResponder } from './registry/content-responder.js';
import { RegistryHandler } from './registry/registry-handler.js';
import { AllowedClients, CLIENT_REFUSED } from './server/allowed-clients.js';
import { createMirrorServer } from './server/mirror-server.js';
import { createProxyServers } from './server/proxy-server.js';
import { TlsInterceptor } from './server/tls-interceptor.js';
import { Tunnels } from './server/tunnel.js';
import { loadOrCreateCa } from './tls/certificate-authority.js';
import { LeafCertificates } from './tls/leaf-certificates.js';
import { DestinationPolicy } from './upstream/destination-policy.js';
import { Dialer } from './upstream/dialer.js';
import { UpstreamClient } from './upstream/upstream-client.js';
import { TokenUpstream, UpstreamTokens } from './upstream/upstream-tokens.js';
import { VERSION } from './version.js';

export interface RunningProxy {
  port: number;
  /** Stops accepting, lets requests in progress finish for up to graceMs, then ends every connection. */
  close(graceMs?: number): Promise<void>;
}

// Under Docker's default 10 s stop timeout, with room to exit cleanly.
const SHUTDOWN_GRACE_MS = 8_000;
const CA_EXPIRY_WARNING_MS = 30 * 86_400_000;

export async function startProxy(config: Config, log: Logger): Promise<RunningProxy> {
  // This proxy's own counters: another proxy in the same process (tests) counts apart.
  const metrics = new Metrics();
  const accessLog = new AccessLog(log, metrics);
  // Every door's credential checks share one guard: one bcrypt worker, one throttle per client address.
  const guard = new PasswordGuard({ log, metrics });
  const { doors, warnings } = loadDoors(config, guard);
  for (const warning of warnings) log.warn(warning);
  await checkStartup(config); // before a CA is created, the spool wiped or a port bound
  const { ca, created } = await loadOrCreateCa(config.caDir);
  log.info({ caCert: ca.certFile, created }, created ? 'created a new CA: clients must trust it' : 'loaded CA');
  if (ca.notAfter.getTime() - Date.now() < CA_EXPIRY_WARNING_MS) {
    log.warn({ caCert: ca.certFile, notAfter: ca.notAfter.toISOString() }, 'the CA expires soon: replace it and have clients trust the new one');
  }
  if (!config.verifySsl) log.warn('VERIFY_SSL=false: upstream certificates are NOT verified');
  // The control socket claims CACHE_DIR before the store touches it (opening wipes the spool).
  let cacheAdmin: CacheAdmin | null = null;
  let ports: ServerPorts | null = null; // once every listener listens
  const control = await listenControl(config.cacheDir, (request) => {
    if (request.cmd === PORTS_COMMAND) return ports ? Promise.resolve(ports) : Promise.reject(new Error('the server is still starting'));
    if (!cacheAdmin) throw new Error('the store is still opening');
    return cacheAdmin.run(request.cmd, request.args);
  });
  const [leaves, store] = await Promise.all([LeafCertificates.create(ca), LocalStore.open(config.cacheDir)]);
  leaves.warmUp();
  cacheAdmin = new CacheAdmin(store, config.cacheMaxSize);
  const evictor = new Evictor(store, { maxBytes: config.cacheMaxSize, inactiveMs: config.cacheInactiveMs }, log);
  evictor.on('evicted', (reason: string, entries: number) => metrics.evicted(reason, entries));
  evictor.start();
  // One coordinator for the store, shared by the proxy and the mirror: one upstream fill per origin and digest.
  const coordinator = new FillCoordinator(store, evictor, log);
  coordinator.on('fill-started', () => metrics.fillStarted());
  coordinator.on('fill-joined', () => metrics.joined());
  coordinator.on('fill-settled', (fill: Fill) => {
    if (fill.error && fill.error.reason !== 'store') metrics.upstreamError(fill.error.reason);
  });
  log.info({ entries: store.index.size, bytes: store.index.totalBytes, maxBytes: config.cacheMaxSize }, 'cache opened');

  const destinations = new DestinationPolicy({ allow: config.allowDestinations, deny: config.denyDestinations });
  warnAboutRefusedRegistries(config, destinations, log);
  const clients = new AllowedClients(config.allowedClients);
  const dialer = new Dialer({
    connectTo: config.connectTo,
    upstreamProxy: config.upstreamProxy,
    noProxy: config.noProxy,
    connectTimeoutMs: config.timeouts.connectMs,
    policy: destinations,
  });
  const upstream = new UpstreamClient({
    dialer,
    verifySsl: config.verifySsl,
    upstreamCaFile: config.upstreamCaFile,
    headersTimeoutMs: config.timeouts.headersMs,
    bodyTimeoutMs: config.timeouts.idleMs,
    credentials: config.authRegistries,
  });
  const tagPolicy = { serveStale: config.serveStale, manifestCache: config.manifestCache };
  const tokens = new UpstreamTokens(upstream);
  const access = new ContentAccess(store, upstream, tokens, log);
  access.start();
  const contentOptions = { verifyOnRead: config.verifyOnRead };
  const content = new ContentResponder(coordinator, upstream, access, contentOptions);
  const registry = new RegistryHandler({
    log,
    accessLog,
    coordinator,
    upstream,
    content,
    allowPush: config.allowPush,
    tagPolicy,
  });
  const tunnels = new Tunnels(dialer, log);
  const allowlist = new Allowlist(config.registries);
  let ready = false;
  let mirror: Server | null = null;
  const adminDeps = {
    log,
    accessLog,
    caCertPem: ca.certPem,
    version: VERSION,
    cacheDir: config.cacheDir,
    index: store.index,
    metrics,
    ready: () => ready,
    diskFull: () => evictor.diskFull(),
    mirrorPort: () => (mirror ? (mirror.address() as AddressInfo).port : null),
    registries: config.registries,
    auth: doors.admin,
    proxyAuth: doors.proxy,
    mirrorAuth: doors.mirror,
  };
  metrics.watch({
    fillsInFlight: () => coordinator.fillsInFlight,
    storeBytes: () => store.index.totalBytes,
    storeEntries: () => store.index.size,
    leavesMinted: () => leaves.minted,
    tunnelsOpen: () => tunnels.active,
  });
  const { server, intercepted } = createProxyServers({
    log,
    accessLog,
    allowlist,
    registry,
    upstream,
    tunnels,
    interceptor: (s) => new TlsInterceptor(leaves, s, log, config.clientHeadersTimeoutMs),
    admin: (req, res) => void handleAdmin(adminDeps, req, res),
    proxyAuth: doors.proxy,
    headersTimeoutMs: config.clientHeadersTimeoutMs,
    clients,
    tunnelPorts: config.tunnelPorts,
    forwardPorts: config.forwardPorts,
  });

  // Every client connection, whatever it became (HTTP, intercepted TLS, tunnel): shutdown ends them all.
  const connections = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
  };
  server.on('connection', track);

  // The registry mirror: same store and policies, but upstream requests go out as regcache itself.
  if (config.mirrorPort !== 0) {
    const asRegcache = new TokenUpstream(tokens);
    const mirrorContent = new ContentResponder(coordinator, asRegcache, new ContentAccess(store, asRegcache, tokens, log), contentOptions);
    const mirrorDeps = {
      log,
      accessLog,
      allowlist,
      registry: new RegistryHandler({ log, accessLog, coordinator, upstream: asRegcache, content: mirrorContent, allowPush: false, tagPolicy }),
      index: store.index,
      registryDomain: config.registryDomain,
      auth: doors.mirror,
      adminAuth: doors.admin,
      guard,
      headersTimeoutMs: config.clientHeadersTimeoutMs,
      clients,
    };
    mirror = createMirrorServer(mirrorDeps, await mirrorTls(config, leaves));
    mirror.on('connection', track);
    await listen(mirror, 'MIRROR_PORT', config.mirrorPort, config.disableIpv6);
    destinations.listeningPorts.add((mirror.address() as AddressInfo).port);
    mirror.on('error', (err: NodeJS.ErrnoException) => log.error({ error: err.message, code: err.code }, 'mirror listener error'));
  }

  // ADMIN_PORT: the admin endpoints on a port of their own as well (e.g. for a metrics scraper).
  let admin: Server | null = null;
  if (config.adminPort !== 0) {
    admin = createServer((req, res) => {
      if (clients.admits(req, log, 'admin')) void handleAdmin(adminDeps, req, res);
      else res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8' }).end(`regcache: ${CLIENT_REFUSED}\n`);
    });
    admin.on('connection', track);
    await listen(admin, 'ADMIN_PORT', config.adminPort, config.disableIpv6);
    destinations.listeningPorts.add((admin.address() as AddressInfo).port);
  }

  await listen(server, 'PORT', config.port, config.disableIpv6);
  // After listen, an accept failure (EMFILE) must be logged, not crash the process.
  server.on('error', (err: NodeJS.ErrnoException) => log.error({ error: err.message, code: err.code }, 'listener error'));
  const port = (server.address() as AddressInfo).port;
  destinations.listeningPorts.add(port);
  await warmUp(port, log);
  ready = true;
  const adminPort = admin ? (admin.address() as AddressInfo).port : null;
  const mirrorPort = adminDeps.mirrorPort();
  ports = { proxy: port, mirror: mirrorPort === null ? null : { port: mirrorPort, tls: config.mirrorTls !== null || config.mirrorHostname !== null }, admin: adminPort };
  log.info({ port, mirrorPort: adminDeps.mirrorPort(), adminPort, version: VERSION, config: describeConfig(config) }, 'listening');
  return {
    port,
    async close(graceMs = SHUTDOWN_GRACE_MS) {
      ready = false;
      server.close(); // no new connections
      mirror?.close();
      admin?.close();
      // Requests in progress may finish; connections that fall idle are closed as they do.
      const deadline = Date.now() + graceMs;
      while (connections.size > 0 && Date.now() < deadline) {
        server.closeIdleConnections();
        intercepted.closeIdleConnections();
        mirror?.closeIdleConnections();
        admin?.closeIdleConnections();
        await sleep(50);
      }
      for (const socket of connections) socket.destroy();
      await upstream.close();
      await new Promise((resolve) => control.close(resolve));
      await evictor.stop();
      await store.close();
      await guard.close();
    },
  };
}

/**
 * An allowlisted registry that is itself a refused destination (REGISTRIES=localhost:5000) would fail on
 * every fill with a 403: say so at startup, naming the fix, unless CONNECT_TO routes it.
 */
function warnAboutRefusedRegistries(config: Config, destinations: DestinationPolicy, log: Logger): void {
  for (const entry of config.registries) {
    const m = /^([^*:][^:]*)(?::(\d+))?$/.exec(entry);
    if (!m) continue;
    const [, host = '', port = '443'] = m;
    if (config.connectTo.some((rule) => (rule.host === '' || rule.host === host) && (rule.port === null || rule.port === Number(port)))) continue;
    const reason = destinations.refusalOfName(host, Number(port));
    if (reason) log.warn({ registry: entry, reason }, 'an allowlisted registry is a refused destination: list it in ALLOW_DESTINATIONS to reach it');
  }
}

/** Dual-stack on "::" unless IPv6 is disabled or missing, then 0.0.0.0; a failure names its variable. */
async function listen(server: Server, variable: string, port: number, disableIpv6: boolean): Promise<void> {
  try {
    await bind(server, port, disableIpv6);
  } catch (err) {
    throw listenError(variable, port, err as NodeJS.ErrnoException);
  }
}

function bind(server: Server, port: number, disableIpv6: boolean): Promise<void> {
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

/**
 * One request to our own status page before announcing 'listening': undici compiles its HTTP parser
 * (WebAssembly) on its first connection, and that should not land on a user's first pull.
 */
async function warmUp(port: number, log: Logger): Promise<void> {
  const client = new Client(`http://127.0.0.1:${port}`);
  try {
    const res = await client.request({ method: 'GET', path: '/' });
    await res.body.dump();
  } catch (err) {
    log.debug({ error: (err as Error).message }, 'warm-up request failed (harmless: only the first request is slower)');
  } finally {
    await client.close();
  }
}

/** The mirror's certificate: files (MIRROR_TLS_CERT/KEY), or minted from our CA for MIRROR_HOSTNAME. */
async function mirrorTls(config: Config, leaves: LeafCertificates): Promise<{ cert: string; key: string; SNICallback?: tls.TlsOptions['SNICallback'] } | undefined> {
  if (config.mirrorTls) {
    const [cert, key] = await Promise.all([fs.readFile(config.mirrorTls.certFile, 'utf8'), fs.readFile(config.mirrorTls.keyFile, 'utf8')]);
    return { cert, key };
  }
  if (config.mirrorHostname) {
    const hostname = config.mirrorHostname;
    // The default certificate serves clients without SNI; SNI clients get a context that is renewed.
    return { ...leaves.pemFor(hostname), SNICallback: (_name, callback) => callback(null, leaves.contextFor(hostname)) };
  }
  return undefined;
}
