// Requests regcache makes on its own behalf (not for a client): when upstream answers 401 with a
// `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge, fetch a token from the realm
// (anonymously, or with AUTH_REGISTRIES credentials, which the upstream client injects for the realm's
// host) and retry once. Tokens are cached until they expire. The credentials go only to a realm on the
// challenging registry's own domain (realmMayHaveCredentials): any registry may name any realm, and a token
// minted with them is handed to the registry that asked (decision #133).
import net from 'node:net';
import type { Logger } from '../telemetry/log.js';
import { readBounded } from './bounded-body.js';
import { isSharedDomain } from './shared-domains.js';
import type { Upstream, UpstreamClient, UpstreamRequest, UpstreamResponse } from './upstream-client.js';

interface CachedToken {
  token: string;
  expiresAt: number;
}

const DEFAULT_TOKEN_SECONDS = 60; // the distribution spec's default when expires_in is absent
const MAX_CACHED_TOKENS = 1000;
const MAX_NOTED_REALMS = 100; // each withheld (registry, realm) pair is logged once

/**
 * Whether a token realm named by the registry at `registry` may be sent AUTH_REGISTRIES credentials: the
 * registry's own host or a name under it, or a host on the domain the registry's host is in when that
 * domain has two labels or more and is not shared between owners (registry-1.docker.io -> auth.docker.io,
 * registry.gitlab.com -> gitlab.com; quay.io -> quay.io or *.quay.io, never another .io; vendor.azurecr.io
 * never -> company.azurecr.io: shared-domains.ts). An IP address: only itself.
 */
export function realmMayHaveCredentials(registry: string, realm: string): boolean {
  if (registry === realm) return true;
  if (net.isIP(registry) !== 0 || net.isIP(realm) !== 0) return false;
  if (realm.endsWith(`.${registry}`)) return true;
  const parent = registry.split('.').slice(1);
  if (parent.length < 2) return false;
  const domain = parent.join('.');
  if (isSharedDomain(domain)) return false;
  return realm === domain || realm.endsWith(`.${domain}`);
}

export class UpstreamTokens {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly noted = new Set<string>();

  constructor(
    private readonly upstream: UpstreamClient,
    private readonly log: Logger | null = null,
  ) {}

  /** One request as regcache itself (no body, redirects followed); the answer's body is the caller's to consume. */
  async request({ url, method, headers = {} }: UpstreamRequest): Promise<UpstreamResponse> {
    const first = await this.upstream.request({ url, method, headers });
    const challenge = first.statusCode === 401 ? parseBearerChallenge(first.headers['www-authenticate']) : null;
    if (!challenge) return first;
    first.body.resume();
    const token = await this.token(challenge, url);
    if (!token) return first;
    return this.upstream.request({ url, method, headers: { ...headers, authorization: `Bearer ${token}` } });
  }

  /** A token for the challenge `challenged` answered with; null when the realm gives none. */
  private async token(challenge: BearerChallenge, challenged: URL): Promise<string | null> {
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      // an unusable realm: no token, the caller relays upstream's 401.
      return null;
    }
    const credentials = realmMayHaveCredentials(challenged.hostname, realm.hostname);
    const key = `${challenge.realm}|${challenge.service}|${challenge.scope}|${credentials}`;
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.token;
    if (!credentials) this.noteWithheld(challenged.host, realm.host);
    if (challenge.service) realm.searchParams.set('service', challenge.service);
    if (challenge.scope) realm.searchParams.set('scope', challenge.scope);
    const res = await this.upstream.request({ url: realm, method: 'GET', ownCredentials: credentials });
    if (res.statusCode !== 200) {
      res.body.resume();
      return null;
    }
    const body = await readJson(res);
    const token = body?.token ?? body?.access_token;
    if (!token) return null;
    if (this.tokens.size >= MAX_CACHED_TOKENS) this.tokens.clear();
    // Expire a little early: a token must not run out between our check and upstream's.
    this.tokens.set(key, { token, expiresAt: Date.now() + Math.max(1, (body?.expires_in ?? DEFAULT_TOKEN_SECONDS) - 5) * 1000 });
    return token;
  }

  /** Says once per pair why a token request went without AUTH_REGISTRIES credentials: a 401 that follows is explained. */
  private noteWithheld(registry: string, realm: string): void {
    const pair = `${registry} ${realm}`;
    if (this.noted.has(pair) || this.noted.size >= MAX_NOTED_REALMS) return;
    this.noted.add(pair);
    this.log?.info(
      { registry, realm },
      "token realm not on the registry's own domain: asked without AUTH_REGISTRIES credentials (a token made with them would go to the registry that asked)",
    );
  }
}

interface BearerChallenge {
  realm: string;
  service: string;
  scope: string;
}

export function parseBearerChallenge(header: string | string[] | undefined): BearerChallenge | null {
  const value = Array.isArray(header) ? header.find((h) => /^bearer\s/i.test(h)) : header;
  if (!value || !/^bearer\s/i.test(value)) return null;
  const params: Record<string, string> = {};
  for (const m of value.slice(6).matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) params[m[1]!.toLowerCase()] = m[2]!;
  return params.realm ? { realm: params.realm, service: params.service ?? '', scope: params.scope ?? '' } : null;
}

// Docker Hub's tokens are ~1-2 KiB; a realm that sends more than this is not answering a token request.
const MAX_TOKEN_RESPONSE = 64 * 1024;

/** The token response's JSON (null when it is not JSON); BodyTooLargeError past MAX_TOKEN_RESPONSE: the request fails (502). */
async function readJson(res: UpstreamResponse): Promise<{ token?: string; access_token?: string; expires_in?: number } | null> {
  const body = await readBounded(res.body, MAX_TOKEN_RESPONSE, `the token response of ${res.url.host}`, res.headers['content-length']);
  try {
    return JSON.parse(body.toString('utf8')) as { token?: string; access_token?: string; expires_in?: number };
  } catch {
    // not JSON: no token, the caller relays upstream's 401.
    return null;
  }
}

/**
 * The mirror's upstream: requests go out as regcache itself. A mirror client's Authorization is for the
 * mirror's door (MIRROR_AUTH or PROXY_AUTH), never for upstream, so it is dropped; upstream's Bearer
 * challenges are answered with regcache's own tokens (anonymous, or AUTH_REGISTRIES credentials for the
 * realm).
 */
export class TokenUpstream implements Upstream {
  constructor(private readonly tokens: UpstreamTokens) {}

  request({ url, method, headers = {} }: UpstreamRequest): Promise<UpstreamResponse> {
    const { authorization: _dropped, ...rest } = headers;
    return this.tokens.request({ url, method, headers: rest });
  }
}
