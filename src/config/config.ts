// The configuration a process runs with: every setting read once from the environment (and the CLI's
// flags) through the table in settings.ts, validated there, and assembled here into the shape the rest of
// regcache uses. Nothing else in src/ reads process.env. A bad value is a ConfigError naming the variable,
// the value and an example.
import type { AddressRange } from '../reference/address-ranges.js';
import { retiredVariablesIn, type RetiredVariable } from './rpardini-variables.js';
import { readSettings, SETTING_NAMES, showSetting, type ConfigOverrides, type Env, type ReadSettings, type VerifyMode } from './settings.js';
import type { CacheStore, ConnectToRule, DestinationRule, PortRange, RegistryCredentials, UpstreamProxy } from './value-syntax.js';

export { ConfigError } from './config-error.js';
export type { ConfigOverrides, Env, VerifyMode } from './settings.js';
export type { RetiredVariable } from './rpardini-variables.js';

/** LOG_FORMAT: how log records are written (telemetry/log.ts, telemetry/pretty-lines.ts). */
export type LogFormat = 'json' | 'pretty';
export {
  NO_AUTH,
  formatDestination,
  isValidHost,
  parseDestination,
  parseDuration,
  parseSize,
  portAllowed,
  splitList,
  type CacheStore,
  type ConnectToRule,
  type DestinationRule,
  type PortRange,
  type RegistryCredentials,
  type UpstreamProxy,
} from './value-syntax.js';

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
  manifestMaxSize: number; // bytes (MANIFEST_MAX_SIZE): a larger manifest from upstream is refused
  localTierMaxSize: number; // bytes of hot content a fleet replica keeps in CACHE_DIR/tier (LOCAL_TIER_MAX_SIZE); 0: off
  cacheInactiveMs: number; // entries unused this long are swept (CACHE_INACTIVE, nginx time syntax)
  verifyOnRead: VerifyMode; // VERIFY_ON_READ: how a HIT is checked against its digest (once, always, off)
  scrubBytesPerSecond: number; // SCRUB_RATE: the background re-hash of stored files; 0: off
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
  logFormat: LogFormat | null; // LOG_FORMAT: json or pretty; null: pretty on a terminal, else json
  workers: number; // WORKERS: worker processes serving the same ports and store; 1 keeps one process
  workerStallMs: number; // WORKER_STALL_TIMEOUT: a worker silent this long is killed and replaced; 0: never
  allowedClients: AddressRange[] | 'any'; // ALLOWED_CLIENTS: who may use any listener
  tunnelPorts: PortRange[]; // TUNNEL_PORTS: ports a tunnel to a host off the allowlist may reach
  forwardPorts: PortRange[]; // FORWARD_PORTS: ports a plain-HTTP forward to a host off the allowlist may reach
  allowDestinations: DestinationRule[]; // ALLOW_DESTINATIONS: reachable although loopback, link-local, ...
  denyDestinations: DestinationRule[]; // DENY_DESTINATIONS: never reachable (e.g. private ranges)
  settings: ReadSettings; // every setting as read: for the startup description (secrets shown only as the table says)
  retired: RetiredVariable[]; // rpardini variables set here that regcache does not read (a warning each at startup)
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

// Docker Hub is always intercepted: its registry and its token service.
const ALWAYS_INTERCEPTED = ['registry-1.docker.io', 'auth.docker.io'];

export function loadConfig(env: Env, overrides: ConfigOverrides = {}): Config {
  const settings = readSettings(env, overrides);
  const v = settings.values;
  return {
    port: v.PORT,
    mirrorPort: v.MIRROR_PORT,
    registryDomain: v.REGISTRY_DOMAIN,
    mirrorAuth: v.MIRROR_AUTH,
    mirrorTls: v.MIRROR_TLS_CERT !== null && v.MIRROR_TLS_KEY !== null ? { certFile: v.MIRROR_TLS_CERT, keyFile: v.MIRROR_TLS_KEY } : null,
    mirrorHostname: v.MIRROR_HOSTNAME,
    adminPort: v.ADMIN_PORT,
    adminAuth: v.ADMIN_AUTH,
    caDir: v.CA_DIR,
    caKeyPassphrase: v.CA_KEY_PASSPHRASE,
    cacheDir: v.CACHE_DIR,
    cacheStore: v.CACHE_STORE,
    s3: {
      endpoint: v.S3_ENDPOINT,
      forcePathStyle: v.S3_FORCE_PATH_STYLE,
      fillLeaseMs: v.S3_FILL_LEASE,
      sweepMs: v.S3_SWEEP_INTERVAL,
      accessFlushMs: v.S3_ACCESS_FLUSH,
      evictGraceMs: v.S3_EVICT_GRACE,
      redirect: v.S3_REDIRECT,
      redirectTtlMs: v.S3_REDIRECT_TTL,
    },
    cacheMaxSize: v.CACHE_MAX_SIZE,
    manifestMaxSize: v.MANIFEST_MAX_SIZE,
    localTierMaxSize: v.LOCAL_TIER_MAX_SIZE,
    cacheInactiveMs: v.CACHE_INACTIVE,
    verifyOnRead: v.VERIFY_ON_READ,
    scrubBytesPerSecond: v.SCRUB_RATE,
    registries: [...ALWAYS_INTERCEPTED, ...v.REGISTRIES, ...(v.ADDITIONAL_REGISTRIES ?? [])],
    allowPush: v.ALLOW_PUSH,
    proxyAuth: v.PROXY_AUTH,
    serveStale: v.SERVE_STALE,
    // The tiers are read (and checked) whether or not the cache is on: a typo should not wait until it is.
    manifestCache: v.ENABLE_MANIFEST_CACHE
      ? [
          { pattern: v.MANIFEST_CACHE_PRIMARY_REGEX, ttlMs: v.MANIFEST_CACHE_PRIMARY_TIME },
          { pattern: v.MANIFEST_CACHE_SECONDARY_REGEX, ttlMs: v.MANIFEST_CACHE_SECONDARY_TIME },
          { pattern: /.*/, ttlMs: v.MANIFEST_CACHE_DEFAULT_TIME },
        ]
      : null,
    verifySsl: v.VERIFY_SSL,
    authRegistries: v.AUTH_REGISTRIES ?? [],
    timeouts: { connectMs: v.UPSTREAM_CONNECT_TIMEOUT, headersMs: v.UPSTREAM_HEADERS_TIMEOUT, idleMs: v.UPSTREAM_IDLE_TIMEOUT },
    clientHeadersTimeoutMs: v.CLIENT_HEADERS_TIMEOUT,
    upstreamCaFile: v.UPSTREAM_CA_FILE,
    upstreamProxy: v.UPSTREAM_PROXY,
    noProxy: v.NO_PROXY ?? [],
    connectTo: v.CONNECT_TO ?? [],
    disableIpv6: v.DISABLE_IPV6,
    logLevel: v.LOG_LEVEL,
    logFormat: v.LOG_FORMAT,
    workers: v.WORKERS,
    workerStallMs: v.WORKER_STALL_TIMEOUT,
    allowedClients: v.ALLOWED_CLIENTS,
    tunnelPorts: v.TUNNEL_PORTS,
    forwardPorts: v.FORWARD_PORTS,
    allowDestinations: v.ALLOW_DESTINATIONS ?? [],
    denyDestinations: v.DENY_DESTINATIONS ?? [],
    settings,
    retired: retiredVariablesIn(env),
  };
}

/** Every setting as it is in effect, by variable name, defaults included (logged at debug): secrets only as the table shows them. */
export function describeConfig(config: Config): Record<string, unknown> {
  return Object.fromEntries(SETTING_NAMES.filter((name) => name in config.settings.texts).map((name) => [name, showSetting(name, config.settings)]));
}

/** The few facts the `listening` line carries at info: where content is kept, what is intercepted, which variables were set. */
export function summarizeConfig(config: Config): { store: string; registries: string[]; settings: string[] } {
  return { store: config.cacheStore?.display ?? config.cacheDir, registries: config.registries, settings: config.settings.given };
}
