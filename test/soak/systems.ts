// The two configurations the soak runs, as real processes it can kill and restart on the same ports:
// - local: regcache with WORKERS=2 (a primary and two workers) on a small CACHE_MAX_SIZE, its CACHE_DIR
//   on a tmpfs of its own (so the disk can be filled and emptied);
// - fleet: two replicas (WORKERS=1) on one bucket of a Ceph RADOS Gateway, behind haproxy.
// Both reach the upstream through a FaultUpstream of their own (registry.test) and the token server
// (auth.test) directly.
import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { startBalancer, type Balancer } from '../harness/haproxy.js';
import { freePort } from '../harness/ports.js';
import { run, sleep, waitFor } from '../harness/proc.js';
import { startRegcache, type Regcache } from '../harness/regcache.js';
import type { S3Server } from '../harness/s3-server.js';
import type { FaultUpstream } from './fault-upstream.js';

const CLI = path.resolve(import.meta.dirname, '../../dist/cli.js');

export const LOCAL_MAX_BYTES = 32 * 1024 * 1024;
/** The local tree's WORKER_STALL_TIMEOUT: a stopped worker (the stop-worker fault) is killed by its primary after this. */
export const LOCAL_WORKER_STALL_MS = 5000;
export const LOCAL_TMPFS_BYTES = 128 * 1024 * 1024;
export const FLEET_MAX_BYTES = 40 * 1024 * 1024;
export const FLEET_LEASE_MS = 3000;
export const FLEET_SWEEP_MS = 2000;
export const FLEET_GRACE_MS = 6000;
export const BUCKET = 'soak';
export const PREFIX = 'cache/';

export interface Upstreams {
  caBundle: string; // UPSTREAM_CA_FILE: the upstream's CA and the token server's
  tokenPort: number;
}

function upstreamEnv(upstreams: Upstreams, fault: FaultUpstream): Record<string, string> {
  return {
    UPSTREAM_CA_FILE: upstreams.caBundle,
    CONNECT_TO: `registry.test:443:127.0.0.1:${fault.port} auth.test:443:127.0.0.1:${upstreams.tokenPort}`,
    ADDITIONAL_REGISTRIES: 'registry.test auth.test',
    LOG_LEVEL: 'info',
  };
}

/** One regcache "node" that the soak can kill and start again on the same ports and directories. */
export class Node {
  /** Every process tree started for this node, oldest first: their logs are read at the end. */
  readonly runs: Regcache[] = [];
  /** Trees (or, with WORKERS > 1, their primaries) that exited when nobody stopped them: crashes. */
  readonly crashes: string[] = [];
  private readonly stopped = new Set<Regcache>();
  /** When the last kill -9 or SIGTERM was sent (a fault's own start is earlier: it looks up pids first). */
  lastSignalAt = 0;

  constructor(
    readonly name: string,
    readonly dir: string,
    readonly cacheDir: string,
    readonly caDir: string,
    readonly ports: { proxy: number; mirror: number; admin: number },
    private readonly env: Record<string, string>,
  ) {}

  get current(): Regcache {
    return this.runs.at(-1)!;
  }

  async start(): Promise<void> {
    const proxy = await startRegcache({
      dir: this.dir,
      cacheDir: this.cacheDir,
      caDir: this.caDir,
      startTimeoutMs: 60_000, // a tree of three processes on a busy machine
      env: { ...this.env, PORT: String(this.ports.proxy), MIRROR_PORT: String(this.ports.mirror), ADMIN_PORT: String(this.ports.admin) },
    });
    this.runs.push(proxy);
    void proxy.daemon.exited.then((code) => {
      if (!this.stopped.has(proxy)) this.crashes.push(`${this.name} pid ${proxy.daemon.pid} exited (${code}) unasked; log ${proxy.logFile}`);
    });
  }

  /** The primary (or the replica) and, with WORKERS > 1, its workers alive now. */
  async pids(): Promise<{ primary: number; workers: number[] }> {
    const proxy = this.current;
    const started = (await proxy.logs()).filter((l) => l.msg === 'worker started');
    const latest = new Map<number, number>();
    for (const l of started) latest.set(Number(l.workerId), Number(l.pid));
    return { primary: proxy.daemon.pid, workers: [...latest.values()].filter(alive) };
  }

  /** kill -9 of the primary (its workers follow it: they exit when its channel closes), then a new tree. */
  async killAndRestart(): Promise<void> {
    const { workers } = await this.pids();
    this.stopped.add(this.current);
    this.lastSignalAt = Date.now();
    this.current.daemon.child.kill('SIGKILL');
    await this.current.daemon.exited;
    await waitFor(async () => workers.every((p) => !alive(p)), { timeoutMs: 10_000, what: `${this.name}'s workers to exit` }).catch(() => {
      for (const p of workers) if (alive(p)) process.kill(p, 'SIGKILL'); // the soak started them (as the primary's children)
    });
    await this.start();
  }

  /** SIGTERM (regcache's graceful stop), then a new tree. */
  async stopAndRestart(): Promise<void> {
    this.stopped.add(this.current);
    this.lastSignalAt = Date.now();
    await this.current.stop();
    await this.start();
  }

  /** `regcache cache <args> --json` through the running server's control socket. */
  async cache<T>(...args: string[]): Promise<{ code: number; out: T | null; stderr: string }> {
    const r = await run(process.execPath, [CLI, 'cache', ...args, '--json', '--cache-dir', this.cacheDir], {
      env: { PATH: process.env.PATH ?? '' },
      timeoutMs: 120_000,
    });
    let out: T | null = null;
    try {
      out = JSON.parse(r.stdout) as T;
    } catch {
      out = null;
    }
    return { code: r.code, out, stderr: r.stderr };
  }

  /** Files in CACHE_DIR/spool: fills running now, or left behind. */
  async spoolFiles(): Promise<string[]> {
    return readdir(path.join(this.cacheDir, 'spool')).catch(() => []);
  }

  async stop(): Promise<void> {
    if (!this.current) return;
    this.stopped.add(this.current);
    await this.current.stop();
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function startLocal(root: string, cacheDir: string, upstreams: Upstreams, fault: FaultUpstream): Promise<Node> {
  const node = new Node('local', path.join(root, 'local'), cacheDir, path.join(root, 'local', 'ca'), await threePorts(), {
    ...upstreamEnv(upstreams, fault),
    WORKERS: '2',
    WORKER_STALL_TIMEOUT: `${LOCAL_WORKER_STALL_MS}ms`,
    CACHE_MAX_SIZE: String(LOCAL_MAX_BYTES),
  });
  await node.start();
  return node;
}

export interface Fleet {
  replicas: Node[];
  balancer: Balancer;
}

export async function startFleet(root: string, s3: S3Server, upstreams: Upstreams, fault: FaultUpstream): Promise<Fleet> {
  const env = {
    ...upstreamEnv(upstreams, fault),
    ...s3.env,
    WORKERS: '1',
    CACHE_STORE: `s3://${BUCKET}/${PREFIX}`,
    CACHE_MAX_SIZE: String(FLEET_MAX_BYTES),
    S3_FILL_LEASE: `${FLEET_LEASE_MS}ms`,
    S3_SWEEP_INTERVAL: `${FLEET_SWEEP_MS}ms`,
    S3_ACCESS_FLUSH: '1000ms',
    S3_EVICT_GRACE: `${FLEET_GRACE_MS}ms`,
  };
  const replicas: Node[] = [];
  for (const name of ['replica-a', 'replica-b']) {
    const dir = path.join(root, name);
    await mkdir(dir, { recursive: true });
    // One CA for the fleet: a client behind the balancer trusts every replica.
    const node = new Node(name, dir, path.join(dir, 'cache'), path.join(root, 'fleet-ca'), await threePorts(), env);
    await node.start();
    replicas.push(node);
  }
  const balancer = await startBalancer(
    root,
    replicas.map((r) => r.ports.proxy),
  );
  return { replicas, balancer };
}

async function threePorts(): Promise<{ proxy: number; mirror: number; admin: number }> {
  for (;;) {
    const ports = { proxy: await freePort(), mirror: await freePort(), admin: await freePort() };
    if (new Set(Object.values(ports)).size === 3) return ports;
    await sleep(10);
  }
}
