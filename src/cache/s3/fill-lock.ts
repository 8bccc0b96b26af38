// The lock that makes one replica of a fleet the only one fetching a content from an origin: an object
// per generation (bucket-layout.ts: fills/<kind>/sha256/<hex>/<origin>/<gen>) created with
// If-None-Match: *, holding its owner and the lease's expiry, rewritten by its owner while the fill runs.
// A lock whose lease lapsed (its replica died, or lost the bucket) is taken over by creating the next
// generation, again with If-None-Match: *: of replicas racing for it exactly one creation succeeds. No
// generation is ever deleted while the content is stored (a release writes its generation as lapsed), so
// generations grow and a takeover never deletes: the window a delete-then-put takeover has, in which two
// creators both win, does not exist. The live holder is the highest generation. The objects go with the
// content (S3Store.remove, the sweeper), and only when no generation is live (`lapsedLocks`): deleting a
// live one let a second replica create generation 0 and lead the same fill. That delete still races a
// takeover that listed before it, so a creator checks for a live rival after creating (`rival`). Expiry
// is the owner's clock read by the others: replicas' clocks must agree to well within a lease (NTP does).
import crypto from 'node:crypto';
import type { Bucket } from './bucket.js';
import type { BucketLayout } from './bucket-layout.js';
import type { FillKey } from '../fill-table.js';

export interface LockBody {
  owner: string; // the replica: host/pid/random, for log lines
  expires: number; // ms since the epoch, the owner's clock
  nonce: string; // two writes of a lock never have the same body
}

export interface FillLockOptions {
  owner: string;
  leaseMs: number;
}

// A lease is renewed three times per period: two renewals may fail (a slow bucket) before it lapses.
const RENEWALS_PER_LEASE = 3;
// Creating the next generation can lose to another replica's takeover: look again, a few times.
const ATTEMPTS = 4;

/** A lock this replica holds: renewed until released. */
export class Lease {
  private timer: NodeJS.Timeout | null;
  private renewing: Promise<unknown> = Promise.resolve();
  private lost = false;

  constructor(
    private readonly locks: FillLocks,
    readonly key: string,
    readonly generation: number,
  ) {
    this.timer = setInterval(() => this.renew(), Math.max(10, Math.floor(locks.leaseMs / RENEWALS_PER_LEASE))).unref();
  }

  /** Stops renewing: the lease lapses and another replica takes over (a fill this replica cannot finish). */
  abandon(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Writes the lock as lapsed: the fill is over (stored or not), the next claim creates the next generation. */
  async release(): Promise<void> {
    if (!this.timer) return;
    this.abandon();
    await this.renewing; // or a renewal landing after the release would make the lock live again
    if (!this.lost) await this.locks.bucket.put(this.key, this.locks.body(0));
  }

  private renew(): void {
    // Only this replica writes this generation's key after creating it, and a takeover writes the next
    // generation, which outranks this one. But a key that is gone was deleted with its content: writing it
    // again would revive a lock another replica may have replaced by a new generation 0, so the lease is
    // lost instead (the fill runs on; its commit is the same bytes). A failed renewal is retried at the
    // next tick; enough of them and the lease lapses.
    this.renewing = (async () => {
      if (!(await this.locks.bucket.head(this.key))) {
        this.lost = true;
        this.abandon();
        return;
      }
      await this.locks.bucket.put(this.key, this.locks.body());
      // a failed renewal is retried at the next tick; enough of them and the lease lapses.
    })().catch(() => undefined);
  }
}

export class FillLocks {
  readonly leaseMs: number;
  private readonly owner: string;

  constructor(
    readonly bucket: Bucket,
    readonly layout: BucketLayout,
    options: FillLockOptions,
  ) {
    this.owner = options.owner;
    this.leaseMs = options.leaseMs;
  }

  /** This replica's lease on the fill, or the live lock another replica holds. */
  acquire(key: FillKey): Promise<{ lease: Lease } | { heldBy: LockBody }> {
    return this.acquireUnder(this.layout.fillLocks(key.origin, key.kind, key.digest));
  }

  /** The same for any lock whose generations live under `prefix` (the fleet's eviction lease: bucket-eviction.ts). */
  async acquireUnder(prefix: string): Promise<{ lease: Lease } | { heldBy: LockBody }> {
    for (let attempt = 1; ; attempt++) {
      const top = await this.top(prefix);
      if (top?.body && live(top.body)) return { heldBy: top.body };
      if (top && !top.body && attempt < ATTEMPTS) continue; // gone between the LIST and the GET (the content removed): look again
      // None, or lapsed: the next generation.
      const generation = top ? top.generation + 1 : 0;
      const lockKey = this.layout.generation(prefix, generation);
      if (await this.bucket.put(lockKey, this.body(), { ifNoneMatch: true })) {
        const rival = await this.rival(prefix, generation);
        if (rival === null) return { lease: new Lease(this, lockKey, generation) };
        await this.bucket.put(lockKey, this.body(0)); // lapsed: the rival leads
        return { heldBy: rival };
      }
      if (attempt >= ATTEMPTS) {
        // Lost every race: whoever won holds it now (or is releasing it), as far as this caller knows.
        const winner = await this.top(prefix);
        return { heldBy: winner?.body ?? { owner: 'unknown', expires: Date.now() + this.leaseMs, nonce: '' } };
      }
    }
  }

  /** The live lock on the fill; null when there is none (released, or its lease lapsed). */
  holder(key: FillKey): Promise<LockBody | null> {
    return this.holderUnder(this.layout.fillLocks(key.origin, key.kind, key.digest));
  }

  async holderUnder(prefix: string): Promise<LockBody | null> {
    const top = await this.top(prefix);
    if (top === null) return null;
    if (top.body && live(top.body)) return top.body;
    // A claimant that yielded to a live rival below it wrote the top lapsed (`rival`): look below.
    return this.rival(prefix, top.generation);
  }

  /** The highest generation's number under `prefix` (null: none). */
  async topGeneration(prefix: string): Promise<number | null> {
    const generations = (await this.bucket.list(prefix)).map((o) => this.layout.parseGeneration(o.key)).filter((g): g is number => g !== null);
    return generations.length === 0 ? null : Math.max(...generations);
  }

  /** A lock's body as this replica writes it now: live for a lease, or for `leaseMs` (0: lapsed). */
  body(leaseMs = this.leaseMs): Buffer {
    const body: LockBody = { owner: this.owner, expires: Date.now() + leaseMs, nonce: crypto.randomBytes(8).toString('hex') };
    return Buffer.from(JSON.stringify(body));
  }

  /**
   * A live generation other than `mine` (the one this replica just created, or a lapsed top). Content
   * removed (its locks deleted) while another replica was taking over lets two creations win: one restarts at generation 0 after the
   * delete, the other creates the next number after the list it read before. Each creator lists again
   * after creating; of two, at least one sees the other's key (its list follows both creations) and yields.
   */
  private async rival(prefix: string, mine: number): Promise<LockBody | null> {
    const others = (await this.bucket.list(prefix)).filter((o) => this.layout.parseGeneration(o.key) !== mine);
    const bodies = await Promise.all(others.map((o) => readLock(this.bucket, o.key)));
    return bodies.find((b): b is LockBody => b !== null && live(b)) ?? null;
  }

  /** The highest generation and what it says (null body: it vanished or cannot be read). */
  private async top(prefix: string): Promise<{ generation: number; body: LockBody | null } | null> {
    const generations = (await this.bucket.list(prefix))
      .map((o) => ({ key: o.key, generation: this.layout.parseGeneration(o.key) }))
      .filter((g): g is { key: string; generation: number } => g.generation !== null);
    const top = generations.sort((a, b) => a.generation - b.generation).at(-1);
    if (!top) return null;
    return { generation: top.generation, body: await readLock(this.bucket, top.key) };
  }
}

/**
 * The keys of every generation under `prefix` when none is live (they may go, with the content they
 * locked); null while one is: a fill is running and its leader still renews that key.
 */
export async function lapsedLocks(bucket: Bucket, prefix: string): Promise<string[] | null> {
  const keys = (await bucket.list(prefix)).map((o) => o.key);
  for (const key of keys) {
    const body = await readLock(bucket, key);
    if (body && live(body)) return null;
  }
  return keys;
}

function live(body: LockBody): boolean {
  return body.expires > Date.now();
}

/** A generation's body; null when it is gone or not a lock. */
async function readLock(bucket: Bucket, key: string): Promise<LockBody | null> {
  const raw = await bucket.get(key);
  return raw && parseLock(raw);
}

function parseLock(raw: Buffer): LockBody | null {
  try {
    const body = JSON.parse(raw.toString('utf8')) as LockBody;
    return typeof body.expires === 'number' && typeof body.owner === 'string' ? body : null;
  } catch {
    // not a lock body (torn or foreign): treated as no lock.
    return null;
  }
}
