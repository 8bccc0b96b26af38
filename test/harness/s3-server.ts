// A real S3 server for tests: a single-node Ceph (one mon, one OSD) and its RADOS Gateway, all inside one
// temp dir per instance. Needs ceph-mon, ceph-osd, radosgw and ceph-common (test/install-deps.sh).
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ListObjectsV2Command, type S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { BASE_PATH } from './containerd.js';
import { freePort } from './ports.js';
import { logTail, run, spawnDaemon, waitFor, type Daemon, type RunResult } from './proc.js';
import { makeTmpDir, removeTmpDir } from './tmp.js';

export interface S3ServerOptions {
  /**
   * Where the OSD keeps objects. 'bluestore' (default): a sparse file of `capacityBytes` in the instance's
   * dir, so a 1 GB object costs disk, not RAM. 'memstore': RAM only; starts faster, but every object stored
   * (and every deleted one until radosgw's garbage collection) stays in the OSD's memory.
   */
  objectStore?: 'bluestore' | 'memstore';
  /** What the OSD reports as its size (bluestore: the sparse file's size). Default 20 GiB. */
  capacityBytes?: number;
  /** The S3 user's fixed keys (defaults: FIXED_ACCESS_KEY_ID, FIXED_SECRET_ACCESS_KEY). */
  accessKeyId?: string;
  secretAccessKey?: string;
  /** How long the whole start may take before it fails (default 60 s). */
  readyTimeoutMs?: number;
}

/** Milliseconds from the start of startS3Server until each milestone, for reports. */
export interface S3ServerTimings {
  /** The mon answers (it registered the OSD). */
  mon: number;
  /** The OSD is up (its mkfs ran beside the mon's start). */
  osd: number;
  /** radosgw answers `GET /` (its first start creates the RGW pools). */
  gateway: number;
  /** The S3 user exists: ready. */
  total: number;
}

/** Resident memory of each daemon in bytes (null: not running). */
export interface S3ServerMemory {
  mon: number | null;
  osd: number | null;
  gateway: number | null;
}

export interface S3Server {
  /** http://127.0.0.1:PORT (path-style: buckets are the first path segment). */
  endpoint: string;
  port: number;
  accessKeyId: string;
  secretAccessKey: string;
  /** The region to sign with; radosgw's default zonegroup takes any. */
  region: string;
  /** The instance's directory: ceph.conf, run/ (admin sockets, pid files), log/, mon/, osd/. */
  dir: string;
  /** radosgw's log file (requests at debug level 1). */
  gatewayLogFile: string;
  timings: S3ServerTimings;
  /** Env for a process using this server through the AWS SDK's standard chain and regcache's S3 settings. */
  env: Record<string, string>;
  memory(): Promise<S3ServerMemory>;
  /** Stops radosgw only (SIGTERM, SIGKILL after 10 s): the endpoint refuses connections. */
  stopGateway(): Promise<void>;
  /** Starts radosgw again on the same port and waits until it answers. */
  startGateway(): Promise<void>;
  /**
   * SIGSTOP radosgw: connections are accepted by the kernel but nothing answers (a hung S3). Resolves once
   * every thread of it is stopped: a thread busy on a loaded machine can still answer a request just after
   * the signal (seen: a HEAD answered 15 ms after it).
   */
  pauseGateway(): Promise<void>;
  resumeGateway(): void;
  /** radosgw-admin against this cluster (bucket stats, gc list, ...). */
  admin(args: string[]): Promise<RunResult>;
  /** Stops radosgw, then the OSD, then the mon; removes dir unless REGCACHE_KEEP_TMP=1. Idempotent. */
  stop(): Promise<void>;
}

export const FIXED_ACCESS_KEY_ID = 'REGCACHETESTACCESSKEY';
export const FIXED_SECRET_ACCESS_KEY = 'regcache-test-secret-key-0123456789abcdef';
const REGION = 'us-east-1';
const GIB = 1024 ** 3;
const STOP_GRACE_MS = 10_000;
/** ceph and radosgw-admin calls: without a ceph-mgr some commands (`ceph df`) never return. */
const CLI_TIMEOUT_MS = 20_000;

/**
 * SDK settings every client of the test server needs: path-style, and checksums only when an operation
 * requires them (the SDK's default adds a streaming checksum trailer radosgw answers with 411
 * MissingContentLength for a PutObject with a stream body).
 */
/** Every key under `prefix + under` in the bucket, without `prefix`, with its size (every page of the listing). */
export async function listKeys(client: S3Client, bucket: string, prefix: string, under = ''): Promise<Map<string, number>> {
  const keys = new Map<string, number>();
  let token: string | undefined;
  do {
    const page = await client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix + under, ContinuationToken: token }));
    for (const o of page.Contents ?? []) keys.set(o.Key!.slice(prefix.length), o.Size ?? 0);
    token = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (token);
  return keys;
}

export function s3ClientConfig(server: Pick<S3Server, 'endpoint' | 'region' | 'accessKeyId' | 'secretAccessKey'>): S3ClientConfig {
  return {
    endpoint: server.endpoint,
    region: server.region,
    forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  };
}

function renderConfig(o: {
  dir: string;
  fsid: string;
  monPort: number;
  gatewayPort: number;
  objectStore: 'bluestore' | 'memstore';
  capacityBytes: number;
}): string {
  const d = o.dir;
  return [
    '[global]',
    `fsid = ${o.fsid}`,
    `mon host = [v2:127.0.0.1:${o.monPort}]`,
    'mon initial members = a',
    'auth cluster required = none',
    'auth service required = none',
    'auth client required = none',
    // radosgw's default "secure" mode cannot be met with auth none: it would wait 300 s for the mon.
    'ms mon client mode = crc secure',
    'ms bind msgr1 = false',
    'ms bind msgr2 = true',
    'public addr = 127.0.0.1',
    'cluster addr = 127.0.0.1',
    'keyring = /dev/null',
    `run dir = ${d}/run`,
    `log file = ${d}/log/$name.log`,
    'osd pool default size = 1',
    'osd pool default min size = 1',
    'osd pool default pg num = 8',
    'osd pool default pgp num = 8',
    'osd pool default pg autoscale mode = off',
    'osd crush chooseleaf type = 0',
    'mon allow pool size one = true',
    'mon warn on pool no redundancy = false',
    'mon data avail warn = 1',
    // radosgw's first start creates its pools one paxos round each: the default 1 s makes that ~13 s longer.
    'paxos propose interval = 0.1',
    '',
    '[mon]',
    `mon data = ${d}/mon/$name`,
    `admin socket = ${d}/run/$name.asok`,
    `pid file = ${d}/run/$name.pid`,
    '',
    '[osd]',
    `osd data = ${d}/osd/$name`,
    `admin socket = ${d}/run/$name.asok`,
    `pid file = ${d}/run/$name.pid`,
    `osd objectstore = ${o.objectStore}`,
    'bluestore block create = true',
    `bluestore block size = ${o.capacityBytes}`,
    'bluestore fsck on mkfs = false',
    'osd op num shards = 1',
    'osd op num threads per shard = 2',
    'bdev aio poll ms = 20',
    `memstore device bytes = ${o.capacityBytes}`,
    `osd memory target = ${900 * 1024 * 1024}`,
    '',
    '[client.rgw.a]',
    `rgw frontends = beast endpoint=127.0.0.1:${o.gatewayPort}`,
    `rgw data = ${d}/rgw`,
    `admin socket = ${d}/run/$name.asok`,
    `pid file = ${d}/run/$name.pid`,
    // Deleted objects' data goes to the garbage collector; free it within a minute, not hours.
    'rgw gc obj min wait = 30',
    'rgw gc processor period = 30',
    'debug rgw = 1',
    '',
  ].join('\n');
}

async function rssBytes(daemon: Daemon | null): Promise<number | null> {
  if (daemon === null || !daemon.isRunning()) return null;
  const status = await readFile(`/proc/${daemon.pid}/status`, 'utf8').catch(() => '');
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  return kb === undefined ? null : Number(kb) * 1024;
}

/** Whether every thread of `pid` is in the stopped state (T), from /proc; a process gone counts as stopped. */
async function allThreadsStopped(pid: number): Promise<boolean> {
  const tasks = await readdir(`/proc/${pid}/task`).catch(() => []);
  for (const tid of tasks) {
    const stat = await readFile(`/proc/${pid}/task/${tid}/stat`, 'utf8').catch(() => null); // a thread that ended meanwhile
    if (stat !== null && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'T') return false;
  }
  return true;
}

/** Any HTTP answer from radosgw's `GET /` (anonymous ListBuckets: 200). */
async function gatewayAnswers(endpoint: string): Promise<boolean> {
  try {
    const res = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
    await res.arrayBuffer();
    return res.status === 200;
  } catch {
    return false;
  }
}

// Instances not stopped when the test process exits: proc.ts SIGKILLs the daemons (its hook runs first,
// it was registered first); this removes their dirs.
const liveDirs = new Set<string>();
process.once('exit', () => {
  if (process.env.REGCACHE_KEEP_TMP === '1') return;
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // a daemon not yet gone wrote into it: the dir stays, the daemons do not
    }
  }
});
// A signal would end the process without 'exit' and orphan the daemons (a killed test run, a CI timeout
// signalling node only): while an instance runs, SIGTERM, SIGINT and SIGHUP exit through the hooks above.
const EXIT_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
const exitOnSignal = (signal: NodeJS.Signals): void => process.exit(128 + (os.constants.signals[signal] ?? 15));
function track(dir: string, live: boolean): void {
  const before = liveDirs.size;
  if (live) liveDirs.add(dir);
  else liveDirs.delete(dir);
  if (before === 0 && liveDirs.size === 1) for (const s of EXIT_SIGNALS) process.on(s, exitOnSignal);
  if (before === 1 && liveDirs.size === 0) for (const s of EXIT_SIGNALS) process.off(s, exitOnSignal);
}

/**
 * Start a single-node Ceph and radosgw on a free 127.0.0.1 port, create an S3 user with fixed keys, and
 * wait until the endpoint serves (about 3 s with bluestore, 2 s with memstore, on 2 cores). The daemons run in
 * the foreground as this process's children, not daemonized: stop() signals the very processes it started
 * and reaps them (a daemonized one would be reparented to a PID 1 that may never reap it), and proc.ts's
 * exit hook SIGKILLs them if the test process ends without stop(). The mon and OSD also write pid files
 * under run/ for anyone inspecting a kept dir.
 */
export async function startS3Server(opts: S3ServerOptions = {}): Promise<S3Server> {
  const t0 = performance.now();
  const dir = await makeTmpDir('regcache-s3');
  track(dir, true);
  const objectStore = opts.objectStore ?? 'bluestore';
  const accessKeyId = opts.accessKeyId ?? FIXED_ACCESS_KEY_ID;
  const secretAccessKey = opts.secretAccessKey ?? FIXED_SECRET_ACCESS_KEY;
  // Every wait during the start shares one deadline; later calls (admin, startGateway) only their own.
  let deadline = Date.now() + (opts.readyTimeoutMs ?? 60_000);
  const budget = (ms: number): number => Math.min(ms, Math.max(1000, deadline - Date.now()));

  const conf = path.join(dir, 'ceph.conf');
  const logDir = path.join(dir, 'log');
  for (const sub of ['run', 'log', 'mon/mon.a', 'osd/osd.0', 'rgw']) await mkdir(path.join(dir, sub), { recursive: true });
  const [monPort, port] = [await freePort(), await freePort()];
  const fsid = randomUUID();
  await writeFile(conf, renderConfig({ dir, fsid, monPort, gatewayPort: port, objectStore, capacityBytes: opts.capacityBytes ?? 20 * GIB }));
  const endpoint = `http://127.0.0.1:${port}`;
  const env = { PATH: BASE_PATH, HOME: dir, CEPH_CONF: conf };

  const cli = async (command: string, args: string[], timeoutMs = CLI_TIMEOUT_MS): Promise<RunResult> =>
    run(command, ['-c', conf, ...args], { env, timeoutMs: budget(timeoutMs) });
  const must = async (command: string, args: string[]): Promise<string> => {
    const res = await cli(command, args);
    if (res.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${res.code}):\n${res.stderr}${res.stdout}`);
    return res.stdout;
  };
  const daemons: { mon: Daemon | null; osd: Daemon | null; gateway: Daemon | null } = { mon: null, osd: null, gateway: null };
  const start = (name: string, command: string, args: string[]): Daemon => {
    const outFile = path.join(logDir, `${name}.out`);
    return spawnDaemon(command, ['-f', '-c', conf, ...args], { env, stdoutFile: outFile });
  };
  const waitUntil = async (daemon: Daemon, name: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> =>
    waitFor(
      async () => {
        if (!daemon.isRunning())
          throw new Error(`${name} exited early:\n${await logTail(path.join(logDir, `${name}.out`))}\n${await logTail(path.join(logDir, `${name}.log`))}`);
        return probe();
      },
      { timeoutMs: budget(timeoutMs), what: `${name} in ${dir}`, intervalMs: 100 },
    );

  const startGateway = async (): Promise<void> => {
    if (daemons.gateway?.isRunning() === true) return;
    const gateway = start('client.rgw.a', 'radosgw', ['-n', 'client.rgw.a']);
    daemons.gateway = gateway;
    await waitUntil(gateway, 'client.rgw.a', () => gatewayAnswers(endpoint));
  };
  const stopGateway = async (): Promise<void> => {
    const gateway = daemons.gateway;
    if (gateway === null) return;
    if (gateway.isRunning()) gateway.child.kill('SIGCONT'); // a paused radosgw cannot act on SIGTERM
    await gateway.stop(STOP_GRACE_MS);
    daemons.gateway = null;
  };

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    // radosgw first: without the mon and OSD it would hang ~2 min on SIGTERM.
    await stopGateway();
    await daemons.osd?.stop(STOP_GRACE_MS);
    await daemons.mon?.stop(STOP_GRACE_MS);
    track(dir, false);
    if (process.env.REGCACHE_KEEP_TMP === '1') process.stderr.write(`keeping ${dir}\n`);
    else await removeTmpDir(dir);
  };

  const timings: S3ServerTimings = { mon: 0, osd: 0, gateway: 0, total: 0 };
  const since = (): number => Math.round(performance.now() - t0);
  try {
    const monmap = path.join(dir, 'monmap');
    await must('monmaptool', ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, monmap]);
    await must('ceph-mon', ['-i', 'a', '--mkfs', '--monmap', monmap]);
    daemons.mon = start('mon.a', 'ceph-mon', ['-i', 'a']);
    const osdUuid = randomUUID();
    // The OSD's mkfs needs nothing from the mon: it runs while the mon starts and registers the OSD.
    const [osdId] = await Promise.all([
      // The CLI waits for the mon (up to its connect timeout): also the mon's readiness probe.
      must('ceph', ['--connect-timeout', '15', 'osd', 'new', osdUuid]).then((out) => {
        timings.mon = since();
        return out.trim();
      }),
      must('ceph-osd', ['--no-mon-config', '-i', '0', '--mkfs', '--osd-uuid', osdUuid]),
    ]);
    if (osdId !== '0') throw new Error(`ceph osd new gave id ${osdId}, expected 0`);
    const osd = start('osd.0', 'ceph-osd', ['-i', '0']);
    daemons.osd = osd;
    // The OSD logs this once the mon has marked it up (polling `ceph osd stat` costs a Python start each).
    const osdLog = path.join(logDir, 'osd.0.log');
    await waitUntil(osd, 'osd.0', async () => (await readFile(osdLog, 'utf8').catch(() => '')).includes('state: booting -> active'));
    timings.osd = since();

    await startGateway();
    timings.gateway = since();

    await must('radosgw-admin', [
      'user',
      'create',
      '--uid=regcache',
      '--display-name=regcache tests',
      `--access-key=${accessKeyId}`,
      `--secret-key=${secretAccessKey}`,
    ]);
    timings.total = since();
    deadline = Infinity;
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    endpoint,
    port,
    accessKeyId,
    secretAccessKey,
    region: REGION,
    dir,
    gatewayLogFile: path.join(logDir, 'client.rgw.a.log'),
    timings,
    env: {
      AWS_ACCESS_KEY_ID: accessKeyId,
      AWS_SECRET_ACCESS_KEY: secretAccessKey,
      AWS_REGION: REGION,
      S3_ENDPOINT: endpoint,
      S3_FORCE_PATH_STYLE: 'true',
    },
    memory: async () => ({ mon: await rssBytes(daemons.mon), osd: await rssBytes(daemons.osd), gateway: await rssBytes(daemons.gateway) }),
    stopGateway,
    startGateway,
    pauseGateway: async () => {
      const gateway = daemons.gateway;
      if (gateway === null) return;
      gateway.child.kill('SIGSTOP');
      await waitFor(async () => allThreadsStopped(gateway.pid), { timeoutMs: 10_000, what: 'every radosgw thread to stop', intervalMs: 5 });
    },
    resumeGateway: () => void daemons.gateway?.child.kill('SIGCONT'),
    admin: (args) => cli('radosgw-admin', args),
    stop,
  };
}
