// Requests regcache makes on its own behalf (not for a client): when upstream answers 401 with a
// `WWW-Authenticate: Bearer realm=...,service=...,scope=...` challenge, fetch a token from the realm
// (anonymously, or with AUTH_REGISTRIES credentials, which the upstream client injects for the realm's
// host) and retry once. Tokens are cached until they expire.
import { readBounded } from './bounded-body.js';
import type { Upstream, UpstreamClient, UpstreamRequest, UpstreamResponse } from './upstream-client.js';

interface CachedToken {
  token: string;
  expiresAt: number;
}

const DEFAULT_TOKEN_SECONDS = 60; // the distribution spec's default when expires_in is absent
const MAX_CACHED_TOKENS = 1000;

export class UpstreamTokens {
  private readonly tokens = new Map<string, CachedToken>();

  constructor(private readonly upstream: UpstreamClient) {}

  /** One request as regcache itself (no body, redirects followed); the answer's body is the caller's to consume. */
  async request({ url, method, headers = {} }: UpstreamRequest): Promise<UpstreamResponse> {
    const first = await this.upstream.request({ url, method, headers });
    const challenge = first.statusCode === 401 ? parseBearerChallenge(first.headers['www-authenticate']) : null;
    if (!challenge) return first;
    first.body.resume();
    const token = await this.token(challenge);
    if (!token) return first;
    return this.upstream.request({ url, method, headers: { ...headers, authorization: `Bearer ${token}` } });
  }

  private async token(challenge: BearerChallenge): Promise<string | null> {
    const key = `${challenge.realm}|${challenge.service}|${challenge.scope}`;
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return cached.token;
    let realm: URL;
    try {
      realm = new URL(challenge.realm);
    } catch {
      // an unusable realm: no token, the caller relays upstream's 401.
      return null;
    }
    if (challenge.service) realm.searchParams.set('service', challenge.service);
    if (challenge.scope) realm.searchParams.set('scope', challenge.scope);
    const res = await this.upstream.request({ url: realm, method: 'GET' });
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
