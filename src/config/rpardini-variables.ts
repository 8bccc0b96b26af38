// rpardini/docker-registry-proxy's variables (its Dockerfile ENV, entrypoint.sh, create_ca_cert.sh and
// README) and what regcache makes of each: the ones it reads too (settings.ts), and the ones it does not,
// with what replaces them. A migrated deployment that still sets one of the latter gets a warning at
// startup (assembly/startup.ts) rather than silence; the README's migration table is written from this.
import type { Env } from './settings.js';

export interface RpardiniVariables {
  names: string[];
  /** regcache reads them too: how they compare (markdown). */
  same?: string;
  /** regcache does not read them: what replaces them, or why nothing needs to (markdown). */
  instead?: string;
}

export const RPARDINI_VARIABLES: RpardiniVariables[] = [
  {
    names: ['REGISTRIES', 'AUTH_REGISTRIES', 'AUTH_REGISTRIES_DELIMITER', 'AUTH_REGISTRY_DELIMITER'],
    same: 'Same meaning. Docker Hub (`registry-1.docker.io`, `auth.docker.io`) is always intercepted. A registry on a port other than 443 is listed with its port.',
  },
  {
    names: ['CACHE_MAX_SIZE'],
    same: "Same syntax; the bound is on content bytes, least recently used first. rpardini's fixed 60 days of inactivity are `CACHE_INACTIVE` (default `60d`).",
  },
  { names: ['ALLOW_PUSH'], same: "Same; blob `HEAD`s then go upstream (pushes need the repository's own answer)." },
  { names: ['VERIFY_SSL'], same: 'Same. Add `UPSTREAM_CA_FILE` instead of turning it off for an internal CA.' },
  {
    names: [
      'ENABLE_MANIFEST_CACHE',
      'MANIFEST_CACHE_PRIMARY_REGEX',
      'MANIFEST_CACHE_PRIMARY_TIME',
      'MANIFEST_CACHE_SECONDARY_REGEX',
      'MANIFEST_CACHE_SECONDARY_TIME',
      'MANIFEST_CACHE_DEFAULT_TIME',
    ],
    same: "Same tiers, matched against the tag, and the same defaults but one: `MANIFEST_CACHE_PRIMARY_TIME` is `10d` here and `10m` in rpardini's image (set it to keep rpardini's). Without the manifest cache, tags are revalidated with a `HEAD` rather than always fetched.",
  },
  {
    names: ['DISABLE_IPV6'],
    same: "Read, with another meaning: regcache then listens on IPv4 only; rpardini's kept its resolver from returning IPv6 addresses of upstreams.",
  },
  {
    names: ['DEBUG', 'DEBUG_NGINX'],
    instead: '`LOG_LEVEL=debug` (every request is logged at `info` already, with its cache status); there is no mitmweb or nginx-debug.',
  },
  {
    names: ['DEBUG_HUB'],
    instead:
      "`LOG_LEVEL=debug`; to watch upstream traffic, send it through a debugging proxy of your own with `UPSTREAM_PROXY` (its CA in `UPSTREAM_CA_FILE`). Unlike rpardini's, it does not turn `VERIFY_SSL` off.",
  },
  {
    names: ['DEBUG_CA_CERT'],
    instead: 'No equivalent: the log names the CA file loaded or created (`loaded CA`); `openssl x509 -in CA_DIR/ca.crt -noout -text` shows it.',
  },
  {
    names: ['CA_CRT_FILE', 'CA_KEY_FILE', 'CA_SRL_FILE'],
    instead: '`CA_DIR`: regcache reads `CA_DIR/ca.crt` and `CA_DIR/ca.key` (and keeps no serial file).',
  },
  {
    names: ['ALLOW_OWN_AUTH'],
    instead: "No setting: a client's own credentials always win over `AUTH_REGISTRIES` (rpardini's `true`).",
  },
  {
    names: ['ALLOW_PUSH_WITH_OWN_AUTH'],
    instead:
      "No equivalent: `ALLOW_PUSH=true` passes every push through, and one without the client's own credentials is sent with `AUTH_REGISTRIES`' for its host; keep such hosts out of `AUTH_REGISTRIES`, or `ALLOW_PUSH` off.",
  },
  {
    names: ['PROXY_REQUEST_BUFFERING'],
    instead: "No setting: regcache never buffers a request body; pushes stream through (rpardini's `false`).",
  },
  { names: ['PROXY_CONNECT_TIMEOUT', 'PROXY_CONNECT_CONNECT_TIMEOUT'], instead: '`UPSTREAM_CONNECT_TIMEOUT` (fills and tunnels alike).' },
  {
    names: ['PROXY_READ_TIMEOUT'],
    instead: '`UPSTREAM_HEADERS_TIMEOUT` (waiting for response headers) and `UPSTREAM_IDLE_TIMEOUT` (silence inside a body).',
  },
  { names: ['CLIENT_HEADER_TIMEOUT'], instead: '`CLIENT_HEADERS_TIMEOUT` (with an S; default `30s`), which also bounds the TLS handshake.' },
  {
    names: ['SEND_TIMEOUT', 'CLIENT_BODY_TIMEOUT', 'PROXY_SEND_TIMEOUT'],
    instead:
      'No equivalent: regcache sets no time limit on a transfer (a multi-gigabyte layer takes as long as it takes); `UPSTREAM_IDLE_TIMEOUT` bounds silence from upstream.',
  },
  {
    names: ['PROXY_CONNECT_READ_TIMEOUT', 'PROXY_CONNECT_SEND_TIMEOUT'],
    instead: 'No equivalent: a tunnel to a host that is not intercepted stays open until either end closes it.',
  },
  { names: ['KEEPALIVE_TIMEOUT'], instead: 'No setting: an idle client connection is closed after 65 s.' },
];

export interface RetiredVariable {
  name: string;
  instead: string; // markdown: what replaces it
}

/** The rpardini variables regcache does not read that `env` sets (to anything but ''), in the list's order. */
export function retiredVariablesIn(env: Env): RetiredVariable[] {
  return RPARDINI_VARIABLES.flatMap((group) =>
    group.instead === undefined ? [] : group.names.filter((name) => (env[name] ?? '').trim() !== '').map((name) => ({ name, instead: group.instead! })),
  );
}
