// Faults on a schedule drawn from the seed: three lanes run side by side (the upstream, the local
// configuration, the fleet), each waiting a drawn gap, then injecting a drawn fault and, for a window
// fault, undoing it after a drawn time. Each lane draws from its own stream, so one seed gives the same
// sequence of faults, targets and gaps (real time decides only how they interleave with the load).
// Every fault is recorded with when it began and ended: the invariants excuse what a fault explains
// (two fills of one blob across a killed leader or a hung bucket) and nothing else.
import { open, readdir, rm, stat, truncate } from 'node:fs/promises';
import path from 'node:path';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { sleep, waitFor } from '../harness/proc.js';
import type { S3Server } from '../harness/s3-server.js';
import { listKeys } from '../harness/s3-server.js';
import type { Catalogue } from './catalogue.js';
import type { FaultUpstream, UpstreamMode } from './fault-upstream.js';
import type { Rng } from './rng.js';
import { alive, BUCKET, LOCAL_WORKER_STALL_MS, PREFIX, type Fleet, type Node } from './systems.js';

export interface FaultEvent {
  lane: 'upstream' | 'local' | 'fleet';
  kind: string;
  target: string;
  start: number;
  end: number;
  /** When it struck, if later than `start` (a kill: the signal, after the pids were looked up). */
  at?: number;
  /** A digest it damaged or removed (corrupt, truncate, rm): verify may find it. */
  digest?: string;
  /** It could not be injected (nothing to corrupt yet, the bucket down): not counted as injected. */
  skipped?: string;
  /** stop-worker: how long after its SIGSTOP the worker was gone (its primary killed it); absent if it was not. */
  goneAfterMs?: number;
}

// How long past WORKER_STALL_TIMEOUT a stopped worker may stay before the soak kills it itself (and fails).
const STALL_SLACK_MS = 10_000;

export interface FaultPlan {
  gapMs: [number, number];
  windowMs: [number, number];
}

// A window begun just before the deadline still lasts this long: a fault too short to bite tests nothing.
const SHORTEST_WINDOW_MS = 1000;

export class Faults {
  readonly events: FaultEvent[] = [];
  private stopping = false;
  private deadline = Infinity;

  constructor(
    private readonly plan: FaultPlan,
    private readonly ctx: {
      upstreams: FaultUpstream[];
      local: Node;
      fleet: Fleet;
      s3: S3Server;
      s3Client: S3Client;
      ballastFile: string;
      catalogue: Catalogue;
      /** Digests clients asked for lately (Ledger.recent). */
      recent: (config: 'local' | 'fleet') => string[];
    },
  ) {}

  /** Runs the three lanes until `deadline`; every window fault is undone before it resolves. */
  async run(deadline: number, rngs: { upstream: Rng; local: Rng; fleet: Rng }): Promise<void> {
    this.deadline = deadline;
    await Promise.all([
      this.lane('upstream', deadline, rngs.upstream, (rng, e) => this.upstreamFault(rng, e)),
      this.lane('local', deadline, rngs.local, (rng, e) => this.localFault(rng, e)),
      this.lane('fleet', deadline, rngs.fleet, (rng, e) => this.fleetFault(rng, e)),
    ]);
  }

  stop(): void {
    this.stopping = true;
  }

  /** Faults injected, by kind (skipped ones apart). */
  byKind(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const e of this.events) {
      const key = e.skipped ? `${e.kind} (skipped)` : e.kind;
      counts[key] = (counts[key] ?? 0) + 1;
    }
    return counts;
  }

  private async lane(
    lane: FaultEvent['lane'],
    deadline: number,
    rng: Rng,
    inject: (rng: Rng, event: FaultEvent) => Promise<Omit<FaultEvent, 'lane' | 'start' | 'end'>>,
  ): Promise<void> {
    for (;;) {
      const gap = rng.between(...this.plan.gapMs);
      if (this.stopping || Date.now() + gap >= deadline) return;
      await sleep(gap);
      const start = Date.now();
      const event: FaultEvent = { lane, start, end: start, kind: '?', target: '?' };
      this.events.push(event);
      try {
        Object.assign(event, await inject(rng, event));
      } catch (err) {
        event.skipped = `failed: ${(err as Error).message.split('\n')[0]}`;
      }
      event.end = Date.now();
    }
  }

  /** Mostly a digest clients asked for in the last moments (being filled, or just stored: issue 25's two leaders), else any. */
  private rmTarget(rng: Rng, config: 'local' | 'fleet'): string {
    const recent = this.ctx.recent(config);
    return recent.length > 0 && rng.chance(0.8)
      ? recent[recent.length - 1 - rng.int(Math.min(8, recent.length))]!
      : rng.pick([...this.ctx.catalogue.blobs.keys()].sort());
  }

  /** A window's length: drawn (a seed replays the same draws), then cut at the deadline, which the suite waits for. */
  private window(rng: Rng): number {
    return Math.max(SHORTEST_WINDOW_MS, Math.min(rng.between(...this.plan.windowMs), this.deadline - Date.now()));
  }

  private async upstreamFault(rng: Rng, event: FaultEvent): Promise<Omit<FaultEvent, 'lane' | 'start' | 'end'>> {
    const mode = rng.weighted<Exclude<UpstreamMode, 'ok'>>({ slow: 2, error: 1, reset: 1 });
    event.kind = `upstream-${mode}`; // named before it acts: a fault that fails is still known by its kind
    for (const u of this.ctx.upstreams) u.mode = mode;
    await sleep(this.window(rng));
    for (const u of this.ctx.upstreams) u.mode = 'ok';
    return { kind: `upstream-${mode}`, target: 'registry.test' };
  }

  private async localFault(rng: Rng, event: FaultEvent): Promise<Omit<FaultEvent, 'lane' | 'start' | 'end'>> {
    const local = this.ctx.local;
    const kind = rng.weighted({
      'kill-worker': 3,
      'stop-worker': 2,
      'kill-primary': 1,
      'sigterm-restart': 1,
      'flip-byte': 2,
      truncate: 1,
      'disk-full': 2,
      'cache-rm': 2,
    });
    event.kind = kind;
    switch (kind) {
      case 'kill-worker': {
        const pid = await pickWorker(local, rng);
        if (pid === null) return { kind, target: 'local', skipped: 'no worker' };
        const at = Date.now();
        process.kill(pid, 'SIGKILL');
        return { kind, target: `local worker ${pid}`, at };
      }
      case 'stop-worker': {
        // Alive but stuck (SIGSTOP): the primary's watchdog must kill it (WORKER_STALL_TIMEOUT); nothing else would.
        const pid = await pickWorker(local, rng);
        if (pid === null) return { kind, target: 'local', skipped: 'no worker' };
        const stoppedAt = Date.now();
        process.kill(pid, 'SIGSTOP');
        const gone = await waitFor(async () => !alive(pid), {
          timeoutMs: LOCAL_WORKER_STALL_MS + STALL_SLACK_MS,
          intervalMs: 100,
          what: 'the stopped worker killed',
        }).then(
          () => true,
          () => false,
        );
        if (!gone) process.kill(pid, 'SIGKILL'); // so the soak goes on; the invariant says it was not killed
        return { kind, target: `local worker ${pid}`, at: Date.now(), ...(gone ? { goneAfterMs: Date.now() - stoppedAt } : {}) };
      }
      case 'kill-primary':
        await local.killAndRestart();
        return { kind, target: 'local primary', at: local.lastSignalAt };
      case 'sigterm-restart':
        await local.stopAndRestart();
        return { kind, target: 'local primary', at: local.lastSignalAt };
      case 'flip-byte':
      case 'truncate': {
        const [which, where] = [rng.next(), rng.next()]; // drawn first: a replay draws the same whatever is stored
        const files = await contentFiles(path.join(local.cacheDir, 'content-v2'));
        if (files.length === 0) return { kind, target: 'local', skipped: 'nothing stored' };
        const file = files[Math.floor(which * files.length)]!;
        const digest = 'sha256:' + path.basename(path.dirname(path.dirname(file))) + path.basename(path.dirname(file)) + path.basename(file);
        const { size } = await stat(file);
        if (size === 0) return { kind, target: file, skipped: 'empty' };
        const at = Math.floor(where * size);
        if (kind === 'truncate') await truncate(file, at);
        else await flipByte(file, at);
        return { kind, target: 'local content file', digest };
      }
      case 'disk-full': {
        await fillDisk(this.ctx.ballastFile);
        await sleep(this.window(rng));
        await rm(this.ctx.ballastFile, { force: true });
        return { kind, target: 'local tmpfs' };
      }
      case 'cache-rm': {
        const digest = this.rmTarget(rng, 'local');
        const r = await local.cache('rm', digest);
        return { kind, target: 'local', digest, ...(r.code === 0 ? {} : { skipped: r.stderr.trim().split('\n')[0] || `exit ${r.code}` }) };
      }
    }
    throw new Error(`unknown fault ${kind}`);
  }

  private async fleetFault(rng: Rng, event: FaultEvent): Promise<Omit<FaultEvent, 'lane' | 'start' | 'end'>> {
    const { replicas } = this.ctx.fleet;
    const { s3, s3Client } = this.ctx;
    const kind = rng.weighted({ 'kill-replica': 2, 'sigterm-restart': 1, 'gateway-stop': 1, 'gateway-pause': 2, 'flip-byte': 2, truncate: 1, 'cache-rm': 3 });
    const replica = replicas[rng.int(replicas.length)]!;
    event.kind = kind;
    switch (kind) {
      case 'kill-replica':
        await replica.killAndRestart();
        return { kind, target: replica.name, at: replica.lastSignalAt };
      case 'sigterm-restart':
        await replica.stopAndRestart();
        return { kind, target: replica.name, at: replica.lastSignalAt };
      case 'gateway-stop':
        await s3.stopGateway();
        await sleep(this.window(rng));
        await s3.startGateway();
        return { kind, target: 'radosgw' };
      case 'gateway-pause': {
        // Sometimes past the bucket's two 10 s attempts: HITs then answer 503 (about 20 s).
        const ms = rng.chance(0.3) ? rng.between(21_000, 26_000) : this.window(rng);
        await s3.pauseGateway();
        await sleep(ms);
        s3.resumeGateway();
        return { kind, target: 'radosgw' };
      }
      case 'flip-byte':
      case 'truncate': {
        const [which, where] = [rng.next(), rng.next()]; // drawn first, as above
        const keys = [...(await listKeys(s3Client, BUCKET, PREFIX, 'content/')).entries()].filter(([, size]) => size > 0).sort();
        if (keys.length === 0) return { kind, target: 'bucket', skipped: 'nothing stored' };
        const [key, size] = keys[Math.floor(which * keys.length)]!;
        const out = await s3Client.send(new GetObjectCommand({ Bucket: BUCKET, Key: PREFIX + key }));
        const body = Buffer.from(await out.Body!.transformToByteArray());
        const at = Math.floor(where * size);
        const changed = kind === 'truncate' ? body.subarray(0, at) : Buffer.from(body);
        if (kind === 'flip-byte') changed[at] = changed[at]! ^ 0xff;
        await s3Client.send(new PutObjectCommand({ Bucket: BUCKET, Key: PREFIX + key, Body: changed, ContentLength: changed.length }));
        return { kind, target: 'bucket object', digest: 'sha256:' + key.split('/').at(-1) };
      }
      case 'cache-rm': {
        const digest = this.rmTarget(rng, 'fleet');
        const r = await replica.cache('rm', digest);
        return { kind, target: replica.name, digest, ...(r.code === 0 ? {} : { skipped: r.stderr.trim().split('\n')[0] || `exit ${r.code}` }) };
      }
    }
    throw new Error(`unknown fault ${kind}`);
  }
}

/** Every content file of a local store (cacache's content-v2/sha256/xx/yy/rest), sorted. */
async function contentFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  await walk(dir);
  return out.sort();
}

/** Writes the file until the filesystem refuses (ENOSPC): the disk is full, whatever regcache wrote meanwhile. */
async function fillDisk(file: string): Promise<void> {
  const handle = await open(file, 'w');
  const chunk = Buffer.alloc(1024 * 1024);
  try {
    for (;;) await handle.write(chunk);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  } finally {
    await handle.close();
  }
}

async function flipByte(file: string, at: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, at);
    one[0] = one[0]! ^ 0xff;
    await handle.write(one, 0, 1, at);
  } finally {
    await handle.close();
  }
}

/** One of the local tree's live workers, drawn from the seed (in pid order, so a replay draws alike); null if none. */
async function pickWorker(local: Node, rng: Rng): Promise<number | null> {
  const { workers } = await local.pids();
  return workers.length === 0 ? null : workers.sort((a, b) => a - b)[rng.int(workers.length)]!;
}
