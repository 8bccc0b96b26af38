import { mkdir, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { unmountAllUnder } from './mounts.js';
import { logTail, run, spawnDaemon, waitFor, type RunResult } from './proc.js';

export interface ContainerdOptions {
  /** Private root for config, state, sockets and containerd.log. */
  dir: string;
  /** Extra env on top of a minimal base. */
  env?: Record<string, string>;
}

export interface Containerd {
  /** gRPC socket path (for `dockerd --containerd`, `ctr --address`). */
  address: string;
  logFile: string;
  /** Run ctr against this containerd; env extends the base env (e.g. HTTPS_PROXY for `ctr images pull`). */
  ctr(args: string[], env?: Record<string, string>): Promise<RunResult>;
  stop(): Promise<void>;
}

export const BASE_PATH = '/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin';

/** TOML basic strings accept JSON string syntax. */
const s = (v: string): string => JSON.stringify(v);

function renderConfig(dir: string, address: string): string {
  // Every path containerd would otherwise put under /run/containerd,
  // /var/lib/containerd or /opt/containerd is redirected into dir, so it can
  // never collide with a system containerd or another test's instance.
  return [
    'version = 2',
    `root = ${s(path.join(dir, 'root'))}`,
    `state = ${s(path.join(dir, 'state'))}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${s(address)}`,
    '[ttrpc]',
    `  address = ${s(`${address}.ttrpc`)}`,
    '[debug]',
    '  address = ""',
    '  level = "info"',
    '[metrics]',
    '  address = ""',
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${s(path.join(dir, 'opt'))}`,
    '[plugins."io.containerd.runtime.v1.linux"]',
    `  runtime_root = ${s(path.join(dir, 'runc'))}`,
    '',
  ].join('\n');
}

function socketAccepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(socketPath);
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

/** Start a private containerd (no CRI) and wait until its gRPC socket accepts connections. */
export async function startContainerd(opts: ContainerdOptions): Promise<Containerd> {
  const dir = path.resolve(opts.dir);
  await mkdir(dir, { recursive: true });
  const address = path.join(dir, 'containerd.sock');
  const configFile = path.join(dir, 'config.toml');
  await writeFile(configFile, renderConfig(dir, address));
  const logFile = path.join(dir, 'containerd.log');
  const env = { PATH: BASE_PATH, HOME: dir, ...opts.env };
  const daemon = spawnDaemon('containerd', ['--config', configFile], { env, stdoutFile: logFile });

  const stop = async (): Promise<void> => {
    await daemon.stop(15_000);
    await unmountAllUnder(dir);
    for (const sub of ['root', 'state', 'opt', 'runc']) await rm(path.join(dir, sub), { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => {
        if (!daemon.isRunning()) throw new Error(`containerd exited early:\n${await logTail(logFile)}`);
        return socketAccepts(address);
      },
      { timeoutMs: 20_000, what: `containerd at ${address}` },
    );
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    address,
    logFile,
    ctr: (args, extraEnv) => run('ctr', ['--address', address, ...args], { env: { PATH: BASE_PATH, HOME: dir, ...extraEnv } }),
    stop,
  };
}
