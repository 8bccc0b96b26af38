// Every environment variable regcache reads, once: its README section, default, syntax (parser and
// validator), an example, a line for .env.example and the README's description, and, for a secret, how it
// may be shown. loadConfig (config.ts) reads the environment through this table only; `npm run
// docs:config` writes the README's configuration tables and .env.example from it (test/config-docs.test.ts
// fails when they drift). A setting whose validity depends on another reads that one's text (`at.text`).
import os from 'node:os';
import { ConfigError, invalid, type ValueSite } from './config-error.js';
import {
  NO_AUTH,
  addressRanges,
  bool,
  cacheStore,
  connectToRules,
  destinations,
  duration,
  filePath,
  hostList,
  hostName,
  oneOf,
  port,
  portRanges,
  regex,
  registryCredentials,
  s3Endpoint,
  size,
  splitList,
  upstreamProxy,
} from './value-syntax.js';

export type Env = Record<string, string | undefined>;

/** VERIFY_ON_READ's modes (decisions.md #107). */
export const VERIFY_MODES = ['once', 'always', 'off'] as const;
export type VerifyMode = (typeof VERIFY_MODES)[number];

/** CLI flags that override the environment variable of the same meaning (`flag` in the table). */
export interface ConfigOverrides {
  port?: string;
  caDir?: string;
  cacheDir?: string;
  connectTo?: string[];
  upstreamProxy?: string;
  logLevel?: string;
}

/** What a parser knows besides the value: whose value it is, an example, and the other settings' texts. */
export interface SettingContext extends ValueSite {
  /** Another setting's effective text (environment, flag or default); undefined when unset. */
  text(name: string): string | undefined;
}

export interface Setting<T, Defaulted extends boolean = boolean> {
  section: SectionId;
  /** The value when unset, as a user would write it; a function when it depends on other settings. */
  default: Defaulted extends true ? string | ((at: SettingContext) => string) : undefined;
  /** The README's Default column (markdown) where the literal default would not say it; else `default`. */
  defaultText?: string;
  /** What the Docker image sets (Dockerfile ENV): .env.example leaves these commented out. */
  image?: string;
  example: string;
  parse(value: string, at: SettingContext): T;
  /** One line of plain text for .env.example. */
  summary: string;
  /** The README's Meaning column (markdown). */
  description: string;
  /** A secret is shown (startup description) only through this; never its text. */
  secret?(value: T): unknown;
  /** The `regcache serve` flag that overrides it. */
  flag?: `--${string}`;
  /** Other names read when this one is unset (NO_PROXY: no_proxy). */
  aliases?: string[];
  /** Kept as given, surrounding spaces included (a delimiter may be a space); only '' is unset. */
  untrimmed?: boolean;
}

/** A setting with a default: its value is never null. */
function defaulted<T>(s: Setting<T, true>): Setting<T, true> {
  return s;
}

/** A setting without one: null when unset. */
function optional<T>(s: Omit<Setting<T, false>, 'default'>): Setting<T, false> {
  return { ...s, default: undefined };
}

export type SectionId = 'listeners' | 'store' | 'fleet' | 'registries' | 'upstream' | 'mirror' | 'access' | 'process';

/** The README's subsections of "Configuration", in order; `note` opens the section there and in .env.example. */
export const SECTIONS: Record<SectionId, { title: string; note?: string }> = {
  listeners: {
    title: 'Ports and directories',
    note: 'The image sets `PORT`, `MIRROR_PORT`, `CA_DIR` and `CACHE_DIR` (ports 3128 and 5000, volumes `/ca` and `/docker_mirror_cache`), and `docker-compose.yaml` never passes them to the container: set them for `npm start` (with `docker run`, `-e` moves them).',
  },
  store: { title: 'The cache' },
  fleet: {
    title: 'A fleet: the cache in a bucket',
    note: 'Several replicas share an S3-compatible bucket ([docs/scale-out.md](docs/scale-out.md); a whole deployment: `deploy/compose/`).',
  },
  registries: { title: 'What is intercepted and cached' },
  upstream: { title: 'Upstream' },
  mirror: { title: 'Registry-mirror mode' },
  access: { title: 'Who may use regcache, and where it connects' },
  process: { title: 'Processes and logs' },
};

const DEFAULT_REGISTRIES = 'registry.k8s.io gcr.io quay.io ghcr.io';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
// Loopback and the private ranges (RFC 1918, RFC 4193 unique-local, link-local IPv6): squid's localnet.
const DEFAULT_ALLOWED_CLIENTS = '127.0.0.0/8 ::1 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7 fe80::/10';
// squid's Safe_ports for plain HTTP: 80 and the unprivileged ports; never SMTP, SSH and their neighbours.
const DEFAULT_FORWARD_PORTS = '80 1025-65535';
// More processes than this buys nothing on any machine regcache runs on, and each costs ~60 MB.
const MAX_WORKERS = 256;
// Below this many usable CPUs the default is one process: on 2 cores a primary and two workers spent
// 1.2-1.35x the CPU of one process per pull and pulled no faster (docs/decisions.md, issue 24).
const WORKERS_FROM_CPUS = 4;

/** WORKERS' default without CACHE_STORE: one per usable CPU from WORKERS_FROM_CPUS on, else one process. */
export function defaultWorkers(cpus: number): number {
  return cpus >= WORKERS_FROM_CPUS ? cpus : 1;
}
// SigV4 presigned URLs are valid for 1 s to 7 days.
const MAX_REDIRECT_TTL_MS = 7 * 24 * 3600_000;
const MIRROR_TLS = {
  cert: { name: 'MIRROR_TLS_CERT', example: '/etc/regcache/mirror.crt' },
  key: { name: 'MIRROR_TLS_KEY', example: '/etc/regcache/mirror.key' },
};

/** A setting that is off (`off`) unless there is a bucket: any other value without CACHE_STORE is an error. */
function onlyWithBucket<T>(parse: (value: string, at: SettingContext) => T, off: T, expected: string): (value: string, at: SettingContext) => T {
  return (value, at) => {
    const parsed = parse(value, at);
    if (parsed !== off && at.text('CACHE_STORE') === undefined) {
      throw invalid(at, value, expected, `CACHE_STORE=s3://regcache/cache ${at.name}=${at.example}`);
    }
    return parsed;
  };
}

const localTierSize = onlyWithBucket(
  (value, at) => (value === '0' ? 0 : size(value, at)),
  0,
  "0 or unset without CACHE_STORE: the local tier keeps copies of a bucket's content (CACHE_DIR is the store itself otherwise)",
);
const redirect = onlyWithBucket(bool, false, 'false (or unset) without CACHE_STORE: only blobs stored in a bucket can be redirected to');

/** S3_REDIRECT_TTL: whole seconds, at most 7 days (SigV4's limit). */
function redirectTtl(value: string, at: SettingContext): number {
  const ms = duration(value, at);
  if (ms < 1000 || ms > MAX_REDIRECT_TTL_MS || ms % 1000 !== 0) throw invalid(at, value, 'whole seconds from 1s to 7d (what a presigned URL allows)');
  return ms;
}

/** VERIFY_ON_READ: a mode, or the boolean it was before modes (true: always, false: off). */
function verifyMode(value: string, at: SettingContext): VerifyMode {
  const v = value.toLowerCase();
  if ((VERIFY_MODES as readonly string[]).includes(v)) return v as VerifyMode;
  try {
    return bool(value, at) ? 'always' : 'off';
  } catch {
    throw invalid(at, value, `one of ${VERIFY_MODES.join(', ')} (true: always, false: off)`);
  }
}

/** WORKERS: 1-256; 1 with CACHE_STORE (one process per replica: the workers' shared store is a directory). */
function workers(value: string, at: SettingContext): number {
  const n = /^\d{1,3}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= MAX_WORKERS)) throw invalid(at, value, `a number of processes 1-${MAX_WORKERS} (1: one process, no workers)`);
  if (n > 1 && at.text('CACHE_STORE') !== undefined) {
    throw new ConfigError(at.name, value, '1 (or unset) with CACHE_STORE: each replica is one process; run more replicas instead');
  }
  return n;
}

/** MIRROR_AUTH, ADMIN_AUTH: users as PROXY_AUTH (loaded by auth/user-set.ts), or "none" (any case). */
function doorUsers(value: string): string {
  return value.toLowerCase() === NO_AUTH ? NO_AUTH : value;
}

/** An *_AUTH value as the startup description shows it: the file, "none", or only that users were listed inline. */
function showUsers(value: string | null): string | null {
  return value !== null && value.includes(':') ? '(inline users)' : value;
}

/** MIRROR_TLS_CERT and MIRROR_TLS_KEY come as a pair: the missing one is named. */
function tlsFile(other: { name: string; example: string }, self: string): (value: string, at: SettingContext) => string {
  return (value, at) => {
    if (at.text(other.name) === undefined) throw new ConfigError(other.name, '', `set together with ${self}, e.g. ${other.name}=${other.example}`);
    return filePath(value);
  };
}

export const SETTINGS = {
  // Ports and directories
  PORT: defaulted({
    section: 'listeners',
    default: '3128',
    image: '3128',
    example: '3128',
    parse: port,
    flag: '--port',
    summary: 'Listening port (all interfaces, IPv4 and IPv6); 0: any free port.',
    description: 'Listening port, all interfaces, IPv4 and IPv6.',
  }),
  MIRROR_PORT: defaulted({
    section: 'listeners',
    default: '5000',
    image: '5000',
    example: '5000',
    parse: port,
    summary: 'The registry-mirror listener (plain HTTP) for containerd hosts.toml / dockerd registry-mirrors; 0: off.',
    description: 'The registry-mirror listener (plain HTTP); `0` turns it off (and with it `regcache prefetch`).',
  }),
  ADMIN_PORT: defaulted({
    section: 'listeners',
    default: '0',
    example: '9090',
    parse: port,
    summary: 'Admin endpoints (/metrics, /healthz, /api/v1/cache, ...) on a port of their own too; 0: only on PORT.',
    description: 'Also serve the admin endpoints (`/metrics`, `/healthz`, ...) on this port; `0`: only on `PORT`.',
  }),
  CA_DIR: defaulted({
    section: 'listeners',
    default: './certs',
    image: '/ca',
    example: '/ca',
    parse: filePath,
    flag: '--ca-dir',
    summary: 'The CA certificate and key, generated on first start, reused afterwards (clients must trust CA_DIR/ca.crt).',
    description:
      'Where `ca.crt` and `ca.key` (mode 0600) are created and reused, and `leaf.key` (0600), the key of the certificates regcache shows for intercepted hosts (when CA_DIR is read-only, it is made at each start instead); a directory regcache creates is 0700, whatever the umask.',
  }),
  CA_KEY_PASSPHRASE: optional({
    section: 'listeners',
    defaultText: "rpardini's `foobar`",
    example: 'my-ca-passphrase',
    parse: (value) => value,
    secret: () => '(set)',
    untrimmed: true, // spaces may be part of a passphrase
    summary:
      "The passphrase of an encrypted CA_DIR/ca.key (kept encrypted on disk); a new CA's key is encrypted with it. Unset: an encrypted key is opened with rpardini/docker-registry-proxy's published passphrase (foobar).",
    description:
      "Opens an encrypted `ca.key` (PKCS#8 or openssl's traditional PEM), which stays encrypted on disk; a new CA's key is written encrypted with it. Unset: an encrypted key is tried with rpardini/docker-registry-proxy's published passphrase, with a warning. Never logged.",
  }),
  CACHE_DIR: defaulted({
    section: 'listeners',
    default: './data/cache',
    image: '/docker_mirror_cache',
    example: '/docker_mirror_cache',
    parse: filePath,
    flag: '--cache-dir',
    summary: 'The content-addressed cache (with CACHE_STORE: spool files and the control socket only).',
    description:
      'The content store. Made 0700 at every start (it and every directory regcache creates in it; files 0600), whatever the umask. With `CACHE_STORE`, spool files and the control socket only.',
  }),
  DISABLE_IPV6: defaulted({
    section: 'listeners',
    default: 'false',
    example: 'true',
    parse: bool,
    summary: 'Listen on IPv4 only.',
    description: 'Listen on IPv4 only.',
  }),

  // The cache
  CACHE_MAX_SIZE: defaulted({
    section: 'store',
    default: '32g',
    example: '32g',
    parse: size,
    summary: 'Bound on stored content (nginx size syntax: 32g, 500m, 1024k, bytes); least recently used goes first.',
    description: 'Bound on the stored content, nginx size syntax (`500m`, `1024k`, bytes); least recently used goes first.',
  }),
  MANIFEST_MAX_SIZE: defaulted({
    section: 'store',
    default: '4m',
    example: '4m',
    parse: size,
    summary: 'Largest manifest regcache takes from upstream (nginx size syntax); a larger one is answered 502, never held or stored.',
    description:
      "Largest manifest regcache takes from upstream (nginx size syntax; distribution's own bound is 4 MiB). A larger one is refused with `502` and a log line: never held in memory or stored.",
  }),
  CACHE_INACTIVE: defaulted({
    section: 'store',
    default: '60d',
    example: '60d',
    parse: duration,
    summary: 'Content unused this long is removed (nginx time syntax: 60d, 12h, 30m).',
    description: 'Content unused this long is removed, nginx time syntax (`12h`, `30m`, `1h30m`).',
  }),
  VERIFY_ON_READ: defaulted({
    section: 'store',
    default: 'once',
    example: 'always',
    parse: verifyMode,
    summary:
      'once: hash a cached blob in full the first time it is served, then serve it unhashed while its file is unchanged (inode, size, mtime, ctime), with SCRUB_RATE re-hashing stored files in the background; always: hash every HIT; off: trust the disk. A mismatch cuts the client, drops the entry and refetches.',
    description:
      'How a HIT is checked against its digest. `once`: hashed in full the first time this process serves it (unless a fill of this process wrote it: its bytes were hashed on the way in), then trusted while its file is unchanged (device, inode, size, mtime, ctime, checked again before the last byte: a change cuts the client and the file is hashed again); `SCRUB_RATE` re-hashes stored files in the background and drops what no longer matches. `always` (or `true`): every HIT is hashed while served. `off` (or `false`): the disk is trusted; the size check stays. A mismatch while serving holds back the last byte and cuts the client (`CORRUPT`, entry dropped, refetched next time). What each mode lets through and who catches it: decision #107.',
  }),
  SCRUB_RATE: defaulted({
    section: 'store',
    default: '4m',
    example: '64m',
    parse: (value, at) => (value === '0' ? 0 : size(value, at)),
    summary:
      'Bytes per second the background scrubber re-hashes stored files at (nginx size syntax); a file that no longer matches its digest is dropped. 0: off.',
    description:
      'Bytes per second (nginx size syntax, `0`: off) at which the process owning `CACHE_DIR` re-hashes stored files, oldest use first, round and round, and drops one that no longer matches its digest (log: `stored content does not match its digest; dropped`, `scrub`). What catches a change no timestamp shows (the disk itself) with `VERIFY_ON_READ=once`. Not with `CACHE_STORE`.',
  }),

  // A fleet
  CACHE_STORE: optional({
    section: 'fleet',
    defaultText: 'unset (`CACHE_DIR`)',
    example: 's3://regcache/cache',
    parse: cacheStore,
    summary:
      "The cache in an S3-compatible bucket shared by several replicas: s3://BUCKET[/PREFIX]. Credentials and region: the AWS SDK's chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, shared config, instance and pod roles).",
    description:
      "`s3://BUCKET[/PREFIX]`: keep the cache in an S3-compatible bucket shared by several regcache replicas (behind a load balancer): what one fetched the others serve, and each blob is fetched upstream by one replica. Created when missing. `CACHE_DIR` then holds only spool files and the control socket; one process per replica (`WORKERS=1`). Credentials and region: the AWS SDK's usual chain (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, shared config, instance and pod roles; region `us-east-1` when none). `CACHE_MAX_SIZE`/`CACHE_INACTIVE` bound the bucket, enforced by one replica at a time from every replica's access times (`S3_SWEEP_INTERVAL`, `S3_ACCESS_FLUSH`, `S3_EVICT_GRACE`). Design: [docs/scale-out.md](docs/scale-out.md).",
  }),
  S3_ENDPOINT: optional({
    section: 'fleet',
    defaultText: 'AWS S3',
    example: 'http://minio:9000',
    parse: s3Endpoint,
    summary: 'The S3 API of another service: MinIO, Ceph RGW, R2, ...',
    description: "The S3 API's URL for another service: MinIO, Ceph RGW, R2, ... (`http://minio:9000`).",
  }),
  S3_FORCE_PATH_STYLE: defaulted({
    section: 'fleet',
    default: 'false',
    example: 'true',
    parse: bool,
    summary: 'ENDPOINT/BUCKET/key rather than BUCKET.ENDPOINT/key (most self-hosted services want true).',
    description: '`true`: `ENDPOINT/BUCKET/key` rather than `BUCKET.ENDPOINT/key` (most self-hosted services want it).',
  }),
  S3_FILL_LEASE: defaulted({
    section: 'fleet',
    default: '30s',
    example: '30s',
    parse: duration,
    summary: 'How long replicas wait for one that stopped renewing its claim on a download before taking it over.',
    description: 'How long the other replicas wait for a replica that stopped renewing its claim on a download (it died) before one of them takes it over.',
  }),
  S3_SWEEP_INTERVAL: defaulted({
    section: 'fleet',
    default: '1m',
    example: '1m',
    parse: duration,
    summary: 'How often the replica holding the eviction lease enforces CACHE_MAX_SIZE and CACHE_INACTIVE on the bucket.',
    description:
      'With `CACHE_STORE`: how often the replica holding the eviction lease enforces `CACHE_MAX_SIZE` and `CACHE_INACTIVE` on the bucket, and how often the others try for the lease (it is `S3_FILL_LEASE` long). Short values are for tests.',
  }),
  S3_ACCESS_FLUSH: defaulted({
    section: 'fleet',
    default: '30s',
    example: '30s',
    parse: duration,
    summary: 'How often each replica writes its batch of access times for the sweeper.',
    description:
      'With `CACHE_STORE`: how often each replica writes its batch of access times (what it served, what it is reading) for the sweeper. Short values are for tests.',
  }),
  S3_EVICT_GRACE: defaulted({
    section: 'fleet',
    default: '10m',
    example: '10m',
    parse: duration,
    summary: "How long evicted content's bytes stay in the bucket, unused, before they are deleted (keep it above 30s + S3_ACCESS_FLUSH).",
    description:
      "With `CACHE_STORE`: how long evicted content's bytes stay in the bucket, and must go unused, before they are deleted; keep it well above 30 s plus `S3_ACCESS_FLUSH`. Short values are for tests.",
  }),
  S3_REDIRECT: defaulted({
    section: 'fleet',
    default: 'false',
    example: 'true',
    parse: redirect,
    summary: 'Blob GETs answered 307 to a presigned bucket URL (clients must reach S3_ENDPOINT). Needs CACHE_STORE.',
    description:
      "With `CACHE_STORE` only (a config error without it): a GET of a stored blob that the client may read (the private-content check runs first) is answered `307` to a presigned URL of its object in the bucket, so the bytes go from S3 to the client, not through the replica. HEADs, manifests and fills in progress are answered as before. Clients must reach `S3_ENDPOINT` (as the replica sees it) themselves: through a proxy, add it to `NO_PROXY`, or through regcache's own port it must pass the destination policy (`ALLOW_DESTINATIONS` for a loopback or this-host endpoint). The URL is a credential for its lifetime ([docs/security.md](docs/security.md)). Logged as `cache=HIT` with `redirect: true` (never the URL), counted in `regcache_redirects_total`.",
  }),
  S3_REDIRECT_TTL: defaulted({
    section: 'fleet',
    default: '5m',
    example: '5m',
    parse: redirectTtl,
    summary: "How long a redirect's presigned URL is valid (1s to 7d).",
    description:
      "How long a redirect's presigned URL is valid (1 s to 7 d). Long enough for a client to start the download after the `307`; a download that started finishes after it expires.",
  }),
  LOCAL_TIER_MAX_SIZE: defaulted({
    section: 'fleet',
    default: '0',
    defaultText: '`0` (off)',
    example: '20g',
    parse: localTierSize,
    summary: "Hot content also kept on this replica's disk, up to this size (0: off). Needs CACHE_STORE.",
    description:
      "With `CACHE_STORE`: keep copies of hot content on this replica's disk as well, in `CACHE_DIR/tier`, up to this size (nginx size syntax; least recently used go first), so a warm replica serves it without reading the bucket. A copy comes from this replica's own fill, or from a HIT that read the whole blob from the bucket, and is verified against its digest first; it is served only while the bucket's index has the entry, dropped when the entry is removed or swept (seen at the next refresh, 30 s), and wiped at start. An error without `CACHE_STORE`. Decision #89.",
  }),

  // What is intercepted and cached
  REGISTRIES: defaulted({
    section: 'registries',
    default: DEFAULT_REGISTRIES,
    example: 'registry.example.com *.example.org:5000',
    parse: hostList,
    summary: 'Registries to intercept and cache, besides Docker Hub (always): host[:port] and *.example.com, space or comma separated.',
    description:
      'Hosts to intercept and cache, besides Docker Hub (`registry-1.docker.io`, `auth.docker.io`, always). Space or comma separated, `:port` and `*.example.com` allowed; an entry without a port means port 443 (list `registry.internal:5000` for a registry on 5000).',
  }),
  ADDITIONAL_REGISTRIES: optional({
    section: 'registries',
    example: 'registry.internal:5000',
    parse: hostList,
    summary: 'More registries, added to REGISTRIES.',
    description: 'More hosts to intercept, added to `REGISTRIES`.',
  }),
  SERVE_STALE: defaulted({
    section: 'registries',
    default: 'true',
    example: 'false',
    parse: bool,
    summary: 'Serve the last known manifest of a tag when upstream fails (Warning: 110 header, cache STALE).',
    description: 'Serve the last known manifest of a tag when upstream fails (`STALE`).',
  }),
  ENABLE_MANIFEST_CACHE: defaulted({
    section: 'registries',
    default: 'false',
    example: 'true',
    parse: bool,
    summary: "rpardini's manifest cache: tags trusted without asking upstream for a while (the tiers below, regex on the tag).",
    description:
      "rpardini's manifest cache: a tag matching a tier's regex is served without asking upstream for that tier's time (see \"What is cached\"). The tiers are checked whether or not it is on.",
  }),
  MANIFEST_CACHE_PRIMARY_REGEX: defaulted({
    section: 'registries',
    default: '(stable|nightly|production|test)',
    example: '(stable|nightly)',
    parse: regex,
    summary: 'First tier: tags matching this regex are trusted for MANIFEST_CACHE_PRIMARY_TIME.',
    description: 'First tier: tags matching this regular expression are trusted for `MANIFEST_CACHE_PRIMARY_TIME`.',
  }),
  MANIFEST_CACHE_PRIMARY_TIME: defaulted({
    section: 'registries',
    default: '10d',
    example: '10m',
    parse: duration,
    summary: 'How long a tag of the first tier is trusted.',
    description: 'How long a tag of the first tier is trusted.',
  }),
  MANIFEST_CACHE_SECONDARY_REGEX: defaulted({
    section: 'registries',
    default: '(.*)(\\d|\\.)+(.*)(\\d|\\.)+(.*)(\\d|\\.)+',
    example: '^v?\\d+\\.\\d+\\.\\d+$',
    parse: regex,
    summary: 'Second tier: tags matching this regex (by default, three digits or dots: versions) are trusted for MANIFEST_CACHE_SECONDARY_TIME.',
    description:
      'Second tier: tags matching this regular expression (by default, with three digits or dots: versions) are trusted for `MANIFEST_CACHE_SECONDARY_TIME`.',
  }),
  MANIFEST_CACHE_SECONDARY_TIME: defaulted({
    section: 'registries',
    default: '60d',
    example: '60d',
    parse: duration,
    summary: 'How long a tag of the second tier is trusted.',
    description: 'How long a tag of the second tier is trusted.',
  }),
  MANIFEST_CACHE_DEFAULT_TIME: defaulted({
    section: 'registries',
    default: '1h',
    example: '1h',
    parse: duration,
    summary: 'Every other tag is trusted this long.',
    description: 'Every other tag is trusted this long.',
  }),
  ALLOW_PUSH: defaulted({
    section: 'registries',
    default: 'false',
    example: 'true',
    parse: bool,
    summary: 'Pass pushes and deletes through (otherwise they get 405).',
    description:
      'Pass pushes and deletes through instead of refusing them (uncached; blob `HEAD`s then go upstream too, since a pusher asks what the target repository holds).',
  }),

  // Upstream
  VERIFY_SSL: defaulted({
    section: 'upstream',
    default: 'true',
    example: 'false',
    parse: bool,
    summary: 'Verify upstream TLS certificates; false logs a warning at startup.',
    description: '`false` turns off upstream certificate checks (logged as a warning).',
  }),
  UPSTREAM_CA_FILE: optional({
    section: 'upstream',
    example: '/etc/regcache/internal-ca.pem',
    parse: filePath,
    summary: "Extra PEM bundle trusted for upstream TLS (e.g. an internal registry's CA).",
    description: 'PEM bundle trusted for upstream TLS on top of the system roots.',
  }),
  AUTH_REGISTRIES: optional({
    section: 'upstream',
    example: 'auth.docker.io:me:token quay.io:me:pw',
    parse: (value, at) => registryCredentials(value, at, at.text('AUTH_REGISTRIES_DELIMITER')!, at.text('AUTH_REGISTRY_DELIMITER')!),
    secret: (credentials) => credentials.map((c) => `${c.host} (${c.user})`),
    summary:
      'Credentials for upstream hosts, used when the client sends none: "host:user:pass host2:user2:pass2" (Docker Hub: auth.docker.io). Images of these hosts are then shared with every proxy client.',
    description:
      "`host:user:password` entries (space separated): Basic credentials sent to that host when the client sent none (a client's own credentials always win). For Docker Hub use `auth.docker.io`. Images of such a host are shared with every client of the proxy. Tokens regcache asks for itself (the mirror) use them only at a token realm on the registry's own domain, never across a domain shared between owners (`azurecr.io`, `jfrog.io`, `co.uk`).",
  }),
  AUTH_REGISTRIES_DELIMITER: defaulted({
    section: 'upstream',
    default: ' ',
    defaultText: 'a space',
    example: ';;;',
    parse: (value) => value,
    untrimmed: true,
    summary: 'What separates AUTH_REGISTRIES entries.',
    description: 'What separates `AUTH_REGISTRIES` entries (for passwords with spaces, e.g. a JSON key).',
  }),
  AUTH_REGISTRY_DELIMITER: defaulted({
    section: 'upstream',
    default: ':',
    example: ':::',
    parse: (value) => value,
    untrimmed: true,
    summary: 'What separates host, user and password in an AUTH_REGISTRIES entry.',
    description: 'What separates host, user and password in an `AUTH_REGISTRIES` entry.',
  }),
  UPSTREAM_CONNECT_TIMEOUT: defaulted({
    section: 'upstream',
    default: '10s',
    example: '10s',
    parse: duration,
    summary: 'Connecting to an upstream, tunnels included (nginx time syntax).',
    description: 'Connecting to an upstream, tunnels included (nginx time syntax).',
  }),
  UPSTREAM_HEADERS_TIMEOUT: defaulted({
    section: 'upstream',
    default: '60s',
    example: '60s',
    parse: duration,
    summary: "Waiting for an upstream's response headers; then 504.",
    description: "Waiting for an upstream's response headers; then 504.",
  }),
  UPSTREAM_IDLE_TIMEOUT: defaulted({
    section: 'upstream',
    default: '60s',
    example: '60s',
    parse: duration,
    summary: 'Longest silence inside an upstream body; then the transfer is cut.',
    description: 'Longest silence inside an upstream body; then the transfer is cut.',
  }),
  UPSTREAM_PROXY: optional({
    section: 'upstream',
    example: 'http://proxy.corp:3128',
    parse: upstreamProxy,
    secret: (proxy) => proxy.display,
    flag: '--upstream-proxy',
    summary: 'Corporate proxy for everything regcache sends out: http://[user:pass@]host:port.',
    description: '`http://[user:pass@]host:port`: all upstream traffic, fills and tunnels, goes through it.',
  }),
  NO_PROXY: optional({
    section: 'upstream',
    example: 'internal.corp,10.0.0.0/8',
    parse: (value) => splitList(value).map((s) => s.toLowerCase()),
    aliases: ['no_proxy'],
    summary: 'Hosts that bypass UPSTREAM_PROXY.',
    description: 'Hosts that bypass `UPSTREAM_PROXY` (`example.com` covers its subdomains; `*` all). `no_proxy` is read when it is unset.',
  }),
  CONNECT_TO: optional({
    section: 'upstream',
    example: 'registry-1.docker.io:443:127.0.0.1:5000',
    parse: connectToRules,
    flag: '--connect-to',
    summary: 'Route a host elsewhere, keeping its name for TLS: HOST:PORT:ADDR:PORT (space separated).',
    description:
      "`HOST:PORT:ADDR:PORT` (curl's `--connect-to`), space separated: connect to ADDR:PORT for HOST:PORT, keeping SNI, Host and certificate checks for HOST. The flag is repeatable and replaces the variable.",
  }),

  // Registry-mirror mode
  REGISTRY_DOMAIN: optional({
    section: 'mirror',
    example: 'mirror.example.com',
    parse: (value) => value.toLowerCase().replace(/^\./, ''),
    summary: '"<registry>.<REGISTRY_DOMAIN>" Host headers pick the mirror\'s upstream (docker.io.<domain> = Docker Hub).',
    description: 'Virtual-host routing on the mirror: `<registry>.<domain>` picks the upstream.',
  }),
  MIRROR_AUTH: optional({
    section: 'mirror',
    defaultText: "`PROXY_AUTH`'s users",
    example: '/etc/regcache/mirror-htpasswd',
    parse: doorUsers,
    secret: showUsers,
    summary: 'Who may use the mirror: htpasswd file or "user:pass"; "none": open even with PROXY_AUTH.',
    description:
      'Who may use the mirror (htpasswd file or inline `user:pass`, as `PROXY_AUTH`); `none`: open even with `PROXY_AUTH` (a startup warning). Unset and no `PROXY_AUTH`: open.',
  }),
  MIRROR_TLS_CERT: optional({
    section: 'mirror',
    example: MIRROR_TLS.cert.example,
    parse: tlsFile(MIRROR_TLS.key, MIRROR_TLS.cert.name),
    summary: 'Serve the mirror over HTTPS with this certificate (PEM file) and MIRROR_TLS_KEY.',
    description: 'Serve the mirror over HTTPS with this certificate (PEM file) and `MIRROR_TLS_KEY`.',
  }),
  MIRROR_TLS_KEY: optional({
    section: 'mirror',
    example: MIRROR_TLS.key.example,
    parse: tlsFile(MIRROR_TLS.cert, MIRROR_TLS.key.name),
    summary: "MIRROR_TLS_CERT's key (PEM file).",
    description: "`MIRROR_TLS_CERT`'s key (PEM file).",
  }),
  MIRROR_HOSTNAME: optional({
    section: 'mirror',
    example: 'regcache.internal',
    parse: hostName,
    summary: "Or over HTTPS with a certificate for this name minted from regcache's CA.",
    description: "Or over HTTPS with a certificate for this name minted from regcache's CA.",
  }),

  // Who may use regcache, and where it connects
  PROXY_AUTH: optional({
    section: 'access',
    defaultText: 'open (no users)',
    example: '/etc/regcache/htpasswd',
    parse: (value) => value, // the users are loaded (and checked) by auth/user-set.ts
    secret: showUsers,
    summary:
      'Who may use regcache: an htpasswd file (bcrypt or SHA entries) or "user:pass user2:pass2". Proxy clients then use HTTPS_PROXY=http://user:pass@regcache:3128; the mirror and the admin endpoints ask for the same users unless MIRROR_AUTH / ADMIN_AUTH say otherwise.',
    description:
      'Who may use regcache: an htpasswd file (bcrypt `htpasswd -B` or SHA `htpasswd -s` entries) or an inline `user:pass user2:pass2` list. Proxy clients put the credentials in the proxy URL: `HTTPS_PROXY=http://user:pass@regcache:3128`; without them CONNECT and forward requests get 407. The same users then guard the mirror and the admin endpoints unless `MIRROR_AUTH` / `ADMIN_AUTH` say otherwise; `/`, `/ca.crt`, `/healthz` and `/readyz` stay open. Repeated wrong passwords from one address are slowed down (up to 10 s per attempt).',
  }),
  ADMIN_AUTH: optional({
    section: 'access',
    defaultText: "`PROXY_AUTH`'s users",
    example: '/etc/regcache/admin-htpasswd',
    parse: doorUsers,
    secret: showUsers,
    summary:
      'Who may read /api/v1/*, /metrics, /setup/* and the mirror\'s /v2/_catalog (curl -u user:pass): htpasswd file or "user:pass"; "none": open even with PROXY_AUTH. /, /ca.crt, /healthz and /readyz are always open.',
    description:
      "Who may read `/status`, `/api/v1/*`, `/metrics`, `/setup/*` and the mirror's `/v2/_catalog` (htpasswd file or inline `user:pass`, as `PROXY_AUTH`), sent as `Authorization: Basic` (`curl -u`); `none`: open even with `PROXY_AUTH` (a startup warning). Unset and no `PROXY_AUTH`: open.",
  }),
  ALLOWED_CLIENTS: defaulted({
    section: 'access',
    default: DEFAULT_ALLOWED_CLIENTS,
    defaultText: 'loopback, `10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7 fe80::/10`',
    example: '10.0.0.0/8 192.168.1.0/24',
    parse: addressRanges,
    summary: 'Who may use regcache at all (every port): addresses or CIDR ranges; "any" for everyone. /ca.crt, /healthz and /readyz answer anyone (probes).',
    description:
      'Who may use regcache at all (every port): addresses or CIDR ranges, space separated; `any` for everyone. Others get 403, except for `/ca.crt`, `/healthz` and `/readyz`, which answer anyone (probes).',
  }),
  CLIENT_HEADERS_TIMEOUT: defaulted({
    section: 'access',
    default: '30s',
    example: '30s',
    parse: duration,
    summary: 'Clients: the TLS handshake and each request head must arrive within this (slowloris guard; then 408).',
    description:
      'How long a client may take for its TLS handshake and for each request head (slowloris guard); then 408 and the connection is closed. Transfers themselves have no time limit.',
  }),
  TUNNEL_PORTS: defaulted({
    section: 'access',
    default: '443',
    example: '443 8443 9000-9100',
    parse: portRanges,
    summary: 'Ports a tunnel (CONNECT) to a host off the allowlist may reach.',
    description: 'Ports a tunnel to a host off the allowlist may reach (`443 8443 9000-9100`).',
  }),
  FORWARD_PORTS: defaulted({
    section: 'access',
    default: DEFAULT_FORWARD_PORTS,
    example: '80 8080',
    parse: portRanges,
    summary: 'Ports a plain-HTTP request to a host off the allowlist may reach.',
    description: 'Ports a plain-HTTP request to a host off the allowlist may reach.',
  }),
  ALLOW_DESTINATIONS: optional({
    section: 'access',
    example: '127.0.0.1:5000 10.0.0.0/8 [::1]:5000',
    parse: destinations,
    summary:
      'Destinations refused by default (loopback, link-local, this host) that regcache should reach anyway, e.g. a registry on this host: "localhost:5000". Hosts, addresses or CIDRs with an optional :port.',
    description:
      "Destinations regcache refuses by default but should reach: loopback, link-local, this host's own addresses. Hosts, addresses or CIDR ranges, each with an optional `:port` (`localhost:5000 10.1.2.3 [::1]:5000`). Not needed for `CONNECT_TO` targets or `UPSTREAM_PROXY`.",
  }),
  DENY_DESTINATIONS: optional({
    section: 'access',
    example: '10.0.0.0/8',
    parse: destinations,
    summary: 'Destinations never to reach, same syntax (e.g. a private range that is off limits).',
    description:
      'Destinations regcache must never reach, same syntax (e.g. `10.0.0.0/8` where the private network is off limits). `ALLOW_DESTINATIONS` wins where both match.',
  }),

  // Processes and logs
  WORKERS: defaulted({
    section: 'process',
    default: (at) => (at.text('CACHE_STORE') === undefined ? String(defaultWorkers(os.availableParallelism())) : '1'),
    defaultText: 'usable CPUs when 4 or more, else `1` (`1` with `CACHE_STORE`)',
    example: '4',
    parse: workers,
    summary: 'Worker processes on the same ports and cache; 1 runs a single process.',
    description:
      'Worker processes serving the same ports and the same `CACHE_DIR`, under a primary that serves nothing itself (see "Processes" under "Operate it"); `1`: one process, no primary. The default is one per CPU regcache may run on (`docker run --cpuset-cpus`, not a CPU quota such as `--cpus`: with a quota, set it) when there are 4 or more, and `1` on fewer: on 2 cores a second process cost CPU on every pull and made none faster, but under hundreds of concurrent connections it did shorten the wait of new ones (`WORKERS=2` for that). With `CACHE_STORE`, `1` is the default and the only value (each replica is one process).',
  }),
  WORKER_STALL_TIMEOUT: defaulted({
    section: 'process',
    default: '30s',
    example: '30s',
    parse: (value, at) => (value === 'off' || value === '0' ? 0 : duration(value, at)),
    summary: 'With workers: one whose event loop leaves the primary\'s check unanswered this long is killed and replaced; "off" (or 0): never.',
    description:
      'With `WORKERS` > 1: the primary asks each serving worker a question its event loop answers, and kills one that leaves it unanswered this long (`worker stopped answering` at error, then the usual `worker exited; starting another`): a worker that is alive but stuck would otherwise hold its connections forever and never be replaced. `off` (or `0`): never (a debugger paused on a breakpoint stops the loop too).',
  }),
  LOG_LEVEL: defaulted({
    section: 'process',
    default: 'info',
    example: 'debug',
    parse: oneOf(LOG_LEVELS),
    flag: '--log-level',
    summary: 'fatal, error, warn, info, debug, trace or silent; debug adds the whole configuration at startup.',
    description:
      '`fatal`, `error`, `warn`, `info`, `debug`, `trace` or `silent`. At `debug` the startup logs every setting (`configuration`, secrets redacted).',
  }),
  LOG_FORMAT: optional({
    section: 'process',
    defaultText: 'pretty on a terminal, else `json`',
    example: 'json',
    parse: oneOf(['json', 'pretty']),
    summary: 'json: one JSON object a line; pretty: one readable line a record, cache status first. Empty: pretty on a terminal, json otherwise.',
    description:
      '`json`: one JSON object a line (what `docker logs` and log shippers read); `pretty`: one readable line a record, a request line led by its cache status (see "Reading the logs"). Unset: `pretty` when stdout is a terminal, else `json`.',
  }),
};

export type SettingName = keyof typeof SETTINGS;
type ValueOf<S> = S extends Setting<infer T, true> ? T : S extends Setting<infer T, false> ? T | null : never;
/** Every setting's parsed value, by variable name (null: unset, for a setting without a default). */
export type SettingValues = { [K in SettingName]: ValueOf<(typeof SETTINGS)[K]> };

export const SETTING_NAMES = Object.keys(SETTINGS) as SettingName[];

/** Every variable regcache reads: the table's names and their aliases. */
export function variableNames(): string[] {
  return SETTING_NAMES.flatMap((name) => [name, ...((SETTINGS[name] as Setting<unknown>).aliases ?? [])]);
}

export interface ReadSettings {
  values: SettingValues;
  /** The effective text of every setting that has one (environment, flag or default). */
  texts: Partial<Record<SettingName, string>>;
  /** The settings the environment or a flag set, in table order. */
  given: SettingName[];
}

/** Reads every setting from the environment (values trimmed, empty = unset) and the flags, and parses it. */
export function readSettings(env: Env, overrides: ConfigOverrides = {}): ReadSettings {
  const table = SETTINGS as Record<SettingName, Setting<unknown>>;
  const given = (name: SettingName): string | undefined => {
    const s = table[name];
    const flagged = s.flag ? flagText(overrides, s.flag) : undefined;
    if (flagged !== undefined) return flagged;
    for (const variable of [name, ...(s.aliases ?? [])]) {
      const raw = env[variable];
      if (raw === undefined) continue;
      const value = s.untrimmed ? raw : raw.trim();
      if (value !== '') return value;
    }
    return undefined;
  };
  const text = (name: string): string | undefined => {
    if (!(name in table)) throw new Error(`${name} is not in the settings table`);
    const value = given(name as SettingName);
    if (value !== undefined) return value;
    const d = table[name as SettingName].default;
    return typeof d === 'function' ? d(context(name)) : d;
  };
  const context = (name: string): SettingContext => ({ name, example: table[name as SettingName].example, text });

  const values: Record<string, unknown> = {};
  const texts: Partial<Record<SettingName, string>> = {};
  for (const name of SETTING_NAMES) {
    const t = text(name);
    if (t !== undefined) texts[name] = t;
    values[name] = t === undefined ? null : table[name].parse(t, context(name));
  }
  return { values: values as SettingValues, texts, given: SETTING_NAMES.filter((name) => given(name) !== undefined) };
}

/** A flag's value as the variable's text (--connect-to, repeatable, joins its rules as CONNECT_TO lists them). */
function flagText(overrides: ConfigOverrides, flag: string): string | undefined {
  const key = flag.slice(2).replace(/-(\w)/g, (_all, c: string) => c.toUpperCase()) as keyof ConfigOverrides;
  const value = overrides[key];
  if (Array.isArray(value)) return value.length > 0 ? value.join(' ') : undefined;
  return value;
}

/** A setting as the startup description shows it: its text, or for a secret only what `secret` shows. */
export function showSetting(name: SettingName, read: ReadSettings): unknown {
  const s = SETTINGS[name] as Setting<unknown>;
  const value = read.values[name];
  if (s.secret) return value === null ? null : s.secret(value);
  return read.texts[name] ?? null;
}
