// squid-openssl as a peer of regcache: the same architecture (clients CONNECT to it, it bumps the TLS
// with a CA of its own and keeps responses in a disk cache), configured from scratch here. Each instance
// lives in its own dir (config, cache, certificate db, logs) with its own port, runs in the foreground
// (-N) as a child of the bench, and resolves upstream names through a hosts file of its own (squid has no
// CONNECT_TO; /etc/hosts is never touched).
import { copyFile, chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../test/harness/ports.js';
import { logTail, run, settledRead, spawnDaemon, waitFor, type Daemon } from '../../test/harness/proc.js';

const SQUID = 'squid';
const CERTGEN = '/usr/lib/squid/security_file_certgen';
// Debian's squid drops root privileges to this user, so everything it touches must be its own.
const SQUID_USER = 'proxy';

export interface SquidOptions {
  /** Holds everything of this instance; created. Must be under os.tmpdir(). */
  dir: string;
  /** The CA squid mints its bumped certificates from (ca.crt, ca.key), shared so clients trust one CA. */
  bumpCa: { certFile: string; keyFile: string };
  /** The only CA trusted for upstream servers. */
  upstreamCaFile: string;
  /** name -> IPv4 address: how squid finds the upstream registry. */
  hosts: Record<string, string>;
  /** cache_dir size; big enough for everything the bench pulls through one instance. */
  cacheMb: number;
}

/** One line of squid's native access log. */
export interface SquidAccess {
  code: string; // TCP_MISS, TCP_HIT, TCP_MEM_HIT, TCP_REFRESH_UNMODIFIED, NONE_NONE (CONNECT), ...
  status: number;
  bytes: number;
  method: string;
  url: string;
}

export interface Squid {
  port: number;
  proxyUrl: string;
  daemon: Daemon;
  accessLogFile: string;
  requests(): Promise<SquidAccess[]>;
  stop(): Promise<void>;
}

/**
 * The configuration, each line for a reason:
 * - bump every CONNECT at the first step (client-first) with certificates minted from the bump CA by
 *   security_file_certgen, which keeps them in a db of this instance's own;
 * - trust the test CA for upstream TLS;
 * - a ufs disk cache with objects up to 2 GB (the default limit is 4 MB);
 * - registry blobs are addressed by digest and never change: keep them a year whatever their headers say
 *   (docker-registry sends Cache-Control: max-age=31536000, but registries behind CDNs send no cache
 *   headers, or no-cache/private ones); other URLs, tags among them, keep squid's default rule;
 * - collapsed_forwarding: concurrent misses of one URL share one upstream fetch, as regcache's do
 *   (squid's default is off);
 * - logs, pid file and netdb inside the dir, no pinger, no grace period at shutdown (default 30 s).
 * What no directive changes: squid 5 does not store a response to a request carrying Authorization unless
 * the response says public, must-revalidate or s-maxage (ignore-auth is gone since 3.2), so blobs pulled
 * with a registry token (Docker Hub: always) pass through uncached. The bench's upstream is anonymous.
 */
function renderConfig(o: SquidOptions, port: number, files: { hosts: string; upstreamCa: string; cert: string; key: string }): string {
  const d = (...p: string[]): string => path.join(o.dir, ...p);
  const lines = [
    `http_port 127.0.0.1:${port} ssl-bump cert=${files.cert} key=${files.key} generate-host-certificates=on dynamic_cert_mem_cache_size=16MB`,
    `sslcrtd_program ${CERTGEN} -s ${d('ssl_db')} -M 16MB`,
    'sslcrtd_children 8 startup=1 idle=1',
    'ssl_bump bump all',
    `tls_outgoing_options cafile=${files.upstreamCa}`,
    `hosts_file ${files.hosts}`,
    'http_access allow localhost',
    'http_access deny all',
    `cache_dir ufs ${d('cache')} ${o.cacheMb} 16 256`,
    'maximum_object_size 2 GB',
    'refresh_pattern -i /v2/.+/blobs/sha256:[0-9a-f]{64}$ 525600 100% 525600 override-expire override-lastmod ignore-reload ignore-no-store ignore-private',
    'refresh_pattern . 0 20% 4320',
    'collapsed_forwarding on',
    `access_log stdio:${d('access.log')} squid`,
    `cache_log ${d('cache.log')}`,
    'cache_store_log none',
    `pid_filename ${d('squid.pid')}`,
    `coredump_dir ${o.dir}`,
    'netdb_filename none',
    'pinger_enable off',
    'shutdown_lifetime 0 seconds',
    'visible_hostname regcache-bench',
  ];
  if (process.getuid?.() === 0) lines.push(`cache_effective_user ${SQUID_USER}`);
  return lines.join('\n') + '\n';
}

/** As root, squid works as SQUID_USER: it needs to pass through the (0700) temp dirs above its own. */
async function letSquidIn(dir: string): Promise<void> {
  const tmp = path.resolve(os.tmpdir());
  for (let p = path.dirname(path.resolve(dir)); p.startsWith(tmp + path.sep); p = path.dirname(p)) {
    const mode = (await stat(p)).mode & 0o777;
    if ((mode & 0o001) === 0) await chmod(p, mode | 0o001);
  }
  const chown = await run('chown', ['-R', `${SQUID_USER}:${SQUID_USER}`, dir]);
  if (chown.code !== 0) throw new Error(`chown ${dir} to ${SQUID_USER}: ${chown.stderr.trim()}`);
}

// squid's native format: time elapsed client code/status bytes method URL user hierarchy type
const ACCESS_LINE = /^\S+\s+\d+\s+\S+\s+(\S+)\/(\d{3})\s+(\d+)\s+(\S+)\s+(\S+)/;

export function parseSquidAccessLog(text: string): SquidAccess[] {
  const out: SquidAccess[] = [];
  for (const line of text.split('\n')) {
    const m = ACCESS_LINE.exec(line.trim());
    if (m !== null) out.push({ code: m[1]!, status: Number(m[2]), bytes: Number(m[3]), method: m[4]!, url: m[5]! });
  }
  return out;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Creates the dirs, certificate db and swap dirs of a new instance, starts it and waits until it accepts. */
export async function startSquid(o: SquidOptions): Promise<Squid> {
  if (!path.resolve(o.dir).startsWith(path.resolve(os.tmpdir()) + path.sep)) throw new Error(`squid dir must be under ${os.tmpdir()}`);
  await mkdir(path.join(o.dir, 'cache'), { recursive: true });
  // Copies inside the dir, so that squid (as SQUID_USER) can read them whenever it reloads.
  const files = {
    hosts: path.join(o.dir, 'hosts'),
    upstreamCa: path.join(o.dir, 'upstream-ca.crt'),
    cert: path.join(o.dir, 'bump-ca.crt'),
    key: path.join(o.dir, 'bump-ca.key'),
  };
  await writeFile(
    files.hosts,
    Object.entries(o.hosts)
      .map(([name, ip]) => `${ip} ${name}\n`)
      .join(''),
  );
  await copyFile(o.upstreamCaFile, files.upstreamCa);
  await copyFile(o.bumpCa.certFile, files.cert);
  await copyFile(o.bumpCa.keyFile, files.key);
  const port = await freePort();
  const conf = path.join(o.dir, 'squid.conf');
  await writeFile(conf, renderConfig(o, port, files));

  const init = await run(CERTGEN, ['-c', '-s', path.join(o.dir, 'ssl_db'), '-M', '16MB']);
  if (init.code !== 0) throw new Error(`security_file_certgen -c: ${init.stderr.trim()}`);
  if (process.getuid?.() === 0) await letSquidIn(o.dir);
  const swap = await run(SQUID, ['-z', '-N', '-f', conf]);
  if (swap.code !== 0) throw new Error(`squid -z: ${swap.stderr.trim()}\n${await logTail(path.join(o.dir, 'cache.log'))}`);

  const cacheLog = path.join(o.dir, 'cache.log');
  const daemon = spawnDaemon(SQUID, ['-N', '-f', conf], {
    env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin' },
    stdoutFile: path.join(o.dir, 'stdout.log'),
  });
  try {
    await waitFor(
      async () => {
        if (!daemon.isRunning()) throw new Error(`squid exited early:\n${await logTail(cacheLog)}`);
        // Not its "Accepting ..." log line: squid logs it a moment before it calls listen().
        return canConnect(port);
      },
      { timeoutMs: 15_000, what: `squid on port ${port}`, intervalMs: 50 },
    );
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  const accessLogFile = path.join(o.dir, 'access.log');
  return {
    port,
    proxyUrl: `http://127.0.0.1:${port}`,
    daemon,
    accessLogFile,
    requests: async () => parseSquidAccessLog(await settledRead(accessLogFile)),
    stop: () => daemon.stop(10_000),
  };
}

/** `squid -v`'s first line, e.g. "Squid Cache: Version 5.7". */
export async function squidVersion(): Promise<string> {
  return (await run(SQUID, ['-v']).catch(() => ({ stdout: '?' }))).stdout.split('\n')[0]?.trim() ?? '?';
}
