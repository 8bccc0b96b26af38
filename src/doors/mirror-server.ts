// The registry-mirror listener (MIRROR_PORT) for clients that cannot use HTTPS_PROXY: containerd's
// hosts.toml, dockerd's registry-mirrors, k3s/kind. It speaks the distribution API itself, picks the
// upstream per request (containerd's ?ns=, a "<registry>.<REGISTRY_DOMAIN>" Host, else Docker Hub) and
// hands the request to the same cache and policies as the proxy, going upstream as regcache itself.
// Its clients authenticate with Basic credentials (MIRROR_AUTH, else PROXY_AUTH's users); /v2/_catalog
// needs the admin users when they are configured, and listings name private images only to admins.
import http from 'node:http';
import https from 'node:https';
import type net from 'node:net';
import type tls from 'node:tls';
import { clientAddress } from '../auth/client-address.js';
import type { PasswordGuard } from '../auth/password-guard.js';
import type { UserSet } from '../auth/user-set.js';
import type { EntryIndex } from '../cache/entry-index.js';
import { taggedRepositories, type ListingViewer } from '../cache/tag-listing.js';
import type { Logger } from '../telemetry/log.js';
import type { Allowlist } from '../registry/allowlist.js';
import { sendRegistryError, type RegistryErrorKind } from '../registry/registry-errors.js';
import { DOCKER_HUB_HOST, registryApiHost, registryDisplayName } from '../reference/registry-name.js';
import { classify } from '../registry/request-classifier.js';
import type { RegistryHandler } from '../registry/registry-handler.js';
import type { AccessLog } from '../telemetry/access-log.js';
import { CLIENT_REFUSED, type AllowedClients } from './allowed-clients.js';
import { clientServerOptions } from './proxy-server.js';
import { SERVER_CIPHERS } from '../tls/server-ciphers.js';

export interface MirrorDeps {
  log: Logger;
  accessLog: AccessLog;
  allowlist: Allowlist;
  registry: RegistryHandler; // built over the mirror's upstream (regcache's own tokens)
  index: EntryIndex;
  registryDomain: string | null;
  auth: UserSet | null; // the mirror's door (MIRROR_AUTH, else PROXY_AUTH), checked against the client's Authorization
  adminAuth: UserSet | null; // the admin door (ADMIN_AUTH, else PROXY_AUTH): /v2/_catalog, and full listings
  guard: PasswordGuard; // checks a header against one or more of these
  headersTimeoutMs: number; // CLIENT_HEADERS_TIMEOUT
  clients: AllowedClients; // ALLOWED_CLIENTS: checked before anything else
}

const API_VERSION = { 'docker-distribution-api-version': 'registry/2.0' };

/** Which upstream a mirror request is for; null when the client named one that cannot be parsed. */
export function mirrorTarget(ns: string | null, host: string | undefined, registryDomain: string | null): string | null {
  const normalise = (name: string): string | null => {
    const n = registryApiHost(name); // docker.io and index.docker.io are Docker Hub's API host
    return /^[a-z0-9.-]+(:\d{1,5})?$/.test(n) ? n : null;
  };
  if (ns !== null) return normalise(ns);
  const hostname = (host ?? '').toLowerCase().replace(/:\d+$/, '');
  if (registryDomain && hostname.endsWith(`.${registryDomain}`)) return normalise(hostname.slice(0, -registryDomain.length - 1));
  return DOCKER_HUB_HOST;
}

/** Plain HTTP, or HTTPS when given a certificate (and optionally an SNI callback that renews it). */
export function createMirrorServer(deps: MirrorDeps, tlsOptions?: { cert: string; key: string; SNICallback?: tls.TlsOptions['SNICallback'] }): http.Server {
  const options = clientServerOptions(deps.headersTimeoutMs);
  // ALLOWED_CLIENTS is decided once per connection, as CONNECT's is: a client's address does not change
  // while it is connected, and a kept-alive connection's requests then run no address match. Only an
  // admitted connection is remembered: a request on any other (refused, or one this listener did not see
  // open) is checked, answered 403 and logged on its own (admits).
  const admitted = new WeakSet<net.Socket>();
  const decide = (socket: net.Socket) => {
    if (deps.clients.allows(socket.remoteAddress)) admitted.add(socket);
  };
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => void handle(deps, req, res, admitted.has(req.socket));
  if (!tlsOptions) return http.createServer(options, handler).on('connection', decide);
  return https.createServer({ ...options, handshakeTimeout: deps.headersTimeoutMs, ...SERVER_CIPHERS, ...tlsOptions }, handler).on('secureConnection', decide);
}

async function handle(deps: MirrorDeps, req: http.IncomingMessage, res: http.ServerResponse, admittedClient: boolean): Promise<void> {
  // Path and query split by hand: new URL() would resolve "..", "%2e%2e" and "\\" and hide them from
  // the classifier (which refuses them, and anything that is not a path).
  const sent = req.url ?? '/';
  const q = sent.indexOf('?');
  const pathname = q < 0 ? sent : sent.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : sent.slice(q + 1));
  if (!admittedClient && !deps.clients.admits(req, deps.log, 'mirror')) {
    refuse(deps, req, res, 'denied', CLIENT_REFUSED);
    return;
  }
  const listing = /^\/v2\/(?:_catalog|(.+)\/tags\/list)$/.exec(pathname);
  const viewer = await admit(deps, req, res, listing ? (listing[1] ? 'tags' : 'catalog') : null);
  if (viewer === null) return;
  const target = mirrorTarget(params.get('ns'), req.headers.host, deps.registryDomain);
  if (!target || !deps.allowlist.matches(target.replace(/:\d+$/, ''), Number(/:(\d+)$/.exec(target)?.[1] ?? 443))) {
    const named = (target ?? params.get('ns') ?? '-').slice(0, 255);
    refuse(deps, req, res, 'denied', `registry ${JSON.stringify(named)} is not one this mirror serves (REGISTRIES, ADDITIONAL_REGISTRIES)`, {}, named);
    return;
  }
  params.delete('ns');
  const upstreamTarget = pathname + (params.size > 0 ? `?${params.toString()}` : ''); // what the upstream sees: its own path, no routing hints
  if (pathname === '/v2/' || pathname === '/v2') {
    // Answered here: the mirror is open (or MIRROR_AUTH passed); upstream auth is regcache's business.
    const record = deps.accessLog.record(req, res, target);
    record.kind = 'ping';
    record.cache = 'LOCAL'; // no content: not a cache hit
    res.writeHead(200, { 'content-type': 'application/json', ...API_VERSION }).end('{}');
    return;
  }
  if (listing && (req.method === 'GET' || req.method === 'HEAD') && classify(req.method, pathname).kind !== 'invalid') {
    const record = deps.accessLog.record(req, res, target);
    record.kind = listing[1] ? 'tags' : 'catalog';
    record.cache = 'HIT';
    const repositories = taggedRepositories(deps.index, viewer).get(registryDisplayName(target)) ?? new Map<string, Set<string>>();
    const body = JSON.stringify(
      listing[1] ? { name: listing[1], tags: [...(repositories.get(listing[1]) ?? [])].sort() } : { repositories: [...repositories.keys()].sort() },
    );
    record.bytes = req.method === 'HEAD' ? 0 : Buffer.byteLength(body);
    res
      .writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...API_VERSION })
      .end(req.method === 'HEAD' ? undefined : body);
    return;
  }
  await deps.registry.handle({ origin: new URL(`https://${target}`), target: upstreamTarget, req, res });
}

/**
 * Checks the door for this request and says who is asking (for listings), or answers 401 and returns
 * null. The catalog names every repository and needs the admin users when there are any. A tags list
 * shows private tags to admins only, so there admin credentials are tried before the mirror's: one
 * header, one answer, and a wrong one counts once against the client's address.
 */
async function admit(deps: MirrorDeps, req: http.IncomingMessage, res: http.ServerResponse, listing: 'catalog' | 'tags' | null): Promise<ListingViewer | null> {
  const { auth, adminAuth } = deps;
  const header = req.headers.authorization;
  if (listing === 'catalog' && adminAuth) {
    const result = await deps.guard.authenticate(header, clientAddress(req.socket), [adminAuth]);
    if ('users' in result) return 'admin';
    refuse(deps, req, res, 'unauthorized', `the catalog needs admin credentials (${adminAuth.variable} users; credentials: ${result.refused})`, {
      'www-authenticate': 'Basic realm="regcache admin"',
    });
    return null;
  }
  const sets = [...(listing && adminAuth && adminAuth !== auth ? [adminAuth] : []), ...(auth ? [auth] : [])];
  if (sets.length === 0) return 'anyone'; // an open mirror: no credentials to check, no address to throttle
  const result = await deps.guard.authenticate(header, clientAddress(req.socket), sets);
  if ('users' in result) return result.users === adminAuth ? 'admin' : 'anyone';
  if (!auth) return 'anyone'; // an open mirror: without admin credentials, a tags list of what anyone may see
  refuse(deps, req, res, 'unauthorized', `this mirror needs credentials (${auth.variable} users; credentials: ${result.refused})`, {
    'www-authenticate': 'Basic realm="regcache mirror"',
  });
  return null;
}

/** A refusal; `registry` names the registry the client asked for, when it named one. */
function refuse(
  deps: MirrorDeps,
  req: http.IncomingMessage,
  res: http.ServerResponse,
  error: RegistryErrorKind,
  message: string,
  extra: Record<string, string> = {},
  registry = '-',
): void {
  const record = deps.accessLog.record(req, res, registry);
  record.cache = 'REJECTED';
  record.kind = 'mirror';
  record.error = message;
  sendRegistryError(res, error, message, { ...API_VERSION, ...extra });
}
