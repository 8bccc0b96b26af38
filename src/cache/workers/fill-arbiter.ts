// The primary's table of the fills running in its workers (WORKERS > 1): one fill per origin and content
// across the process tree. The first worker to claim a content leads (its fetch goes upstream); a worker
// that claims it meanwhile follows, told the spool file's name once the leader's fetch gave a body, and
// gets the leader's reports relayed (bytes written, verified, committed or failed). A leader that dies
// fails its fill: followers are cut before the last byte (FillError 'abandoned'), as for any failed fill.
import type { ProcessChannel } from '../../ipc/process-channel.js';
import type { ContentKind } from '../content-store.js';
import { fillKeyId } from '../fill-table.js';
import {
  FILL,
  type ClaimAnswer,
  type ClaimRequest,
  type FillProgress,
  type FillReading,
  type FillSettled,
  type FillStarted,
  type FollowInfo,
} from './store-protocol.js';
import type { FillKey } from '../fill-table.js';

interface Arbitrated {
  id: number;
  key: FillKey;
  leader: number; // worker id
  info: FollowInfo | null; // null while the leader's fetch has not answered
  followers: Set<number>;
  reading: Set<number>; // the followers whose clients read it now (the leader goes on for them)
  waiting: { worker: number; answer: (info: FollowInfo | null) => void }[];
}

export class FillArbiter {
  private nextId = 1;
  private readonly byKey = new Map<string, Arbitrated>();
  private readonly byId = new Map<number, Arbitrated>();
  private readonly workers = new Map<number, ProcessChannel>();

  /** `isStored`: whether the store holds the content now (a claim that comes after its commit need not fetch). */
  constructor(private readonly isStored: (kind: ContentKind, digest: string) => boolean) {}

  /** Fills running in the workers now. */
  get size(): number {
    return this.byId.size;
  }

  attach(worker: number, channel: ProcessChannel): void {
    this.workers.set(worker, channel);
    channel.handle<ClaimRequest>(FILL.claim, ({ key, join }) => this.claim(worker, key, join));
    channel.on<FillStarted>(FILL.started, (p) => this.started(worker, p));
    channel.on<{ fill: number }>(FILL.ended, ({ fill }) => this.led(worker, fill) && this.end(this.byId.get(fill)!));
    channel.on<FillProgress>(FILL.progress, (p) => this.progressed(worker, p));
    channel.on<FillReading>(FILL.reading, (p) => this.readingIn(worker, p));
    channel.on<FillSettled>(FILL.settled, (p) => this.led(worker, p.fill) && this.settle(this.byId.get(p.fill)!, p));
  }

  /** A worker exited: the fills it led fail, and it follows nothing any more. */
  workerGone(worker: number): void {
    this.workers.delete(worker);
    for (const fill of [...this.byId.values()]) {
      if (fill.leader === worker) {
        const written = fill.info?.written ?? 0;
        this.settle(fill, {
          fill: fill.id,
          written,
          error: { reason: 'abandoned', message: `the worker filling it (worker ${worker}) exited after ${written} bytes` },
        });
        continue;
      }
      fill.followers.delete(worker);
      this.readingIn(worker, { fill: fill.id, reading: false });
      fill.waiting = fill.waiting.filter((w) => w.worker !== worker);
    }
  }

  private claim(worker: number, key: FillKey, join: boolean): ClaimAnswer | Promise<ClaimAnswer> {
    const fill = this.byKey.get(fillKeyId(key));
    if (fill) {
      if (!join) return { kind: 'alone' };
      if (fill.leader === worker) return { kind: 'ended' }; // its own, already gone from its map: it settled
      const info = this.follow(fill, worker);
      return info instanceof Promise ? info.then((i) => (i ? { kind: 'follow', info: i } : { kind: 'ended' })) : { kind: 'follow', info };
    }
    if (join && this.isStored(key.kind, key.digest)) return { kind: 'stored' };
    const id = this.nextId++;
    const created: Arbitrated = { id, key, leader: worker, info: null, followers: new Set(), reading: new Set(), waiting: [] };
    this.byKey.set(fillKeyId(key), created);
    this.byId.set(id, created);
    return { kind: 'lead', fill: id };
  }

  /** The fill's state for a new follower, once its fetch has answered (null: it gave nothing to fill). */
  private follow(fill: Arbitrated, worker: number): FollowInfo | Promise<FollowInfo | null> {
    if (fill.info) {
      this.addFollower(fill, worker);
      return { ...fill.info };
    }
    return new Promise((answer) => fill.waiting.push({ worker, answer }));
  }

  private addFollower(fill: Arbitrated, worker: number): void {
    const watchedBefore = fill.followers.size > 0;
    fill.followers.add(worker);
    if (!watchedBefore) this.workers.get(fill.leader)?.notify(FILL.watch, { fill: fill.id });
    else this.readingIn(worker, { fill: fill.id, reading: true }); // FILL.watch says as much the first time
    fill.reading.add(worker);
  }

  /** A follower's clients started or stopped reading: the leader hears when no other worker reads it, or one does again. */
  private readingIn(worker: number, p: FillReading): void {
    const fill = this.byId.get(p.fill);
    if (!fill || (!fill.followers.has(worker) && p.reading)) return;
    const before = fill.reading.size > 0;
    if (p.reading) fill.reading.add(worker);
    else fill.reading.delete(worker);
    const now = fill.reading.size > 0;
    if (before !== now) this.workers.get(fill.leader)?.notify(FILL.readers, { fill: fill.id, reading: now } satisfies FillReading);
  }

  private led(worker: number, id: number): boolean {
    return this.byId.get(id)?.leader === worker;
  }

  private started(worker: number, p: FillStarted): void {
    const fill = this.byId.get(p.fill);
    if (!fill || fill.leader !== worker) return;
    fill.info = {
      fill: fill.id,
      spool: p.spool,
      kind: fill.key.kind,
      digest: fill.key.digest,
      mediaType: p.mediaType,
      expectedSize: p.expectedSize,
      written: 0,
      verified: false,
    };
    for (const { worker: follower, answer } of fill.waiting) {
      this.addFollower(fill, follower);
      answer({ ...fill.info });
    }
    fill.waiting = [];
  }

  private progressed(worker: number, p: FillProgress): void {
    const fill = this.byId.get(p.fill);
    if (!fill?.info || fill.leader !== worker) return;
    fill.info.written = p.written;
    fill.info.verified ||= p.verified;
    for (const follower of fill.followers) this.workers.get(follower)?.notify(FILL.progress, p);
  }

  /** The leader's fetch gave nothing to fill: waiting followers look in the store, then go on their own. */
  private end(fill: Arbitrated): void {
    this.forget(fill);
    for (const { answer } of fill.waiting) answer(null);
  }

  private settle(fill: Arbitrated, p: FillSettled): void {
    this.forget(fill);
    for (const follower of fill.followers) this.workers.get(follower)?.notify(FILL.settled, p);
    for (const { answer } of fill.waiting) answer(null);
  }

  private forget(fill: Arbitrated): void {
    this.byId.delete(fill.id);
    if (this.byKey.get(fillKeyId(fill.key)) === fill) this.byKey.delete(fillKeyId(fill.key));
  }
}
