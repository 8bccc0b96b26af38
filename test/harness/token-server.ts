import { createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { listenHttps } from './https-server.js';
import { createSigningCert, type TestCA } from './pki.js';

export interface TokenServerOptions {
  /** Where the TLS and JWT-signing certificates are written. */
  dir: string;
  /** Signs the HTTPS certificate. */
  ca: TestCA;
  /** Names for the HTTPS certificate (e.g. auth.docker.io); 127.0.0.1 is always added. */
  hostnames?: string[];
  /** JWT `aud`; must equal the registry's auth.token.service. */
  service?: string;
  /** JWT `iss`; must equal the registry's auth.token.issuer. */
  issuer?: string;
  /** Basic-auth credentials; when set, repos in privateRepos need them for pull. */
  users?: Record<string, string>;
  privateRepos?: string[];
  /** Token lifetime in seconds (default 300, like Docker Hub). */
  expiresIn?: number;
}

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequest {
  method: string;
  /** Path plus query string. */
  path: string;
  /** Whether an Authorization header was sent. */
  authorization: boolean;
  /** Authenticated user, if Basic credentials were valid. */
  user?: string;
  scopes: string[];
  status: number;
  /** What the issued token grants (empty when nothing was granted). */
  granted: Access[];
}

export interface TokenServer {
  port: number;
  /** https://127.0.0.1:PORT */
  url: string;
  /** `${url}/token`: the local realm; callers may advertise another hostname instead. */
  realm: string;
  /** PEM file with the JWT-signing certificate, for the registry's rootcertbundle. */
  rootCertBundleFile: string;
  issuer: string;
  service: string;
  /** Live list, appended per request. */
  requests: TokenRequest[];
  /** Sign a token directly, e.g. push rights for seeding a registry. */
  mintToken(access: Access[], subject?: string): string;
  stop(): Promise<void>;
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

/** Parse "repository:name:pull,push" (name itself may contain ':' only via a port, which we don't need). */
export function parseScope(scope: string): Access | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return null;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope
      .slice(last + 1)
      .split(',')
      .filter(Boolean),
  };
}

/**
 * RS256 JWT the way distribution 2.8 verifies it: the x5c header carries the
 * signing certificate, which must chain to (here: be in) rootcertbundle.
 */
function signJwt(key: KeyObject, certDer: Buffer, claims: Record<string, unknown>): string {
  const header = { typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${b64url(sign('sha256', Buffer.from(input), key))}`;
}

function basicUser(header: string | undefined, users: Record<string, string> | undefined): { user?: string; bad: boolean } {
  if (header === undefined || !/^basic /i.test(header)) return { bad: false };
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  const user = colon === -1 ? decoded : decoded.slice(0, colon);
  const pass = colon === -1 ? '' : decoded.slice(colon + 1);
  if (users !== undefined && Object.hasOwn(users, user) && users[user] === pass) return { user, bad: false };
  return { bad: true };
}

/** A Docker-Hub-shaped token issuer (GET /token?service=..&scope=..). */
export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  await mkdir(opts.dir, { recursive: true });
  const service = opts.service ?? 'registry.docker.io';
  const issuer = opts.issuer ?? 'auth.docker.io';
  const expiresIn = opts.expiresIn ?? 300;
  const hostnames = opts.hostnames ?? ['auth.docker.io', 'localhost'];
  const tls = await opts.ca.issue(hostnames.includes('127.0.0.1') ? hostnames : [...hostnames, '127.0.0.1'], opts.dir, 'token-server');
  const signer = await createSigningCert(opts.dir, 'token-signer', `${issuer} token signer`);
  const signingKey = createPrivateKey(signer.keyPem);
  const certDer = Buffer.from(new X509Certificate(signer.certPem).raw);
  const privateRepos = new Set(opts.privateRepos ?? []);
  const requests: TokenRequest[] = [];

  function mintToken(access: Access[], subject = ''): string {
    const now = Math.floor(Date.now() / 1000);
    return signJwt(signingKey, certDer, {
      iss: issuer,
      sub: subject,
      aud: service,
      exp: now + expiresIn,
      nbf: now - 60,
      iat: now,
      jti: randomBytes(16).toString('hex'),
      access,
    });
  }

  /** Anonymous: pull on public repos only. Authenticated: whatever was asked. */
  function grant(scope: Access, user: string | undefined): Access | null {
    if (scope.type !== 'repository') return null;
    const isPrivate = opts.users !== undefined && privateRepos.has(scope.name);
    const actions = user !== undefined ? scope.actions : isPrivate ? [] : scope.actions.filter((a) => a === 'pull');
    return actions.length > 0 ? { ...scope, actions } : null;
  }

  const server = await listenHttps(tls, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://token.invalid');
    const scopes = url.searchParams
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .filter(Boolean);
    const entry: TokenRequest = {
      method: req.method ?? '',
      path: req.url ?? '',
      authorization: req.headers.authorization !== undefined,
      scopes,
      status: 200,
      granted: [],
    };
    requests.push(entry);
    const reply = (status: number, body: unknown): void => {
      entry.status = status;
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };

    if (req.method !== 'GET' || url.pathname !== '/token') {
      reply(404, { details: 'not found' });
      return;
    }
    const auth = basicUser(req.headers.authorization, opts.users);
    if (auth.bad) {
      reply(401, { details: 'incorrect username or password' });
      return;
    }
    if (auth.user !== undefined) entry.user = auth.user;
    // Like Docker Hub: ungranted scopes still yield a token, just without that access.
    entry.granted = scopes.map(parseScope).flatMap((s) => {
      const g = s === null ? null : grant(s, auth.user);
      return g === null ? [] : [g];
    });
    const token = mintToken(entry.granted, auth.user ?? '');
    reply(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date().toISOString() });
  });

  const url = `https://127.0.0.1:${server.port}`;
  return {
    port: server.port,
    url,
    realm: `${url}/token`,
    rootCertBundleFile: signer.certFile,
    issuer,
    service,
    requests,
    mintToken,
    stop: () => server.close(),
  };
}
