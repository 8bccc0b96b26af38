import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { BASE_PATH, startContainerd, type Containerd } from './containerd.js';
import { unmountAllUnder } from './mounts.js';
import { logTail, run, spawnDaemon, waitFor, type RunResult } from './proc.js';

export interface DockerdOptions {
  /** Private root: data-root, exec-root, socket, logs. Keep it short (unix socket paths max ~107 bytes). */
  dir: string;
  /** Env for dockerd on top of a minimal base (HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE, ...). */
  env: Record<string, string>;
  /** Extra daemon.json keys, e.g. { 'registry-mirrors': [...] }. */
  daemonConfig?: Record<string, unknown>;
  /**
   * A directory dockerd sees as /etc/docker (bind-mounted in a mount namespace of its own, so the host's is
   * never touched): certs.d/<registry>/ca.crt in it is the per-registry trust an operator would set up.
   */
  etcDocker?: string;
  /**
   * overlay2 where this kernel mounts overlayfs on dir's file system (a layer or container costs no copy),
   * else vfs; by default vfs, which needs no kernel support and copies every layer and container in full.
   */
  overlay?: boolean;
}

export interface Dockerd {
  /** Unix socket path; the CLI uses unix://<socket>. */
  socket: string;
  logFile: string;
  containerd: Containerd;
  /** Run the docker CLI against this daemon (isolated DOCKER_CONFIG); env adds e.g. DOCKER_BUILDKIT. */
  docker(args: string[], opts?: { timeoutMs?: number; env?: Record<string, string> }): Promise<RunResult>;
  stop(): Promise<void>;
  /** The storage driver it runs with. */
  storageDriver: 'vfs' | 'overlay2';
}

/** Whether an overlayfs mounts in dir (the kernel has it, dir's file system can be its upper layer). */
async function overlayMounts(dir: string): Promise<boolean> {
  const probe = await mkdtemp(path.join(dir, 'overlay-probe-'));
  const [lower, upper, work, merged] = ['l', 'u', 'w', 'm'].map((d) => path.join(probe, d)) as [string, string, string, string];
  try {
    for (const d of [lower, upper, work, merged]) await mkdir(d);
    const mounted = await run('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${work}`, merged], {
      timeoutMs: 10_000,
    });
    if (mounted.code !== 0) return false;
    await run('umount', [merged], { timeoutMs: 10_000 });
    return true;
  } finally {
    await unmountAllUnder(probe);
    await rm(probe, { recursive: true, force: true });
  }
}

/**
 * First `name` on BASE_PATH. /usr/bin comes before /usr/local/bin so the
 * distro docker CLI (same version as dockerd) wins over any newer stray one.
 */
function findBinary(name: string): string {
  for (const dir of BASE_PATH.split(':')) {
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw new Error(`${name} not found on ${BASE_PATH}; run test/install-deps.sh`);
}

function ping(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get({ socketPath, path: '/_ping', timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.once('error', () => resolve(false));
    req.once('timeout', () => req.destroy());
  });
}

/**
 * Start dockerd (vfs or overlay2, no bridge, no iptables) on its own containerd, entirely
 * inside dir, and wait until `docker info` works.
 */
export async function startDockerd(opts: DockerdOptions): Promise<Dockerd> {
  const dir = path.resolve(opts.dir);
  await mkdir(dir, { recursive: true });
  const dockerdBin = findBinary('dockerd');
  const dockerBin = findBinary('docker');
  const socket = path.join(dir, 'docker.sock');
  const logFile = path.join(dir, 'dockerd.log');
  const dataRoot = path.join(dir, 'root');
  const execRoot = path.join(dir, 'exec');
  const configFile = path.join(dir, 'daemon.json');
  // deprecated-key-path has no CLI flag in 20.10; without it dockerd writes /etc/docker/key.json.
  const daemonConfig = { 'deprecated-key-path': path.join(dir, 'key.json'), ...opts.daemonConfig };
  const storageDriver = opts.overlay === true && (await overlayMounts(dir)) ? 'overlay2' : 'vfs';
  await writeFile(configFile, JSON.stringify(daemonConfig, null, 2));

  // Our own containerd: dockerd would otherwise adopt /run/containerd's if one
  // exists, and its supervised one writes to /opt/containerd.
  const containerd = await startContainerd({ dir: path.join(dir, 'containerd') });

  if (opts.etcDocker) await mkdir('/etc/docker', { recursive: true }); // the mount point (docker.io's package makes it)
  // unshare execs sh, which execs dockerd: the daemon's pid is dockerd's.
  const [command, prefix] = opts.etcDocker
    ? ['unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount --bind "$0" /etc/docker && exec "$@"', opts.etcDocker, dockerdBin]]
    : [dockerdBin, []];
  const daemon = spawnDaemon(
    command,
    [
      ...prefix,
      `--config-file=${configFile}`,
      `--containerd=${containerd.address}`,
      `--data-root=${dataRoot}`,
      `--exec-root=${execRoot}`,
      `--pidfile=${path.join(dir, 'docker.pid')}`,
      `--host=unix://${socket}`,
      `--storage-driver=${storageDriver}`,
      '--bridge=none',
      '--iptables=false',
      '--ip6tables=false',
      '--ip-masq=false',
      '--log-level=info',
    ],
    { env: { PATH: BASE_PATH, HOME: dir, ...opts.env }, stdoutFile: logFile },
  );

  const cliEnv = { PATH: BASE_PATH, HOME: dir, DOCKER_CONFIG: path.join(dir, 'cli'), DOCKER_HOST: `unix://${socket}` };
  const docker = (args: string[], o: { timeoutMs?: number; env?: Record<string, string> } = {}): Promise<RunResult> =>
    run(dockerBin, args, { env: { ...cliEnv, ...o.env }, timeoutMs: o.timeoutMs ?? 300_000 });

  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (daemon.isRunning()) {
      // Containers would leave shims and mounts behind; remove them while dockerd can.
      const ps = await docker(['ps', '-aq'], { timeoutMs: 15_000 }).catch(() => null);
      const ids = ps?.stdout.split('\n').filter(Boolean) ?? [];
      if (ids.length > 0) await docker(['rm', '-f', ...ids], { timeoutMs: 30_000 }).catch(() => null);
    }
    await daemon.stop(20_000);
    await containerd.stop();
    await unmountAllUnder(dir);
    // vfs copies every layer in full (overlay2 holds them once): free the space now, keep the logs.
    for (const sub of [dataRoot, execRoot, path.join(dir, 'cli')]) await rm(sub, { recursive: true, force: true });
  };

  try {
    await waitFor(
      async () => {
        if (!daemon.isRunning()) throw new Error(`dockerd exited early:\n${await logTail(logFile)}`);
        return ping(socket);
      },
      { timeoutMs: 60_000, what: `dockerd at ${socket}` },
    );
    const info = await docker(['info'], { timeoutMs: 30_000 });
    if (info.code !== 0) throw new Error(`docker info failed: ${info.stderr}`);
  } catch (err) {
    await stop();
    throw err;
  }

  return { socket, logFile, containerd, docker, stop, storageDriver };
}
