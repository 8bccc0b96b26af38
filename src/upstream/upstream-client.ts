// HTTP(S) requests to upstream registries over undici keep-alive pools. Every connection is opened by
// the Dialer (CONNECT_TO, UPSTREAM_PROXY), TLS is verified against the system roots plus UPSTREAM_CA_FILE,
// and redirects are followed here so that Authorization never leaves the origin it was meant for.
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import type { RegistryCredentials } from '../config/config.js';
import type { Dialer } from './dialer.js';
import { UpstreamFailure, upstreamFailure } from './upstream-failure.js';

export interface UpstreamClientOptions {
  dialer: Dialer;
  verifySsl: boolean;
  upstreamCaFile: string | null;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  /** AUTH_REGISTRIES: Basic credentials for hosts, used only when the client sent no Authorization. */
  credentials?: RegistryCredentials[];
}

export interface UpstreamResponse {
  statusCode: number;
  headers: Record<string, string | string[] | undefined>;
  body: Readable;
  url: URL; // after redirects
}

/**
 * Lets go of an upstream body that will not be read. undici reports its own abort of an unread body as
 * an 'error' event (RequestAbortedError, "Request aborted") a tick later; with no listener that ends the
 * process (the 60-minute soak lost a worker so). Expected here, so it is not one.
 */
export function discardBody(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

const MAX_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const SYSTEM_BUNDLES = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt'];

/** One request to an upstream. */
export interface UpstreamRequest {
  url: URL;
  method: string;
  headers?: Record<string, string>;
  body?: Readable | null; // a client's request body (pushes), streamed
  followRedirects?: boolean; // default true; a redirect that leaves the origin drops Authorization
  ownCredentials?: boolean; // default true: AUTH_REGISTRIES credentials for the URL's host when no Authorization is given
}

/**
 * What the registry handlers need from an upstream: UpstreamClient, or the mirror's TokenUpstream. A
 * request that gets no answer rejects with an UpstreamFailure.
 */
export interface Upstream {
  request(request: UpstreamRequest): Promise<UpstreamResponse>;
}

export class UpstreamClient implements Upstream {
  private readonly agent: Agent;
  private readonly credentials: Map<string, string>; // host -> "Basic ..."

  constructor(opts: UpstreamClientOptions) {
    this.credentials = new Map((opts.credentials ?? []).map((c) => [c.host, 'Basic ' + Buffer.from(`${c.user}:${c.password}`).toString('base64')]));
    // Built once: passing ~300 PEM roots to every tls.connect costs 60-110 ms per new connection.
    const secureContext = tls.createSecureContext(opts.verifySsl ? { ca: trustedRoots(opts.upstreamCaFile) } : {});
    this.agent = new Agent({
      keepAliveTimeout: 30_000,
      headersTimeout: opts.headersTimeoutMs,
      bodyTimeout: opts.bodyTimeoutMs,
      connect: (options, callback) => {
        const host = options.hostname;
        const https = options.protocol === 'https:';
        const port = Number(options.port) || (https ? 443 : 80);
        opts.dialer.connect(host, port).then(
          (socket) => {
            if (!https) return callback(null, socket);
            const secure = tls.connect({
              socket,
              host,
              servername: net.isIP(host) ? undefined : host,
              secureContext,
              rejectUnauthorized: opts.verifySsl,
              ALPNProtocols: ['http/1.1'],
            });
            const onError = (err: Error) => {
              secure.destroy();
              callback(new UpstreamFailure('tls', err), null); // typed here, where it is known to be the handshake
            };
            secure.once('error', onError);
            secure.once('secureConnect', () => {
              secure.off('error', onError);
              callback(null, secure);
            });
          },
          (err: Error) => callback(err, null),
        );
      },
    });
  }

  /**
   * One request, following redirects for GET/HEAD. The Authorization header is dropped as soon as a
   * redirect leaves the original origin (S3/CDN presigned URLs reject it, and it is not theirs to see).
   */
  async request({ url, method, headers = {}, body = null, followRedirects = true, ownCredentials = true }: UpstreamRequest): Promise<UpstreamResponse> {
    try {
      return await this.follow(url, method, headers, body, followRedirects, ownCredentials);
    } catch (err) {
      throw upstreamFailure(err);
    }
  }

  private async follow(
    url: URL,
    method: string,
    headers: Record<string, string>,
    body: Readable | null,
    followRedirects: boolean,
    ownCredentials: boolean,
  ): Promise<UpstreamResponse> {
    let current = url;
    // The client's own Authorization always wins; configured credentials go only to their own host.
    const injected = headers.authorization === undefined && ownCredentials ? this.credentials.get(url.host) : undefined;
    let currentHeaders = injected ? { ...headers, authorization: injected } : headers;
    for (let hop = 0; ; hop++) {
      const res = await this.agent.request({
        origin: current.origin,
        path: current.pathname + current.search,
        method: method as Dispatcher.HttpMethod,
        headers: currentHeaders,
        body,
      });
      const next = redirectTarget(res.statusCode, res.headers['location'], current);
      if (!followRedirects || next === null || hop >= MAX_REDIRECTS) {
        return { statusCode: res.statusCode, headers: res.headers, body: res.body, url: current };
      }
      res.body.resume(); // discard the redirect's body so the connection goes back to the pool
      if (next.origin !== url.origin) {
        const { authorization: _dropped, ...rest } = currentHeaders;
        currentHeaders = rest;
      }
      current = next;
    }
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

function redirectTarget(status: number, location: string | string[] | undefined, base: URL): URL | null {
  if (!REDIRECT_STATUSES.has(status) || typeof location !== 'string') return null;
  try {
    const next = new URL(location, base); // relative Locations resolve against the current URL
    return next.protocol === 'https:' || next.protocol === 'http:' ? next : null;
  } catch {
    // not a URL: no redirect to follow, the response is relayed as it is.
    return null;
  }
}

function trustedRoots(extraFile: string | null): string[] {
  const roots = [...tls.rootCertificates];
  for (const file of SYSTEM_BUNDLES) {
    try {
      roots.push(fs.readFileSync(file, 'utf8'));
      break;
    } catch {
      // not this distribution's layout
    }
  }
  if (extraFile) roots.push(fs.readFileSync(extraFile, 'utf8')); // unreadable: startup fails, as it should
  return roots;
}
