// podman and buildah (the containers/image and containers/storage tools) run hermetically: storage,
// run root, registries.conf, containers.conf, policy and HOME all inside `dir`, the vfs driver, no
// systemd; so nothing of the host's configuration leaks in and nothing of theirs stays behind.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { run, type RunResult } from './proc.js';

export type ContainersTool = 'podman' | 'buildah';

export interface ContainersToolOptions {
  /** Private root: storage, run root, configuration, HOME. */
  dir: string;
  /** registries.conf to use (TOML); default one that only says docker.io is the search registry. */
  registriesConf?: string;
  /** Extra env (HTTPS_PROXY, ...) on top of a minimal base. */
  env?: Record<string, string>;
}

/** Runs `tool [global flags] args` against the private storage in opts.dir. */
export async function runContainersTool(tool: ContainersTool, args: string[], opts: ContainersToolOptions): Promise<RunResult> {
  const dir = path.resolve(opts.dir);
  const home = path.join(dir, 'home');
  await mkdir(home, { recursive: true });
  const registries = path.join(dir, 'registries.conf');
  await writeFile(registries, opts.registriesConf ?? 'unqualified-search-registries = ["docker.io"]\n');
  const policy = path.join(dir, 'policy.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  const containersConf = path.join(dir, 'containers.conf');
  await writeFile(containersConf, '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n');
  const storage = ['--root', path.join(dir, 'storage'), '--runroot', path.join(dir, 'run'), '--storage-driver', 'vfs'];
  const storageConf = path.join(dir, 'storage.conf');
  await writeFile(storageConf, `[storage]\ndriver = "vfs"\ngraphroot = ${JSON.stringify(storage[1])}\nrunroot = ${JSON.stringify(storage[3])}\n`);
  const env: Record<string, string> = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: home,
    XDG_RUNTIME_DIR: home,
    XDG_CONFIG_HOME: path.join(home, '.config'),
    TMPDIR: home,
    CONTAINERS_REGISTRIES_CONF: registries,
    CONTAINERS_CONF: containersConf,
    CONTAINERS_STORAGE_CONF: storageConf,
    ...opts.env,
  };
  const global = tool === 'podman' ? [...storage, '--tmpdir', path.join(dir, 'tmp')] : storage;
  // The signature policy is a per-command flag of both tools' pull.
  const withPolicy = args[0] === 'pull' ? [args[0], '--signature-policy', policy, ...args.slice(1)] : args;
  return run(tool, [...global, ...withPolicy], { env, timeoutMs: 180_000 });
}
