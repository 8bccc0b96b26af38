// Assembles a running proxy from a Config: CA, store, upstream client, handlers, listeners. startProxy is
// the one process (WORKERS=1); serveProxy is what every process that serves runs, that one or a worker
// (worker.ts) over the primary's store: the same code whichever store's backend it is given
// (store-owner.ts picks it).
import { createServer, type Server } from 'node:http';
import fs from 'node:fs/promises';
import type net from 'node:net';
import type tls from 'node:tls';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client } from 'undici';
import { cacheListing, handleAdmin, localHealth, openToAnyone, type HealthReport, type Listing } from '../admin/admin-routes.js';
import type { ServerPorts } from '../admin/server-ports.js';
import { loadDoors, type Doors } from '../auth/doors.js';
import { PasswordGuard } from '../auth/password-guard.js';
import type { Backend } from '../cache/backend.js';
import { FillCoordinator } from '../cache/fill-coordinator.js';
import type { Fill } from '../cache/fill.js';
import type { FillKey } from '../cache/fill-table.js';
import type { Provenance } from '../cache/content-store.js';
import type { ListingViewer } from '../cache/tag-listing.js';
import { TrustedFiles } from '../cache/trusted-files.js';
import { AccessLog } from '../telemetry/access-log.js';
import { summarizeConfig, type Config } from '../config/config.js';
import { Metrics, type MetricsExposition } from '../telemetry/metrics.js';
import { buildStatusReport, type StatusReport } from '../telemetry/status-report.js';
import { parseRepository } from '../reference/repository-reference.js';
import { logStartupSummary, replicaName } from './startup-summary.js';
import { ownListeners, serverPorts, type Listeners } from './listeners.js';
import { prepareStartup } from './startup.js';
import { ownStore } from './store-owner.js';
import type { Logger } from '../telemetry/log.js';
import { Allowlist } from '../registry/allowlist.js';
import { ContentAccess } from '../registry/content-access.js';
import { ContentResponder } from '../registry/content-responder.js';
import { RegistryHandler } from '../registry/registry-handler.js';
import { AllowedClients, CLIENT_REFUSED } from '../doors/allowed-clients.js';
import { createMirrorServer } from '../doors/mirror-server.js';
import { createProxyServers } from '../doors/proxy-server.js';
import { TlsInterceptor } from '../doors/tls-interceptor.js';
import { Tunnels } from '../doors/tunnel.js';
import type { CertificateAuthority } from '../tls/certificate-authority.js';
import { LeafCertificates } from '../tls/leaf-certificates.js';
import { loadOrCreateLeafKey } from '../tls/leaf-key.js';
import { DestinationPolicy } from '../upstream/destination-policy.js';
import { Dialer } from '../upstream/dialer.js';
import { UpstreamClient } from '../upstream/upstream-client.js';
import { TokenUpstream, UpstreamTokens } from '../upstream/upstream-tokens.js';
import { VERSION } from '../config/version.js';
import { errorMessage } from '../telemetry/error-message.js';

export interface RunningProxy {
  port: number;
  ports: ServerPorts;
  /** Stops accepting, lets requests in progress finish for up to graceMs, then ends every connection. */
  close(graceMs?: number): Promise<void>;
}

// Under Docker's default 10 s stop timeout, with room to exit cleanly.
export const SHUTDOWN_GRACE_MS = 8_000;

/** Leaf certificates over CA_DIR/leaf.key (created by the first process to start on CA_DIR). */
export async function openLeafCertificates(config: Config, ca: CertificateAuthority, log: Logger): Promise<LeafCertificates> {
  const { key, source, problem } = await loadOrCreateLeafKey(config.caDir, config.caKeyPassphrase);
  // In memory only is what a read-only CA_DIR (a Secret volume) gives at every start: said, not warned.
  if (problem === undefined) log.debug({ leafKey: source }, 'leaf key');
  else if (source === 'memory') log.info({ leafKey: source }, `leaf key made for this process only: ${problem}`);
  else log.warn({ leafKey: source }, `leaf key: ${problem}`);
  return LeafCertificates.create(ca, key);
}

/** The one process (WORKERS=1): it owns CACHE_DIR (or, with CACHE_STORE, is a replica on the bucket) and serves. */
export async function startProxy(config: Config, log: Logger): Promise<RunningProxy> {
  // This proxy's own counters: another proxy in the same process (tests) counts apart.
  const metrics = new Metrics();
  const { guard, doors, warnings } = openDoors(config, log, metrics);
  const ca = await prepareStartup(config, log, warnings);
  const [leaves, backend] = await Promise.all([openLeafCertificates(config, ca, log), ownStore(config, log, metrics)]);
  const proxy = await serveProxy(config, log, {
    metrics,
    guard,
    doors,
    ca,
    leaves,
    backend,
    listeners: ownListeners(config, log),
    storeGauges: true,
    views: {
      health: () => localHealth(ca.certPem, config.cacheDir),
      listing: (viewer) => Promise.resolve(cacheListing(backend.index, viewer)),
      metrics: metrics.registry,
      status: status(metrics, config),
    },
  });
  backend.setPorts(proxy.ports);
  backend.setStatus(status(metrics, config));
  log.info(
    { port: proxy.port, mirrorPort: proxy.ports.mirror?.port ?? null, adminPort: proxy.ports.admin, version: VERSION, ...summarizeConfig(config) },
    'listening',
  );
  logStartupSummary(log, config, proxy.ports, ca.certFile);
  return proxy;
}

/** The one process's status summary: its own counters and activity. */
function status(metrics: Metrics, config: Config): () => Promise<StatusReport> {
  const processes = config.cacheStore
    ? { mode: 'replica' as const, workers: [], restarts: 0, replica: replicaName() }
    : { mode: 'single' as const, workers: [], restarts: 0, replica: null };
  return async () => buildStatusReport(await metrics.registry.getMetricsAsJSON(), metrics.activity.snapshot(), processes);
}

/** Every door's users, and one guard for their credential checks (one bcrypt worker, one throttle per address). */
export function openDoors(config: Config, log: Logger, metrics: Metrics): { guard: PasswordGuard; doors: Doors; warnings: string[] } {
  const guard = new PasswordGuard({ log, metrics });
  return { guard, ...loadDoors(config, guard) };
}

/** What a serving process is given: its counters and doors, the CA, and the store as it sees it. */
export interface ServeParts {
  metrics: Metrics;
  guard: PasswordGuard;
  doors: Doors;
  ca: CertificateAuthority;
  leaves: LeafCertificates;
  backend: Backend; // the store, as this process sees it (a worker: its primary's); closed last
  listeners: Listeners; // its own ports, or (a worker) the connections its primary hands it
  storeGauges: boolean; // the store's gauges and its fills' are this process's (a worker's are the primary's)
  views: {
    health: () => Promise<HealthReport>;
    listing: (viewer: ListingViewer) => Promise<Listing>;
    metrics: MetricsExposition;
    status: () => Promise<StatusReport>;
  };
}

/** Wires the coordinator, the upstream client, the handlers and the listeners over the store, and listens. */
export async function serveProxy(config: Config, log: Logger, parts: ServeParts): Promise<RunningProxy> {
  const { metrics, guard, doors, ca, leaves, backend } = parts;
  // One coordinator, shared by the proxy and the mirror: one fill per origin and digest, and (VERIFY_ON_READ
  // =once) one record of the files verified.
  const coordinator = new FillCoordinator(backend, log, {
    manifestMaxBytes: config.manifestMaxSize,
    verifyOnRead: config.verifyOnRead !== 'off',
    trusted: config.verifyOnRead === 'once' ? new TrustedFiles() : null,
  });
  const store = coordinator.store;
  const allowlist = new Allowlist(config.registries);
  const accessLog = new AccessLog(log, metrics, (origin) => allowlist.label(origin));
  metrics.expectRegistries(config.registries.map((entry) => allowlist.label(entry)));
  leaves.warmUp();
  coordinator.on('fill-started', (key: FillKey, fill: Fill, from: Provenance) =>
    metrics.fillStarted(fill, accessLog.labelOf(key.origin), from.ref ? parseRepository(from.ref).repository : null),
  );
  coordinator.on('fill-joined', () => metrics.joined());
  coordinator.on('fill-settled', (fill: Fill) => {
    // Our disk, or no client left: not upstream's failures.
    if (fill.error && !['store', 'unread'].includes(fill.error.reason)) metrics.upstreamError(fill.error.reason);
  });

  const destinations = new DestinationPolicy({ allow: config.allowDestinations, deny: config.denyDestinations });
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
  const tagPolicy = { serveStale: config.serveStale, manifestCache: config.manifestCache, manifestMaxBytes: config.manifestMaxSize };
  const tokens = new UpstreamTokens(upstream, log);
  const access = new ContentAccess(store, upstream, tokens, log);
  access.start();
  const content = new ContentResponder(coordinator, upstream, access);
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
  let ready = false;
  let mirror: Server | null = null;
  let mirrorPort: number | null = null;
  const adminDeps = {
    log,
    accessLog,
    caCertPem: ca.certPem,
    version: VERSION,
    ...parts.views,
    ready: () => ready,
    storeReadiness: () => backend.readiness(),
    mirrorPort: () => mirrorPort,
    registries: config.registries,
    auth: doors.admin,
    proxyAuth: doors.proxy,
    mirrorAuth: doors.mirror,
  };
  const reachable = backend.reachable;
  const storeGauges = {
    fillsInFlight: () => coordinator.fillsInFlight,
    storeBytes: () => backend.index.totalBytes,
    storeEntries: () => backend.index.size,
    storeMaxBytes: () => config.cacheMaxSize,
    // A store that can be out of reach (a bucket): the check /readyz makes.
    ...(reachable ? { storeReachable: () => Promise.resolve(reachable()) } : {}),
  };
  metrics.watch({
    ...(parts.storeGauges ? storeGauges : {}),
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
    openToAnyone,
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
    const mirrorContent = new ContentResponder(coordinator, asRegcache, new ContentAccess(store, asRegcache, tokens, log));
    const mirrorDeps = {
      log,
      accessLog,
      allowlist,
      registry: new RegistryHandler({ log, accessLog, coordinator, upstream: asRegcache, content: mirrorContent, allowPush: false, tagPolicy }),
      index: backend.index,
      registryDomain: config.registryDomain,
      auth: doors.mirror,
      adminAuth: doors.admin,
      guard,
      headersTimeoutMs: config.clientHeadersTimeoutMs,
      clients,
    };
    mirror = createMirrorServer(mirrorDeps, await mirrorTls(config, leaves));
    mirror.on('connection', track);
    mirrorPort = await parts.listeners.take('mirror', mirror);
    destinations.listeningPorts.add(mirrorPort);
  }

  // ADMIN_PORT: the admin endpoints on a port of their own as well (e.g. for a metrics scraper).
  let admin: Server | null = null;
  let adminPort: number | null = null;
  if (config.adminPort !== 0) {
    admin = createServer((req, res) => {
      if (openToAnyone(req) || clients.admits(req, log, 'admin')) void handleAdmin(adminDeps, req, res);
      else res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8' }).end(`regcache: ${CLIENT_REFUSED}\n`);
    });
    admin.on('connection', track);
    adminPort = await parts.listeners.take('admin', admin);
    destinations.listeningPorts.add(adminPort);
  }

  const port = await parts.listeners.take('proxy', server);
  destinations.listeningPorts.add(port);
  parts.listeners.open();
  await warmUp(port, log);
  ready = true;
  const ports = serverPorts(config, { proxy: port, mirror: mirrorPort, admin: adminPort });
  return {
    port,
    ports,
    async close(graceMs = SHUTDOWN_GRACE_MS) {
      ready = false;
      parts.listeners.close();
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
      // A download that just ended leaves its fill verifying, syncing and committing (with WORKERS > 1, through
      // the primary): closing the store under it would lose what the client already has. Within the grace.
      while (coordinator.fillsInFlight > 0 && Date.now() < deadline) await sleep(50);
      await upstream.close();
      await backend.close();
      await guard.close();
    },
  };
}

/**
 * One request to our own readiness check before announcing 'listening': undici compiles its HTTP parser
 * (WebAssembly) on its first connection, and that should not land on a user's first pull.
 */
async function warmUp(port: number, log: Logger): Promise<void> {
  const client = new Client(`http://127.0.0.1:${port}`);
  try {
    // /readyz: a probe, logged at debug (every worker makes one; none is a user's request).
    const res = await client.request({ method: 'GET', path: '/readyz' });
    await res.body.dump();
  } catch (err) {
    log.debug({ error: errorMessage(err) }, 'warm-up request failed (harmless: only the first request is slower)');
  } finally {
    await client.close();
  }
}

/** The mirror's certificate: files (MIRROR_TLS_CERT/KEY), or minted from our CA for MIRROR_HOSTNAME. */
async function mirrorTls(
  config: Config,
  leaves: LeafCertificates,
): Promise<{ cert: string; key: string; SNICallback?: tls.TlsOptions['SNICallback'] } | undefined> {
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
