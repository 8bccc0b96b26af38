// What one measured operation of the S3 bench cost each party on the shared cores: CPU seconds of the
// regcache replicas involved, of the Ceph daemons (radosgw, ceph-osd, ceph-mon: found among this process's
// children by name, since the harness runs them in the foreground), of the upstream registry and of the
// clients (curl, skopeo: exited children); and each replica's peak RSS during the operation alone (VmHWM
// reset through /proc/<pid>/clear_refs before it, where the kernel allows; else the peak since start).
import { readFile, writeFile } from 'node:fs/promises';
import { childPids, cpuSeconds, exitedChildrenCpuSeconds, memoryMb } from '../measure.js';

export const CEPH_DAEMONS = ['radosgw', 'ceph-osd', 'ceph-mon'] as const;
export type CephDaemon = (typeof CEPH_DAEMONS)[number];

export interface Usage {
  cpuSeconds: { regcache: number; upstream: number; clients: number } & Record<CephDaemon, number>;
  /** Peak RSS in MB of each replica during the operation (or since its start: peakSinceStart). */
  peakRssMb: number[];
  peakSinceStart: boolean;
}

/** The Ceph daemons' pids, by name: this process's children whose /proc/<pid>/comm is one of CEPH_DAEMONS. */
export async function cephPids(): Promise<Record<CephDaemon, number>> {
  const found: Partial<Record<CephDaemon, number>> = {};
  for (const pid of await childPids(process.pid)) {
    const comm = (await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '')).trim();
    if ((CEPH_DAEMONS as readonly string[]).includes(comm)) found[comm as CephDaemon] = pid;
  }
  const missing = CEPH_DAEMONS.filter((d) => found[d] === undefined);
  if (missing.length > 0) throw new Error(`Ceph daemons not found among this process's children: ${missing.join(', ')}`);
  return found as Record<CephDaemon, number>;
}

/** Resets a process's VmHWM to its current RSS (clear_refs 5, Linux >= 4.0, the process's owner or root). */
async function resetPeak(pid: number): Promise<boolean> {
  return writeFile(`/proc/${pid}/clear_refs`, '5').then(
    () => true,
    () => false,
  );
}

export class UsageMeter {
  constructor(
    private readonly ceph: Record<CephDaemon, number>,
    private readonly upstreamPid: number,
  ) {}

  private async snapshot(replicas: number[]): Promise<Usage['cpuSeconds']> {
    const cpu = async (pid: number): Promise<number> => (await cpuSeconds(pid)) ?? NaN;
    let regcache = 0;
    for (const pid of replicas) regcache += await cpu(pid);
    return {
      regcache,
      upstream: await cpu(this.upstreamPid),
      clients: await exitedChildrenCpuSeconds(),
      radosgw: await cpu(this.ceph.radosgw),
      'ceph-osd': await cpu(this.ceph['ceph-osd']),
      'ceph-mon': await cpu(this.ceph['ceph-mon']),
    };
  }

  /** Starts measuring an operation served by these replicas (pids); the returned function ends it. */
  async start(replicas: number[]): Promise<() => Promise<Usage>> {
    let peakSinceStart = false;
    for (const pid of replicas) if (!(await resetPeak(pid))) peakSinceStart = true;
    const before = await this.snapshot(replicas);
    return async () => {
      const after = await this.snapshot(replicas);
      const peakRssMb: number[] = [];
      for (const pid of replicas) peakRssMb.push((await memoryMb(pid))?.peak ?? NaN);
      const delta = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - before[k as keyof typeof before]])) as Usage['cpuSeconds'];
      return { cpuSeconds: delta, peakRssMb, peakSinceStart };
    };
  }
}
