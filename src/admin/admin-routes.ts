// Requests addressed to the proxy itself (origin-form URLs on the proxy port, and ADMIN_PORT): the status
// page, the CA certificate, a set-up script for dockerd hosts, health and readiness, Prometheus metrics
// and the cache API. With admin users configured (ADMIN_AUTH, else PROXY_AUTH's), everything but `/`,
// the CA certificate and the health checks needs their Basic credentials: the rest names what has been
// pulled, from where, and how to join the proxy. `/` is the status page for admins (or when the door is
// open), and for anyone else a pointer to /ca.crt and /status.
import fs from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { clientAddress } from '../auth/client-address.js';
import type { UserSet } from '../auth/user-set.js';
import type { StoreReadiness } from '../cache/backend.js';
import type { ContentIndex } from '../cache/content-store.js';
import { taggedRepositories, type ListingViewer } from '../cache/tag-listing.js';
import type { Logger } from '../telemetry/log.js';
import { registryApiHost } from '../reference/registry-name.js';
import type { AccessLog } from '../telemetry/access-log.js';
import type { MetricsExposition } from '../telemetry/metrics.js';
import type { StatusReport } from '../telemetry/status-report.js';
import { renderStatusPage } from './status-page.js';
import { publicStatus } from './public-status.js';
import { containerdHostsToml, containerdSetupScript, systemdSetupScript, type SetupTarget } from './setup-script.js';
import { errorMessage } from '../telemetry/error-message.js';

/** /healthz: the checks (all must hold), and with WORKERS > 1 how many workers serve. */
export interface HealthReport {
  checks: Record<string, boolean>;
  workers?: { expected: number; running: number };
}

export interface AdminDeps {
  log: Logger;
  accessLog: AccessLog;
  caCertPem: string;
  version: string;
  // With WORKERS > 1 the next three are the primary's answers, for the whole process tree.
  health: () => Promise<HealthReport>;
  listing: (viewer: ListingViewer) => Promise<Listing>; // what has been pulled (cacheListing)
  metrics: MetricsExposition; // /metrics
  status: () => Promise<StatusReport>; // the status page, /api/v1/status (the same counters as /metrics)
  ready: () => boolean; // false while starting or shutting down
  storeReadiness: () => Promise<StoreReadiness>; // diskSpace (free space above the reserve); with CACHE_STORE, store (the bucket answers)
  mirrorPort: () => number | null; // the registry-mirror listener, when on
  registries: string[]; // the allowlist, for /setup/containerd
  auth: UserSet | null; // the admin door: ADMIN_AUTH, else PROXY_AUTH; null: open
  proxyAuth: UserSet | null; // the proxy's door: a set-up script carries the caller's credentials if they open it
  mirrorAuth: UserSet | null; // the mirror's door: likewise for containerd's hosts.toml
}

// What a client needs before it can authenticate anything (the CA), and what probes read.
const OPEN_PATHS = new Set(['/', '/ca.crt', '/healthz', '/readyz']);

// Read by every address, whatever ALLOWED_CLIENTS says: probes come from addresses an operator does not
// list (a kubelet's node address, a load balancer, the image's HEALTHCHECK from inside the container), and
// the CA certificate is public by nature. They tell an outsider that a regcache is there and whether it is
// ready, nothing else (docs/security.md).
const ANYONE_PATHS = new Set(['/ca.crt', '/healthz', '/readyz']);

/** Whether this origin-form request is one any address may make (the listeners skip ALLOWED_CLIENTS). */
export function openToAnyone(req: IncomingMessage): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false;
  const target = req.url ?? '';
  const q = target.indexOf('?');
  return ANYONE_PATHS.has(q < 0 ? target : target.slice(0, q));
}

const TEXT = 'text/plain; charset=utf-8';
const JSON_TYPE = 'application/json';

export async function handleAdmin(deps: AdminDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const record = deps.accessLog.record(req, res, 'regcache');
  record.cache = 'ADMIN';
  record.kind = 'admin';
  const send = (status: number, type: string, body: string, extra: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...extra });
    res.end(req.method === 'HEAD' ? undefined : body);
    record.bytes = req.method === 'HEAD' ? 0 : Buffer.byteLength(body);
  };
  const json = (status: number, value: unknown) => send(status, JSON_TYPE, JSON.stringify(value, null, 2) + '\n');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    send(405, TEXT, 'method not allowed\n', { allow: 'GET, HEAD' });
    return;
  }
  // Unknown paths too: whether a path exists is not told before the credentials are.
  let viewer: ListingViewer = 'anyone';
  // `/` shows the page to an admin who sent credentials; without them it stays the open pointer.
  const asks = !OPEN_PATHS.has(record.path) || (record.path === '/' && req.headers.authorization !== undefined);
  if (deps.auth && asks) {
    const result = await deps.auth.check(req.headers.authorization, clientAddress(req.socket));
    if (!('users' in result)) {
      record.cache = 'REJECTED';
      record.kind = 'admin-auth';
      record.error = `admin authentication required (credentials: ${result.refused})`; // never the header
      send(401, TEXT, `regcache: ${record.path} needs admin credentials (${deps.auth.variable} users), e.g. curl -u user:password\n`, {
        'www-authenticate': 'Basic realm="regcache admin"',
      });
      return;
    }
    viewer = 'admin';
  }
  record.quiet = record.path === '/healthz' || record.path === '/readyz'; // probes come every few seconds
  const admin = deps.auth === null || viewer === 'admin';
  switch (record.path) {
    case '/':
    case '/status':
    case '/api/v1/status': {
      if (!admin) {
        send(
          200,
          TEXT,
          `regcache ${deps.version} is running.\nCA certificate: GET /ca.crt\nStatus page: GET /status (admin credentials)\nSet-up script for a dockerd host: GET /setup/systemd\n`,
        );
        return;
      }
      let report: StatusReport;
      try {
        report = await deps.status();
        // An open door: names of what upstream does not serve to anyone stay hidden, as in the cache listing.
        if (viewer !== 'admin') report = publicStatus(report, await deps.listing('anyone'));
      } catch (err) {
        record.error = errorMessage(err); // WORKERS > 1: the primary did not answer
        send(503, TEXT, `regcache: ${record.path} is not available now\n`);
        return;
      }
      if (record.path === '/api/v1/status') json(200, report);
      else send(200, 'text/html; charset=utf-8', renderStatusPage(report), { 'cache-control': 'no-store' });
      return;
    }
    case '/ca.crt':
      send(200, 'application/x-pem-file', deps.caCertPem, { 'content-disposition': 'attachment; filename="regcache-ca.crt"' });
      return;
    case '/setup/systemd':
    case '/setup/containerd':
    case '/setup/containerd.sh': {
      // The address the client used to reach us is the one its daemon should use.
      const host = req.headers.host ?? '';
      if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/.test(host)) {
        send(400, TEXT, 'regcache: the Host header must be host[:port] to write a set-up file\n');
        return;
      }
      if (record.path === '/setup/systemd') {
        const credentials = await credentialsFor(deps.proxyAuth, req);
        send(
          200,
          'text/x-shellscript; charset=utf-8',
          systemdSetupScript({ origin: `http://${host}`, credentials, credentialsRequired: deps.proxyAuth !== null }),
        );
        return;
      }
      const mirrorPort = deps.mirrorPort();
      if (mirrorPort === null) {
        send(404, TEXT, 'regcache: the registry mirror is off (MIRROR_PORT=0)\n');
        return;
      }
      const registries = deps.registries.filter((r) => r !== 'auth.docker.io'); // Docker Hub's token service is no registry
      const toml = containerdHostsToml(`http://${host.replace(/:\d+$/, '')}:${mirrorPort}`, registries, await credentialsFor(deps.mirrorAuth, req));
      if (record.path === '/setup/containerd.sh') send(200, 'text/x-shellscript; charset=utf-8', containerdSetupScript(toml));
      else send(200, 'application/toml; charset=utf-8', toml);
      return;
    }
    case '/healthz': {
      // No answer from the primary (WORKERS > 1) is a failed check of its own.
      const report = await deps.health().catch((): HealthReport => ({ checks: { process: true, primary: false } }));
      const ok = Object.values(report.checks).every(Boolean);
      json(ok ? 200 : 503, { ok, ...report });
      return;
    }
    case '/readyz': {
      // A full disk cannot store anything (every fill is a BYPASS): a balancer should prefer another replica.
      // With CACHE_STORE, a replica that cannot reach the bucket answers 503 to every pull: out of rotation.
      const checks = { listening: deps.ready(), ...(await deps.storeReadiness()) };
      const ready = Object.values(checks).every(Boolean);
      json(ready ? 200 : 503, { ready, checks });
      return;
    }
    case '/metrics':
    case '/api/v1/cache':
    case '/api/v1/cache/summary': {
      // With WORKERS > 1 these are the primary's answers, which may not come (it is gone, or stuck).
      let answer: { type: string; body: string };
      try {
        answer =
          record.path === '/metrics'
            ? { type: deps.metrics.contentType, body: await deps.metrics.metrics() }
            : {
                type: JSON_TYPE,
                body: JSON.stringify(record.path === '/api/v1/cache' ? await deps.listing(viewer) : (await deps.listing(viewer)).summary, null, 2) + '\n',
              };
      } catch (err) {
        record.error = errorMessage(err);
        send(503, TEXT, `regcache: ${record.path} is not available now\n`);
        return;
      }
      send(200, answer.type, answer.body);
      return;
    }
    default:
      send(404, TEXT, 'not found\n');
  }
}

/**
 * The caller's own Basic credentials, when they open `door` (PROXY_AUTH for the systemd script, the
 * mirror's users for hosts.toml): a set-up fetched with them works behind that door. Null otherwise.
 */
async function credentialsFor(door: UserSet | null, req: IncomingMessage): Promise<SetupTarget['credentials']> {
  const header = req.headers.authorization;
  const m = door && header ? /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header) : null;
  if (!door || !m || !('users' in (await door.check(header, clientAddress(req.socket))))) return null;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

/** One process's health: the CA it serves is loaded, the cache directory is writable. */
export async function localHealth(caCertPem: string, cacheDir: string): Promise<HealthReport> {
  return { checks: { process: true, caLoaded: caCertPem.length > 0, cacheDirWritable: await writable(cacheDir) } };
}

async function writable(dir: string): Promise<boolean> {
  return fs.access(dir, fs.constants.W_OK).then(
    () => true,
    () => false,
  );
}

export interface Listing {
  registries: Record<string, { url: string; images: number; repositories: { name: string; tags: string[] }[] }>;
  summary: Record<string, number>;
}

/** What has been pulled, by registry and repository, as far as `viewer` may see it (cache/tag-listing.ts). */
export function cacheListing(index: Pick<ContentIndex, 'oldestFirst'>, viewer: ListingViewer): Listing {
  const listing: Listing = { registries: {}, summary: {} };
  let total = 0;
  for (const [registry, byRepo] of [...taggedRepositories(index, viewer)].sort(([a], [b]) => a.localeCompare(b))) {
    const repositories = [...byRepo].sort(([a], [b]) => a.localeCompare(b)).map(([name, tags]) => ({ name, tags: [...tags].sort() }));
    const images = repositories.reduce((n, r) => n + r.tags.length, 0);
    listing.registries[registry] = { url: `https://${registryApiHost(registry)}`, images, repositories };
    listing.summary[registry] = images;
    total += images;
  }
  listing.summary.total = total;
  return listing;
}
