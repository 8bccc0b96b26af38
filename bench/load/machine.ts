// What the load bench ran on, for its report and docs/benchmarks.md: the machine and the versions of
// everything measured.
import os from 'node:os';
import { run } from '../../test/harness/proc.js';

export interface Machine {
  cpus: number;
  cpuModel: string;
  ramGiB: number;
  kernel: string;
  node: string;
  wrk: string;
  registry: string;
  regcache: string; // git revision, "+dirty" with uncommitted changes
}

export async function describeMachine(): Promise<Machine> {
  // `wrk -v` prints its version line and the usage, and exits 1.
  const wrk = /^wrk (\S+)/.exec((await run('wrk', ['-v']).catch(() => null))?.stdout ?? '')?.[1] ?? '?';
  const registry = /distribution (\S+)/.exec((await run('docker-registry', ['--version']).catch(() => null))?.stdout ?? '')?.[1] ?? '?';
  const rev = (await run('git', ['rev-parse', '--short', 'HEAD'])).stdout.trim() || '?';
  const dirty = (await run('git', ['status', '--porcelain', '--untracked-files=no'])).stdout.trim() !== '';
  return {
    cpus: os.availableParallelism(),
    cpuModel: os.cpus()[0]?.model.trim() ?? '?',
    ramGiB: os.totalmem() / 2 ** 30,
    kernel: `${os.type()} ${os.release()}`,
    node: process.version,
    wrk,
    registry: `docker-registry (distribution) ${registry}`,
    regcache: dirty ? `${rev}+dirty` : rev,
  };
}
