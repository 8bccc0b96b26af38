// Resident memory and open descriptors of every process under test, sampled from /proc every few seconds
// for the whole run. A process is identified by its role and pid: a restarted one is a new series. The
// check (`flat`) looks only at processes that lived long enough to have a warm-up and a steady state.
import { readdir, readFile } from 'node:fs/promises';

export interface Sample {
  t: number; // ms since the soak began
  rssBytes: number;
  fds: number;
}

export interface Series {
  role: string; // local primary, local worker, replica-a, haproxy, docker-registry, ...
  pid: number;
  samples: Sample[];
}

/** A process's verdict: its steady state compared with the end of its warm-up. */
export interface Flatness {
  role: string;
  pid: number;
  livedMs: number;
  judged: boolean; // lived long enough to judge
  rssWarm: number; // median RSS of the window after warm-up
  rssEnd: number; // median RSS of the last window
  fdsWarm: number; // most descriptors in the window after warm-up
  fdsEnd: number; // most descriptors in the last window
  flat: boolean;
}

// The bound: after a warm-up of the first third of a process's life (at least WARM_MS), the median RSS of
// its last third may exceed that of its middle third by 25% + 24 MiB at most, and its peak descriptor
// count by 48 at most (a bounded pool of clients holds a bounded number of connections). A leak of a few
// hundred bytes per request grows without bound over an hour and fails this; noise does not.
export const RSS_RATIO = 1.25;
export const RSS_SLACK = 24 * 1024 * 1024;
export const FD_SLACK = 48;
const WARM_MS = 10_000;
const MIN_SAMPLES = 9;

export class Monitor {
  readonly series = new Map<string, Series>();
  private timer: NodeJS.Timeout | null = null;
  private sampling: Promise<void> = Promise.resolve();

  constructor(
    private readonly t0: number,
    private readonly processes: () => Promise<{ role: string; pid: number }[]>,
    private readonly everyMs: number,
  ) {}

  start(): void {
    this.timer = setInterval(() => {
      this.sampling = this.sampling.then(() => this.sample()).catch(() => undefined);
    }, this.everyMs);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.sampling;
  }

  async sample(): Promise<void> {
    const t = Date.now() - this.t0;
    for (const { role, pid } of await this.processes()) {
      const rssBytes = await rssOf(pid);
      const fds = await fdsOf(pid);
      if (rssBytes === null || fds === null) continue; // exited meanwhile
      const id = `${role}:${pid}`;
      let s = this.series.get(id);
      if (!s) this.series.set(id, (s = { role, pid, samples: [] }));
      s.samples.push({ t, rssBytes, fds });
    }
  }

  flatness(): Flatness[] {
    return [...this.series.values()].map((s) => {
      const n = s.samples.length;
      const livedMs = n > 0 ? s.samples[n - 1]!.t - s.samples[0]!.t : 0;
      const judged = n >= MIN_SAMPLES && livedMs >= 3 * WARM_MS;
      const third = Math.floor(n / 3);
      const middle = s.samples.slice(third, 2 * third);
      const last = s.samples.slice(2 * third);
      const rssWarm = median(middle.map((x) => x.rssBytes));
      const rssEnd = median(last.map((x) => x.rssBytes));
      const fdsWarm = Math.max(0, ...middle.map((x) => x.fds));
      const fdsEnd = Math.max(0, ...last.map((x) => x.fds));
      const flat = !judged || (rssEnd <= rssWarm * RSS_RATIO + RSS_SLACK && fdsEnd <= fdsWarm + FD_SLACK);
      return { role: s.role, pid: s.pid, livedMs, judged, rssWarm, rssEnd, fdsWarm, fdsEnd, flat };
    });
  }
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function rssOf(pid: number): Promise<number | null> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => null);
  const kb = status && /^VmRSS:\s+(\d+) kB/m.exec(status);
  return kb ? Number(kb[1]) * 1024 : null;
}

async function fdsOf(pid: number): Promise<number | null> {
  return readdir(`/proc/${pid}/fd`).then(
    (fds) => fds.length,
    () => null,
  );
}
