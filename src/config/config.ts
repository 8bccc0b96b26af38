// Reads the environment (and CLI overrides) once, validates every value, and fails with a message that
// names the variable, the bad value and an example. Nothing else in src/ reads process.env.
import os from 'node:os';
import path from 'node:path';
import { parseAddressRange, type AddressRange } from '../reference/address-ranges.js';

export interface ConnectToRule {
  host: string; // lower-case; '' matches any host
  port: number | null; // null matches any port
  toHost: string; // '' keeps the host
  toPort: number | null; // null keeps the port
}

export interface UpstreamProxy {
  host: string;
  port: number;
  authorization: string | null; // ready-made "Basic ..." value; never logged
  display: string; // URL with the password redacted
}

/** An ALLOW_/DENY_DESTINATIONS entry: a host name (or *.domain), or an address range; optionally one port. */
export interface DestinationRule {
  host: string | null; // lower-case name, "*.domain" for any depth below domain
  range: AddressRange | null;
  port: number | null; // null: any port
}

export interface PortRange {
  from: number;
  to: number;
}

export interface Config {
  port: number;
  mirrorPort: number; // MIRROR_PORT: the registry-mirror listener; 0 turns it off
  registryDomain: string | null; // REGISTRY_DOMAIN: "<registry>.<domain>" Host headers pick the upstream
  mirrorAuth: string | null; // MIRROR_AUTH: htpasswd path or inline users, as PROXY_AUTH; NO_AUTH: open; null: PROXY_AUTH's users
  mirrorTls: { certFile: string; keyFile: string } | null; // MIRROR_TLS_CERT/KEY: serve the mirror over HTTPS
  mirrorHostname: string | null; // MIRROR_HOSTNAME: or over HTTPS with a certificate from regcache's CA
  adminPort: number; // ADMIN_PORT: admin endpoints on a port of their own too; 0: only on PORT
  adminAuth: string | null; // ADMIN_AUTH: who may read /api/v1/*, /metrics, /setup/*, the mirror's catalog; as MIRROR_AUTH
  caDir: string;
  caKeyPassphrase: string | null; // CA_KEY_PASSPHRASE: opens an encrypted ca.key (null: rpardini's default); never logged
  cacheDir: string; // the local store; with CACHE_STORE, spool files and the control socket only
  cacheStore: CacheStore | null; // CACHE_STORE=s3://bucket/prefix: the store is a bucket shared by replicas
  s3: S3Settings;
  cacheMaxSize: number; // bytes (CACHE_MAX_SIZE, nginx size syntax)
  localTierMaxSize: number; // bytes of hot content a fleet replica keeps in CACHE_DIR/tier (LOCAL_TIER_MAX_SIZE); 0: off
  cacheInactiveMs: number; // entries unused this long are swept (CACHE_INACTIVE, nginx time syntax)
  verifyOnRead: boolean; // VERIFY_ON_READ: a HIT is hashed while served and cut if it does not match its digest
  registries: string[]; // allowlist patterns, lower-case, optional :port, optional *. prefix
  allowPush: boolean;
  serveStale: boolean; // SERVE_STALE: the last known manifest of a tag when upstream fails
  manifestCache: ManifestCacheTier[] | null; // ENABLE_MANIFEST_CACHE: tags served without asking upstream for a while
  proxyAuth: string | null; // PROXY_AUTH as given: an htpasswd path or inline users (loaded by auth/user-set.ts)
  verifySsl: boolean;
  authRegistries: RegistryCredentials[]; // AUTH_REGISTRIES: Basic credentials injected per upstream host
  timeouts: { connectMs: number; headersMs: number; idleMs: number }; // UPSTREAM_*_TIMEOUT
  clientHeadersTimeoutMs: number; // CLIENT_HEADERS_TIMEOUT: a client's TLS handshake and request head must arrive within it
  upstreamCaFile: string | null;
  upstreamProxy: UpstreamProxy | null;
  noProxy: string[];
  connectTo: ConnectToRule[];
  disableIpv6: boolean;
  logLevel: string;
  workers: number; // WORKERS: worker processes serving the same ports and store; 1 keeps one process
  allowedClients: AddressRange[] | 'any'; // ALLOWED_CLIENTS: who may use any listener
  tunnelPorts: PortRange[]; // TUNNEL_PORTS: ports a tunnel to a host off the allowlist may reach
  forwardPorts: PortRange[]; // FORWARD_PORTS: ports a plain-HTTP forward to a host off the allowlist may reach
  allowDestinations: DestinationRule[]; // ALLOW_DESTINATIONS: reachable although loopback, link-local, ...
  denyDestinations: DestinationRule[]; // DENY_DESTINATIONS: never reachable (e.g. private ranges)
}

/** CACHE_STORE=s3://BUCKET[/PREFIX]. */
export interface CacheStore {
  bucket: string;
  prefix: string; // '' or ending in '/'
  display: string; // "s3://bucket/prefix/"
}

/** How the S3 store reaches its bucket; credentials and region are the AWS SDK's default chain's, never here. */
export interface S3Settings {
  endpoint: string | null; // S3_ENDPOINT: MinIO, Ceph RGW, R2, ... (null: AWS S3)
  forcePathStyle: boolean; // S3_FORCE_PATH_STYLE
  fillLeaseMs: number; // S3_FILL_LEASE: how long a replica that stopped renewing a fill's lock is waited for
  sweepMs: number; // S3_SWEEP_INTERVAL: how often the replica holding the eviction lease sweeps the bucket
  accessFlushMs: number; // S3_ACCESS_FLUSH: how often each replica writes its batch of access times
  evictGraceMs: number; // S3_EVICT_GRACE: evicted content is deleted this long after, once unused that long
  redirect: boolean; // S3_REDIRECT: a blob GET that may be served is answered 307 to a presigned URL of the object
  redirectTtlMs: number; // S3_REDIRECT_TTL: how long such a URL is valid
}

/** rpardini's manifest cache tiers: a tag matching `pattern` is trusted for `ttlMs` (the last tier matches all). */
export interface ManifestCacheTier {
  pattern: RegExp;
  ttlMs: number;
}

export interface RegistryCredentials {
  host: string; // lower-case, optional :port
  user: string;
  password: string; // never logged
}

export class ConfigError extends Error {
  constructor(variable: string, value: string, expected: string) {
    super(`${variable}=${JSON.stringify(value)} is not valid: expected ${expected}`);
    this.name = 'ConfigError';
  }
}

/** MIRROR_AUTH / ADMIN_AUTH value that leaves the door open even when PROXY_AUTH is set. */
export const NO_AUTH = 'none';

// Docker Hub is always intercepted: its registry and its token service.
const ALWAYS_INTERCEPTED = ['registry-1.docker.io', 'auth.docker.io'];
const DEFAULT_REGISTRIES = 'registry.k8s.io gcr.io quay.io ghcr.io';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
// Loopback and the private ranges (RFC 1918, RFC 4193 unique-local, link-local IPv6): squid's localnet.
const DEFAULT_ALLOWED_CLIENTS = '127.0.0.0/8 ::1 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 fc00::/7 fe80::/10';
// squid's Safe_ports for plain HTTP: 80 and the unprivileged ports; never SMTP, SSH and their neighbours.
const DEFAULT_FORWARD_PORTS = '80 1025-65535';

export type Env = Record<string, string | undefined>;

/** CLI flags that override environment variables of the same meaning. */
export interface ConfigOverrides {
  port?: string;
  caDir?: string;
  cacheDir?: string;
  connectTo?: string[];
  upstreamProxy?: string;
  logLevel?: string;
}

export function loadConfig(env: Env, overrides: ConfigOverrides = {}): Config {
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const upstreamProxyRaw = overrides.upstreamProxy ?? get('UPSTREAM_PROXY') ?? null;
  const connectToRaw = overrides.connectTo?.length ? overrides.connectTo : splitList(get('CONNECT_TO') ?? '');

  const cacheStore = parseCacheStore(get('CACHE_STORE'));

  // Validated whether or not ENABLE_MANIFEST_CACHE is on: a typo should not wait until it is.
  const manifestTiers: ManifestCacheTier[] = [
    {
      pattern: parseRegex('MANIFEST_CACHE_PRIMARY_REGEX', get('MANIFEST_CACHE_PRIMARY_REGEX') ?? '(stable|nightly|production|test)'),
      ttlMs: parseDuration('MANIFEST_CACHE_PRIMARY_TIME', get('MANIFEST_CACHE_PRIMARY_TIME') ?? '10d'),
    },
    {
      pattern: parseRegex('MANIFEST_CACHE_SECONDARY_REGEX', get('MANIFEST_CACHE_SECONDARY_REGEX') ?? '(.*)(\\d|\\.)+(.*)(\\d|\\.)+(.*)(\\d|\\.)+'),
      ttlMs: parseDuration('MANIFEST_CACHE_SECONDARY_TIME', get('MANIFEST_CACHE_SECONDARY_TIME') ?? '60d'),
    },
    { pattern: /.*/, ttlMs: parseDuration('MANIFEST_CACHE_DEFAULT_TIME', get('MANIFEST_CACHE_DEFAULT_TIME') ?? '1h') },
  ];

  return {
    port: parsePort('PORT', overrides.port ?? get('PORT') ?? '3128', true), // 0: any free port
    mirrorPort: parsePort('MIRROR_PORT', get('MIRROR_PORT') ?? '5000', true),
    registryDomain: get('REGISTRY_DOMAIN')?.toLowerCase().replace(/^\./, '') ?? null,
    mirrorAuth: parseDoorAuth(get('MIRROR_AUTH')),
    mirrorTls: parseMirrorTls(get('MIRROR_TLS_CERT'), get('MIRROR_TLS_KEY')),
    mirrorHostname: parseOptionalHost('MIRROR_HOSTNAME', get('MIRROR_HOSTNAME')),
    adminPort: parsePort('ADMIN_PORT', get('ADMIN_PORT') ?? '0', true),
    adminAuth: parseDoorAuth(get('ADMIN_AUTH')),
    caDir: path.resolve(overrides.caDir ?? get('CA_DIR') ?? 'certs'),
    caKeyPassphrase: env.CA_KEY_PASSPHRASE || null, // as given: spaces may be part of a passphrase
    cacheDir: path.resolve(overrides.cacheDir ?? get('CACHE_DIR') ?? path.join('data', 'cache')),
    cacheStore,
    s3: {
      endpoint: parseEndpoint(get('S3_ENDPOINT')),
      forcePathStyle: parseBool('S3_FORCE_PATH_STYLE', get('S3_FORCE_PATH_STYLE') ?? 'false'),
      fillLeaseMs: parseDuration('S3_FILL_LEASE', get('S3_FILL_LEASE') ?? '30s'),
      sweepMs: parseDuration('S3_SWEEP_INTERVAL', get('S3_SWEEP_INTERVAL') ?? '1m'),
      accessFlushMs: parseDuration('S3_ACCESS_FLUSH', get('S3_ACCESS_FLUSH') ?? '30s'),
      evictGraceMs: parseDuration('S3_EVICT_GRACE', get('S3_EVICT_GRACE') ?? '10m'),
      redirect: parseRedirect(get('S3_REDIRECT'), cacheStore !== null),
      redirectTtlMs: parseRedirectTtl(get('S3_REDIRECT_TTL') ?? '5m'),
    },
    cacheMaxSize: parseSize('CACHE_MAX_SIZE', get('CACHE_MAX_SIZE') ?? '32g'),
    localTierMaxSize: parseLocalTier(get('LOCAL_TIER_MAX_SIZE'), cacheStore !== null),
    cacheInactiveMs: parseDuration('CACHE_INACTIVE', get('CACHE_INACTIVE') ?? '60d'),
    verifyOnRead: parseBool('VERIFY_ON_READ', get('VERIFY_ON_READ') ?? 'true'),
    registries: [
      ...ALWAYS_INTERCEPTED,
      ...parseHostList('REGISTRIES', get('REGISTRIES') ?? DEFAULT_REGISTRIES),
      ...parseHostList('ADDITIONAL_REGISTRIES', get('ADDITIONAL_REGISTRIES') ?? ''),
    ],
    allowPush: parseBool('ALLOW_PUSH', get('ALLOW_PUSH') ?? 'false'),
    proxyAuth: get('PROXY_AUTH') ?? null,
    serveStale: parseBool('SERVE_STALE', get('SERVE_STALE') ?? 'true'),
    manifestCache: parseBool('ENABLE_MANIFEST_CACHE', get('ENABLE_MANIFEST_CACHE') ?? 'false') ? manifestTiers : null,
    verifySsl: parseBool('VERIFY_SSL', get('VERIFY_SSL') ?? 'true'),
    authRegistries: parseAuthRegistries(get('AUTH_REGISTRIES') ?? '', env.AUTH_REGISTRIES_DELIMITER || ' ', env.AUTH_REGISTRY_DELIMITER || ':'),
    timeouts: {
      connectMs: parseDuration('UPSTREAM_CONNECT_TIMEOUT', get('UPSTREAM_CONNECT_TIMEOUT') ?? '10s'),
      headersMs: parseDuration('UPSTREAM_HEADERS_TIMEOUT', get('UPSTREAM_HEADERS_TIMEOUT') ?? '60s'),
      idleMs: parseDuration('UPSTREAM_IDLE_TIMEOUT', get('UPSTREAM_IDLE_TIMEOUT') ?? '60s'),
    },
    clientHeadersTimeoutMs: parseDuration('CLIENT_HEADERS_TIMEOUT', get('CLIENT_HEADERS_TIMEOUT') ?? '30s'),
    upstreamCaFile: get('UPSTREAM_CA_FILE') ? path.resolve(get('UPSTREAM_CA_FILE')!) : null,
    upstreamProxy: upstreamProxyRaw ? parseUpstreamProxy(upstreamProxyRaw) : null,
    noProxy: splitList(get('NO_PROXY') ?? get('no_proxy') ?? '').map((s) => s.toLowerCase()),
    connectTo: connectToRaw.map((r) => parseConnectTo(r)),
    disableIpv6: parseBool('DISABLE_IPV6', get('DISABLE_IPV6') ?? 'false'),
    logLevel: parseEnum('LOG_LEVEL', overrides.logLevel ?? get('LOG_LEVEL') ?? 'info', LOG_LEVELS),
    // One process per replica with a bucket: the workers' shared store is a directory (decisions.md).
    workers: parseWorkers(get('WORKERS') ?? (cacheStore ? '1' : String(os.availableParallelism())), cacheStore !== null),
    allowedClients: parseAllowedClients(get('ALLOWED_CLIENTS') ?? DEFAULT_ALLOWED_CLIENTS),
    tunnelPorts: parsePortRanges('TUNNEL_PORTS', get('TUNNEL_PORTS') ?? '443'),
    forwardPorts: parsePortRanges('FORWARD_PORTS', get('FORWARD_PORTS') ?? DEFAULT_FORWARD_PORTS),
    allowDestinations: parseDestinations('ALLOW_DESTINATIONS', get('ALLOW_DESTINATIONS') ?? ''),
    denyDestinations: parseDestinations('DENY_DESTINATIONS', get('DENY_DESTINATIONS') ?? ''),
  };
}

export function splitList(value: string): string[] {
  return value.split(/[\s,]+/).filter((s) => s.length > 0);
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** nginx size syntax: "32g", "500m", "1024k", plain bytes (case-insensitive). */
export function parseSize(variable: string, value: string): number {
  const m = /^(\d+)([kmgt]?)$/i.exec(value);
  const bytes = m ? Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]! : NaN;
  if (!(bytes > 0) || !Number.isSafeInteger(bytes)) {
    throw new ConfigError(variable, value, `a size such as 32g, 500m, 1024k or plain bytes, e.g. ${variable}=32g`);
  }
  return bytes;
}

/** LOCAL_TIER_MAX_SIZE: a size, or 0 (off, the default); only with CACHE_STORE (the local store is local already). */
function parseLocalTier(value: string | undefined, withBucket: boolean): number {
  if (value === undefined || value === '0') return 0;
  const bytes = parseSize('LOCAL_TIER_MAX_SIZE', value);
  if (!withBucket)
    throw new ConfigError(
      'LOCAL_TIER_MAX_SIZE',
      value,
      "0 or unset without CACHE_STORE: the local tier keeps copies of a bucket's content (CACHE_DIR is the store itself otherwise)",
    );
  return bytes;
}

const TIME_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  M: 30 * 86_400_000,
  y: 365 * 86_400_000,
};

/** nginx time syntax: "60d", "12h", "30m", "1h30m", plain seconds; M is 30 days, y 365 days. */
export function parseDuration(variable: string, value: string): number {
  let ms = 0;
  const rest = value.replace(/(\d+)(ms|[smhdwMy]?)/g, (_all, n: string, unit: string) => {
    ms += Number(n) * TIME_UNITS[unit || 's']!;
    return '';
  });
  if (rest !== '' || !(ms > 0) || !Number.isSafeInteger(ms)) {
    throw new ConfigError(variable, value, `a duration such as 60d, 12h, 30m or 1h30m, e.g. ${variable}=60d`);
  }
  return ms;
}

/** MIRROR_AUTH, ADMIN_AUTH: users as PROXY_AUTH (loaded by auth/user-set.ts), or "none" (any case). */
function parseDoorAuth(value: string | undefined): string | null {
  if (value === undefined) return null;
  return value.toLowerCase() === NO_AUTH ? NO_AUTH : value;
}

function parseMirrorTls(cert: string | undefined, key: string | undefined): { certFile: string; keyFile: string } | null {
  if (cert === undefined && key === undefined) return null;
  if (cert === undefined || key === undefined) {
    const missing = cert === undefined ? 'MIRROR_TLS_CERT' : 'MIRROR_TLS_KEY';
    throw new ConfigError(
      missing,
      '',
      `set together with ${missing === 'MIRROR_TLS_CERT' ? 'MIRROR_TLS_KEY' : 'MIRROR_TLS_CERT'}, e.g. ${missing}=/etc/regcache/mirror.${missing.endsWith('CERT') ? 'crt' : 'key'}`,
    );
  }
  return { certFile: path.resolve(cert), keyFile: path.resolve(key) };
}

function parseOptionalHost(variable: string, value: string | undefined): string | null {
  if (value === undefined) return null;
  if (!isValidHost(value.toLowerCase())) throw new ConfigError(variable, value, `a host name, e.g. ${variable}=regcache.internal`);
  return value.toLowerCase();
}

function parseRegex(variable: string, value: string): RegExp {
  try {
    return new RegExp(value);
  } catch {
    throw new ConfigError(variable, value, `a regular expression, e.g. ${variable}="(stable|nightly)"`);
  }
}

function parseBool(variable: string, value: string): boolean {
  const v = value.toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw new ConfigError(variable, value, 'true or false, e.g. ' + variable + '=true');
}

function parseEnum(variable: string, value: string, allowed: string[]): string {
  if (!allowed.includes(value)) {
    throw new ConfigError(variable, value, `one of ${allowed.join(', ')}, e.g. ${variable}=${allowed[3]}`);
  }
  return value;
}

function parsePort(variable: string, value: string, allowZero: boolean): number {
  const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= (allowZero ? 0 : 1) && n <= 65535)) {
    throw new ConfigError(variable, value, `a TCP port 1-65535, e.g. ${variable}=3128`);
  }
  return n;
}

// More processes than this buys nothing on any machine regcache runs on, and each costs ~60 MB.
const MAX_WORKERS = 256;

function parseWorkers(value: string, cacheStore: boolean): number {
  const n = /^\d{1,3}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1 && n <= MAX_WORKERS)) {
    throw new ConfigError('WORKERS', value, `a number of processes 1-${MAX_WORKERS} (1: one process, no workers), e.g. WORKERS=4`);
  }
  if (cacheStore && n > 1) throw new ConfigError('WORKERS', value, '1 (or unset) with CACHE_STORE: each replica is one process; run more replicas instead');
  return n;
}

// S3's bucket names: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit.
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** S3_REDIRECT: only with CACHE_STORE (there is no bucket to redirect to otherwise). */
function parseRedirect(value: string | undefined, cacheStore: boolean): boolean {
  const on = parseBool('S3_REDIRECT', value ?? 'false');
  if (on && !cacheStore)
    throw new ConfigError(
      'S3_REDIRECT',
      value!,
      'false (or unset) without CACHE_STORE: only blobs stored in a bucket can be redirected to, e.g. CACHE_STORE=s3://regcache/cache S3_REDIRECT=true',
    );
  return on;
}

// SigV4 presigned URLs are valid for 1 s to 7 days.
const MAX_REDIRECT_TTL_MS = 7 * 24 * 3600_000;

/** S3_REDIRECT_TTL: whole seconds, at most 7 days (SigV4's limit). */
function parseRedirectTtl(value: string): number {
  const ms = parseDuration('S3_REDIRECT_TTL', value);
  if (ms < 1000 || ms > MAX_REDIRECT_TTL_MS || ms % 1000 !== 0)
    throw new ConfigError('S3_REDIRECT_TTL', value, 'whole seconds from 1s to 7d (what a presigned URL allows), e.g. S3_REDIRECT_TTL=5m');
  return ms;
}

/** "s3://bucket", "s3://bucket/some/prefix" (slashes around the prefix do not matter). */
function parseCacheStore(value: string | undefined): CacheStore | null {
  if (value === undefined) return null;
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(value);
  const bucket = m?.[1] ?? '';
  const prefix = (m?.[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (!m || !BUCKET_NAME.test(bucket) || /\/\/|[\x00-\x1f]/.test(prefix)) {
    throw new ConfigError(
      'CACHE_STORE',
      value,
      's3://BUCKET or s3://BUCKET/PREFIX (an S3 bucket name: lower-case letters, digits, dots, hyphens), e.g. CACHE_STORE=s3://regcache/cache',
    );
  }
  const keyPrefix = prefix === '' ? '' : `${prefix}/`;
  return { bucket, prefix: keyPrefix, display: `s3://${bucket}/${keyPrefix}` };
}

function parseEndpoint(value: string | undefined): string | null {
  if (value === undefined) return null;
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    // reported below
  }
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.username || url.password) {
    throw new ConfigError(
      'S3_ENDPOINT',
      redactUrl(value),
      'an http:// or https:// URL without credentials (those come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), e.g. S3_ENDPOINT=http://minio:9000',
    );
  }
  return value.replace(/\/+$/, '');
}

const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A host name or IP literal (IPv6 in brackets when a port follows is handled by the caller). */
export function isValidHost(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) return host.split('.').every((o) => Number(o) <= 255);
  if (host.includes(':')) return /^[0-9a-f:.]+$/i.test(host); // IPv6 literal
  return host.split('.').every((l) => HOST_LABEL.test(l));
}

function parseHostList(variable: string, value: string): string[] {
  return splitList(value).map((item) => {
    const entry = item.toLowerCase();
    const m = /^(\*\.)?([^:]+)(?::(\d{1,5}))?$/.exec(entry);
    if (!m || !isValidHost(m[2]!) || (m[3] !== undefined && !(Number(m[3]) >= 1 && Number(m[3]) <= 65535))) {
      throw new ConfigError(variable, item, `space- or comma-separated hosts, e.g. ${variable}="registry.example.com *.example.org:5000"`);
    }
    return entry;
  });
}

function parseAllowedClients(value: string): AddressRange[] | 'any' {
  if (value.toLowerCase() === 'any') return 'any';
  return splitList(value).map((item) => {
    const range = parseAddressRange(item);
    if (!range) throw new ConfigError('ALLOWED_CLIENTS', item, 'IP addresses or CIDR ranges, or "any", e.g. ALLOWED_CLIENTS="10.0.0.0/8 192.168.1.0/24"');
    return range;
  });
}

/** "443", "80 1025-65535": single ports and inclusive ranges. */
function parsePortRanges(variable: string, value: string): PortRange[] {
  return splitList(value).map((item) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    const from = Number(m?.[1]);
    const to = m?.[2] === undefined ? from : Number(m[2]);
    if (!m || !(from >= 1 && to <= 65535 && from <= to)) {
      throw new ConfigError(variable, item, `ports and ranges 1-65535, e.g. ${variable}="443 8443 9000-9100"`);
    }
    return { from, to };
  });
}

export function portAllowed(ranges: PortRange[], port: number): boolean {
  return ranges.some((r) => port >= r.from && port <= r.to);
}

/** "registry.local:5000", "*.corp.example", "127.0.0.1", "10.0.0.0/8:443", "[::1]:5000", "fd00::/8". */
export function parseDestination(item: string): DestinationRule | null {
  const entry = item.toLowerCase();
  let target = entry;
  let port: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(entry);
  if (bracketed) [, target = '', port] = bracketed;
  else if (entry.split(':').length === 2) [target = '', port] = entry.split(':');
  const portNumber = port === undefined ? null : Number(port);
  if (portNumber !== null && !(portNumber >= 1 && portNumber <= 65535)) return null;
  const range = parseAddressRange(target);
  if (range) return { host: null, range, port: portNumber };
  if (bracketed || target.includes(':') || !isValidHost(target.replace(/^\*\./, ''))) return null; // an IPv6 address is a range
  return { host: target, range: null, port: portNumber };
}

function parseDestinations(variable: string, value: string): DestinationRule[] {
  return splitList(value).map((item) => {
    const rule = parseDestination(item);
    if (!rule)
      throw new ConfigError(
        variable,
        item,
        `hosts, IP addresses or CIDR ranges, each with an optional :port (IPv6 in brackets), e.g. ${variable}="127.0.0.1:5000 10.0.0.0/8 [::1]:5000"`,
      );
    return rule;
  });
}

/** rpardini's AUTH_REGISTRIES: "host:user:pass host2:user2:pass2"; both delimiters configurable. */
function parseAuthRegistries(value: string, listDelimiter: string, fieldDelimiter: string): RegistryCredentials[] {
  return value
    .split(listDelimiter)
    .map((item) => item.trim())
    .filter(Boolean)
    .map((item, i) => {
      const [host = '', user = '', ...rest] = item.split(fieldDelimiter);
      const password = rest.join(fieldDelimiter); // a password may contain the delimiter
      if (!isValidHost(host.toLowerCase().replace(/:\d+$/, '')) || !user || !password) {
        throw new ConfigError(
          'AUTH_REGISTRIES',
          `(entry ${i + 1})`,
          `host${fieldDelimiter}user${fieldDelimiter}password entries separated by "${listDelimiter}", e.g. AUTH_REGISTRIES="auth.docker.io:me:token quay.io:me:pw"`,
        );
      }
      return { host: host.toLowerCase(), user, password };
    });
}

function parseUpstreamProxy(value: string): UpstreamProxy {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new ConfigError('UPSTREAM_PROXY', redactUrl(value), 'http://[user:pass@]host:port, e.g. UPSTREAM_PROXY=http://proxy.corp:3128');
  }
  if (url.protocol !== 'http:' || !url.hostname) {
    throw new ConfigError('UPSTREAM_PROXY', redactUrl(value), 'an http:// URL, e.g. UPSTREAM_PROXY=http://proxy.corp:3128');
  }
  const user = decodeURIComponent(url.username);
  const pass = decodeURIComponent(url.password);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return {
    host,
    port: url.port ? Number(url.port) : 80,
    authorization: user || pass ? 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64') : null,
    display: `http://${user ? user + ':***@' : ''}${url.host}`,
  };
}

function redactUrl(value: string): string {
  return value.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

// curl's --connect-to syntax: HOST1:PORT1:HOST2:PORT2, any part may be empty; IPv6 in brackets.
function parseConnectTo(rule: string): ConnectToRule {
  const fields = splitConnectTo(rule);
  if (!fields) {
    throw new ConfigError('CONNECT_TO', rule, 'HOST:PORT:ADDR:PORT, e.g. CONNECT_TO=registry-1.docker.io:443:127.0.0.1:5000');
  }
  const [host, port, toHost, toPort] = fields;
  const num = (s: string): number | null => (s === '' ? null : Number(s));
  return { host: host.toLowerCase(), port: num(port), toHost, toPort: num(toPort) };
}

function splitConnectTo(rule: string): [string, string, string, string] | null {
  const fields: string[] = [];
  let rest = rule;
  for (let i = 0; i < 4; i++) {
    let field: string;
    if (rest.startsWith('[')) {
      const end = rest.indexOf(']');
      if (end < 0) return null;
      field = rest.slice(1, end);
      rest = rest.slice(end + 1);
    } else {
      const idx = rest.indexOf(':');
      field = idx < 0 ? rest : rest.slice(0, idx);
      rest = idx < 0 ? '' : rest.slice(idx);
    }
    fields.push(field);
    if (i < 3) {
      if (!rest.startsWith(':')) return null;
      rest = rest.slice(1);
    }
  }
  if (rest !== '') return null;
  const [h, p, th, tp] = fields as [string, string, string, string];
  const portOk = (s: string) => s === '' || (/^\d{1,5}$/.test(s) && Number(s) >= 1 && Number(s) <= 65535);
  if (!portOk(p) || !portOk(tp)) return null;
  if ((h !== '' && !isValidHost(h.toLowerCase())) || (th !== '' && !isValidHost(th.toLowerCase()))) return null;
  return [h, p, th, tp];
}

/** The effective configuration for the startup log line: secrets never appear. */
export function describeConfig(config: Config): Record<string, unknown> {
  return {
    ...config,
    upstreamProxy: config.upstreamProxy?.display ?? null,
    caKeyPassphrase: config.caKeyPassphrase === null ? null : '(set)',
    cacheStore: config.cacheStore?.display ?? null,
    proxyAuth: describeUsers(config.proxyAuth),
    mirrorAuth: describeUsers(config.mirrorAuth),
    adminAuth: describeUsers(config.adminAuth),
    authRegistries: config.authRegistries.map((c) => `${c.host} (${c.user})`),
    manifestCache: config.manifestCache?.map((t) => `${t.pattern.source} ${t.ttlMs / 1000}s`) ?? null,
    allowedClients: config.allowedClients === 'any' ? 'any' : config.allowedClients.map((r) => `${r.address}/${r.prefix}`),
    tunnelPorts: config.tunnelPorts.map(formatPortRange),
    forwardPorts: config.forwardPorts.map(formatPortRange),
    allowDestinations: config.allowDestinations.map(formatDestination),
    denyDestinations: config.denyDestinations.map(formatDestination),
  };
}

function formatPortRange(r: PortRange): string {
  return r.from === r.to ? String(r.from) : `${r.from}-${r.to}`;
}

export function formatDestination(rule: DestinationRule): string {
  const target = rule.host ?? `${rule.range!.address}/${rule.range!.prefix}`;
  if (rule.port === null) return target;
  return rule.range?.family === 'ipv6' ? `[${target}]:${rule.port}` : `${target}:${rule.port}`;
}

/** An *_AUTH value as the startup line shows it: the file, "none", or only that users were listed inline. */
function describeUsers(value: string | null): string | null {
  return value !== null && value.includes(':') ? '(inline users)' : value;
}
