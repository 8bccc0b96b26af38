import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Agent, request } from 'undici';
import { freePort } from './ports.js';
import { logTail, settledRead, spawnDaemon, waitFor } from './proc.js';

export interface RegistryOptions {
  /** Root for storage, config and logs; created if missing. */
  dir: string;
  tls: { certFile: string; keyFile: string };
  /** Token auth (distribution's `auth: token:`); rootCertBundle holds the JWT signer's certificate. */
  auth?: { realm: string; service: string; issuer: string; rootCertBundle: string };
  /** Basic auth from an htpasswd file of bcrypt entries (distribution's `auth: htpasswd:`). */
  htpasswd?: string;
  /**
   * Enables the storage `redirect` middleware: blob GETs *and HEADs* get a 307
   * to <scheme>://<host> of this URL + the storage path
   * (/docker/registry/v2/blobs/sha256/ab/<hex>/data). Any path in the URL is
   * ignored by distribution 2.8.
   */
  redirectBaseUrl?: string;
  /** http.headers: added to every response (e.g. Docker Hub's RateLimit-Remaining). */
  headers?: Record<string, string>;
  /** storage.maintenance.readonly: pushes are refused with 405. */
  readOnly?: boolean;
  /** CA that signed tls.certFile; used for the readiness probe (default: skip verification). */
  caFile?: string;
  /** Listening address, also the host of `url` (default 127.0.0.1). */
  host?: string;
  /** Run the registry under this command, e.g. ['ip', 'netns', 'exec', 'ns1'] for a network namespace. */
  prefix?: string[];
  /**
   * Pull-through cache mode (distribution's `proxy: remoteurl:`), anonymous to the remote. caFile is the
   * only CA trusted for the remote (Go reads SSL_CERT_FILE), so the remote needs a certificate from it.
   */
  proxy?: { remoteUrl: string; caFile: string };
}

/** One line of the registry's access log (Apache combined format on stdout). */
export interface AccessEntry {
  method: string;
  /** Request path without query string. */
  path: string;
  /** Path plus query string as logged. */
  uri: string;
  status: number;
  bytes: number;
  userAgent: string;
  time: string;
}

export interface Registry {
  port: number;
  /** https://HOST:PORT (HOST: 127.0.0.1 unless options.host) */
  url: string;
  pid: number;
  /** Filesystem driver root; a redirect CDN serves files from here. */
  storageDir: string;
  configFile: string;
  /** Registry's stdout: the access log. */
  accessLogFile: string;
  /** Registry's stderr: logrus application log. */
  logFile: string;
  stop(): Promise<void>;
  requests(): Promise<AccessEntry[]>;
  /** GETs of /v2/<any repo>/blobs/<digest> answered with status < 400 (200, 206 or a 307 redirect). */
  countBlobGets(digest: string): Promise<number>;
}

const REGISTRY_BIN = 'docker-registry';

/** Where the filesystem driver keeps a blob: also the path a redirect sends clients to on the CDN. */
export function blobStoragePath(digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return `/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
}

// gorilla/handlers CombinedLoggingHandler: host ident user [time] "METHOD URI PROTO" status bytes "referer" "ua"
const ACCESS_LINE = /^(\S+) \S+ \S+ \[([^\]]+)\] "(\S+) (\S+) ([^"]+)" (\d{3}) (\d+|-) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$/;

export function parseAccessLog(text: string): AccessEntry[] {
  const entries: AccessEntry[] = [];
  for (const line of text.split('\n')) {
    const m = ACCESS_LINE.exec(line.trim());
    if (m === null) continue;
    const uri = m[4] ?? '';
    const q = uri.indexOf('?');
    entries.push({
      method: m[3] ?? '',
      uri,
      path: q === -1 ? uri : uri.slice(0, q),
      status: Number(m[6]),
      bytes: m[7] === '-' ? 0 : Number(m[7]),
      userAgent: unquote(m[9] ?? ''),
      time: m[2] ?? '',
    });
  }
  return entries;
}

/** Undo gorilla's quoting: \" and \\ become literal, \xNN a byte. */
function unquote(s: string): string {
  return s.replace(/\\x([0-9a-fA-F]{2})|\\(.)/g, (_m, hexByte: string | undefined, ch: string | undefined) =>
    hexByte !== undefined ? String.fromCharCode(parseInt(hexByte, 16)) : (ch ?? ''),
  );
}

/** YAML double-quoted scalars accept JSON string syntax. */
const q = (s: string): string => JSON.stringify(s);

function renderConfig(opts: RegistryOptions, port: number, storageDir: string): string {
  const host = opts.host ?? '127.0.0.1';
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    '  accesslog:',
    '    disabled: false',
    'storage:',
    '  filesystem:',
    `    rootdirectory: ${q(storageDir)}`,
    '  delete:',
    '    enabled: true',
    '  redirect:',
    `    disable: ${opts.redirectBaseUrl === undefined}`,
    '  maintenance:',
    '    uploadpurging:',
    '      enabled: false',
    '    readonly:',
    `      enabled: ${opts.readOnly === true}`,
    'http:',
    `  addr: ${q(`${host}:${port}`)}`,
    // A fixed secret silences the warning and keeps upload state valid across restarts.
    `  secret: ${q(randomBytes(16).toString('hex'))}`,
    '  tls:',
    `    certificate: ${q(opts.tls.certFile)}`,
    `    key: ${q(opts.tls.keyFile)}`,
    ...(opts.headers ? ['  headers:', ...Object.entries(opts.headers).map(([name, value]) => `    ${q(name)}: [${q(value)}]`)] : []),
    'health:',
    '  storagedriver:',
    '    enabled: false',
  ];
  if (opts.auth !== undefined) {
    lines.push(
      'auth:',
      '  token:',
      `    realm: ${q(opts.auth.realm)}`,
      `    service: ${q(opts.auth.service)}`,
      `    issuer: ${q(opts.auth.issuer)}`,
      `    rootcertbundle: ${q(opts.auth.rootCertBundle)}`,
    );
  }
  if (opts.htpasswd !== undefined) {
    lines.push('auth:', '  htpasswd:', `    realm: ${q('regcache-test')}`, `    path: ${q(opts.htpasswd)}`);
  }
  if (opts.proxy !== undefined) {
    lines.push('proxy:', `  remoteurl: ${q(opts.proxy.remoteUrl)}`);
  }
  if (opts.redirectBaseUrl !== undefined) {
    lines.push('middleware:', '  storage:', '    - name: redirect', '      options:', `        baseurl: ${q(opts.redirectBaseUrl)}`);
  }
  return lines.join('\n') + '\n';
}

/** Start distribution's docker-registry on a free loopback port and wait until /v2/ answers. */
export async function startRegistry(opts: RegistryOptions): Promise<Registry> {
  const storageDir = path.join(opts.dir, 'storage');
  await mkdir(storageDir, { recursive: true });
  const port = await freePort();
  const configFile = path.join(opts.dir, 'config.yml');
  await writeFile(configFile, renderConfig(opts, port, storageDir));
  const accessLogFile = path.join(opts.dir, 'access.log');
  const logFile = path.join(opts.dir, 'registry.log');

  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };
  if (opts.proxy !== undefined) env.SSL_CERT_FILE = opts.proxy.caFile;
  const [command = REGISTRY_BIN, ...args] = [...(opts.prefix ?? []), REGISTRY_BIN, 'serve', configFile];
  const daemon = spawnDaemon(command, args, { env, stdoutFile: accessLogFile, stderrFile: logFile });
  const url = `https://${opts.host ?? '127.0.0.1'}:${port}`;
  const ca = opts.caFile !== undefined ? await readFile(opts.caFile, 'utf8') : undefined;
  const agent = new Agent({ connect: ca !== undefined ? { ca } : { rejectUnauthorized: false } });
  try {
    await waitFor(
      async () => {
        if (!daemon.isRunning()) throw new Error(`docker-registry exited early:\n${await logTail(logFile)}`);
        try {
          // Any HTTP answer (200, or 401 with token auth) means it is serving.
          const res = await request(`${url}/v2/`, { dispatcher: agent });
          await res.body.text();
          return true;
        } catch {
          return false;
        }
      },
      { timeoutMs: 15_000, what: `docker-registry on ${url}` },
    );
  } catch (err) {
    await daemon.stop();
    throw err;
  } finally {
    await agent.close();
  }

  const requests = async (): Promise<AccessEntry[]> => parseAccessLog(await settledRead(accessLogFile));
  return {
    port,
    url,
    pid: daemon.pid,
    storageDir,
    configFile,
    accessLogFile,
    logFile,
    stop: () => daemon.stop(),
    requests,
    async countBlobGets(digest: string): Promise<number> {
      const suffix = `/blobs/${digest}`;
      return (await requests()).filter((e) => e.method === 'GET' && e.path.endsWith(suffix) && e.status < 400).length;
    },
  };
}
