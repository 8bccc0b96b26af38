// The listener: one HTTP server on PORT that takes CONNECT (intercept or tunnel), absolute-URI
// forward requests, and origin-form requests addressed to the proxy itself; plus the HTTP server
// (never listening) that receives the decrypted connections.
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { portAllowed, type PortRange } from '../config/config.js';
import { clientAddress } from '../auth/client-address.js';
import type { AuthResult } from '../auth/password-guard.js';
import type { UserSet } from '../auth/user-set.js';
import type { Logger } from '../telemetry/log.js';
import type { RegistryHandler } from '../registry/registry-handler.js';
import type { Allowlist } from '../registry/allowlist.js';
import { passThrough } from '../registry/pass-through.js';
import type { UpstreamClient } from '../upstream/upstream-client.js';
import type { AccessLog } from '../telemetry/access-log.js';
import { CLIENT_REFUSED, type AllowedClients } from './allowed-clients.js';
import { formatAuthority, parseConnectTarget } from './connect-target.js';
import { InterceptedSocket, type TlsInterceptor } from './tls-interceptor.js';
import { refuseSocket } from './socket-refusal.js';
import type { Tunnels } from './tunnel.js';

export interface ProxyServerDeps {
  log: Logger;
  accessLog: AccessLog;
  allowlist: Allowlist;
  registry: RegistryHandler;
  upstream: UpstreamClient;
  tunnels: Tunnels;
  interceptor: (server: http.Server) => TlsInterceptor;
  admin: (req: http.IncomingMessage, res: http.ServerResponse) => void;
  openToAnyone: (req: http.IncomingMessage) => boolean; // admin requests any address may make (probes, /ca.crt)
  proxyAuth: UserSet | null; // PROXY_AUTH: CONNECT and forward requests need credentials
  headersTimeoutMs: number; // CLIENT_HEADERS_TIMEOUT
  clients: AllowedClients; // ALLOWED_CLIENTS: checked before anything else
  tunnelPorts: PortRange[]; // TUNNEL_PORTS: where tunnels to hosts off the allowlist may go
  forwardPorts: PortRange[]; // FORWARD_PORTS: where plain-HTTP forwards to hosts off the allowlist may go
}

const PROXY_AUTHENTICATE = { 'Proxy-Authenticate': 'Basic realm="regcache"' };

/** Options of every server that faces clients (listener, intercepted, mirror). */
export function clientServerOptions(headersTimeoutMs: number): http.ServerOptions {
  return {
    maxHeaderSize: 16 * 1024, // larger heads get 431
    headersTimeout: headersTimeoutMs, // slowloris: a request head must arrive within CLIENT_HEADERS_TIMEOUT (408)
    // Node checks that deadline only this often (default 30 s, which would double a short timeout).
    connectionsCheckingInterval: Math.min(headersTimeoutMs, 1_000),
    requestTimeout: 0, // a multi-gigabyte upload or download may take as long as it takes
    keepAliveTimeout: 65_000,
  };
}

export function createProxyServers(deps: ProxyServerDeps): { server: http.Server; intercepted: http.Server } {
  const { log } = deps;
  const options = clientServerOptions(deps.headersTimeoutMs);

  const intercepted = http.createServer(options, (req, res) => {
    if (!(req.socket instanceof InterceptedSocket)) {
      res.writeHead(500).end();
      return;
    }
    void deps.registry.handle({ origin: new URL(req.socket.origin), target: req.url ?? '/', req, res });
  });
  intercepted.on('clientError', (err, socket) => refuseBadRequest(log, err, socket, 'intercepted'));
  // Node starts connection tracking (headersTimeout checks, closeIdleConnections) on 'listening'; this
  // server only ever receives emitted connections, so start it by hand.
  intercepted.emit('listening');

  const server = http.createServer(options, (req, res) => {
    if (!deps.openToAnyone(req) && !deps.clients.admits(req, log, 'proxy')) {
      res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' }).end(`regcache: ${CLIENT_REFUSED}\n`);
      return;
    }
    if ((req.url ?? '').startsWith('/')) {
      deps.admin(req, res);
      return;
    }
    void (async () => {
      const auth = await authenticate(deps, req);
      if (!('users' in auth)) {
        const record = deps.accessLog.record(req, res, '-');
        record.cache = 'REJECTED';
        record.kind = 'proxy-auth';
        record.error = `proxy authentication required (credentials: ${auth.refused})`; // never the header
        res.writeHead(407, { 'proxy-authenticate': 'Basic realm="regcache"', 'content-length': 0, connection: 'close' }).end();
        return;
      }
      await forward(deps, req, res);
    })();
  });
  const interceptor = deps.interceptor(intercepted);

  server.on('connect', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', (err) => log.debug({ error: err.message }, 'client socket error'));
    void connect(deps, req, socket, head, interceptor);
  });
  server.on('clientError', (err, socket) => refuseBadRequest(log, err, socket, 'listener'));
  return { server, intercepted };
}

async function connect(deps: ProxyServerDeps, req: http.IncomingMessage, socket: Duplex, head: Buffer, interceptor: TlsInterceptor): Promise<void> {
  const { log } = deps;
  if (!deps.clients.admits(req, log, 'CONNECT')) {
    refuseSocket(socket, 403, CLIENT_REFUSED);
    return;
  }
  const auth = await authenticate(deps, req);
  if (!('users' in auth)) {
    // The target is logged, never the header.
    log.warn({ connect: String(req.url).slice(0, 300), client: req.socket.remoteAddress, credentials: auth.refused }, 'proxy authentication required');
    refuseSocket(socket, 407, '', PROXY_AUTHENTICATE);
    return;
  }
  if (req.httpVersionMajor !== 1) {
    // Node parses "CONNECT host:port" without a version as HTTP/0.9, and takes "HTTP/2.0" or "HTTP/9.9"
    // too; no real client sends them (h2 has its own CONNECT), so they are not opened as tunnels.
    log.warn({ connect: String(req.url).slice(0, 300), version: req.httpVersion }, 'CONNECT with an unsupported HTTP version refused');
    refuseSocket(socket, 400);
    return;
  }
  const target = parseConnectTarget(req.url);
  if (!target) {
    log.warn({ connect: String(req.url).slice(0, 300) }, 'malformed CONNECT target refused');
    refuseSocket(socket, 400);
    return;
  }
  if (deps.allowlist.matches(target.host, target.port)) {
    interceptor.intercept(socket, head, target);
    return;
  }
  if (!portAllowed(deps.tunnelPorts, target.port)) {
    // squid's "deny CONNECT !SSL_ports": a tunnel is for TLS to a web port, not SSH or SMTP on a neighbour.
    const reason = `port ${target.port} is not in TUNNEL_PORTS`;
    log.warn({ tunnel: formatAuthority(target.host, target.port), reason }, 'tunnel refused');
    refuseSocket(socket, 403, reason);
    return;
  }
  await deps.tunnels.open(socket, head, target);
}

/** The proxy's door: PROXY_AUTH's users, or open ({ users: null }). */
function authenticate(deps: ProxyServerDeps, req: http.IncomingMessage): Promise<AuthResult | { users: null }> {
  return deps.proxyAuth ? deps.proxyAuth.check(req.headers['proxy-authorization'], clientAddress(req.socket)) : Promise.resolve({ users: null });
}

/** Absolute-URI (plain HTTP) proxy requests: allowlisted registries go through the cache. */
async function forward(deps: ProxyServerDeps, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
  let url: URL;
  try {
    url = new URL(req.url ?? '');
  } catch {
    // not a URL: refused below as a request that is not an absolute http:// URI.
    url = new URL('invalid:');
  }
  if (url.protocol !== 'http:' || !url.hostname) {
    const record = deps.accessLog.record(req, res, url.host || '-');
    record.cache = 'REJECTED';
    record.error = 'not an http:// absolute URI (use CONNECT for https)';
    res.writeHead(400, { 'content-type': 'text/plain' }).end('regcache: expected an absolute http:// URI or CONNECT\n');
    return;
  }
  const origin = new URL(url.origin);
  const port = Number(url.port) || 80;
  if (deps.allowlist.matches(url.hostname.replace(/^\[|\]$/g, ''), port)) {
    // The path as the client sent it (URL would resolve "..", "%2e%2e" and "\\" and hide them from the
    // classifier), in origin-form as inside a tunnel.
    const sent = /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*(.*)$/is.exec(req.url ?? '')?.[1] ?? '';
    await deps.registry.handle({ origin, target: sent.startsWith('/') ? sent : `/${sent}`, req, res });
    return;
  }
  const target = url.pathname + url.search; // origin-form
  // The URL as parsed, never the target resolved again against the origin: a path that begins "//" would
  // then name another host and port ("http://a//b:25/" reaching b:25, past FORWARD_PORTS, logged as a).
  url.hash = '';
  const record = deps.accessLog.record(req, res, url.host, target);
  record.kind = 'forward';
  if (!portAllowed(deps.forwardPorts, port)) {
    record.cache = 'REJECTED';
    record.error = `port ${port} is not in FORWARD_PORTS`;
    res.writeHead(403, { 'content-type': 'text/plain; charset=utf-8' }).end(`regcache: ${record.error}\n`);
    return;
  }
  await passThrough(deps.upstream, {
    origin,
    method: req.method ?? 'GET',
    target,
    upstreamUrl: url,
    headers: req.headers,
    body: req,
    res,
    record,
  });
}

function refuseBadRequest(log: Logger, err: Error & { code?: string }, socket: Duplex, where: string): void {
  // Not a request at all: the client reset, or regcache cut the connection itself (a response destroyed
  // with its error, e.g. a HIT whose bytes did not match: its request line says so). Nothing to answer.
  if (err.code === 'ECONNRESET' || err.code === 'EPIPE' || !socket.writable) {
    log.debug({ where, code: err.code, error: err.message }, 'client socket error');
    socket.destroy();
    return;
  }
  log.warn({ where, code: err.code, error: err.message }, 'bad request refused');
  refuseSocket(socket, err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400);
}
