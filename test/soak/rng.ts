// The soak's one source of chance: a seeded generator (mulberry32), so a run's choices (which image, which
// client, which fault and when) replay from its seed (SOAK_SEED). Each concern draws from its own stream,
// derived from the seed and a name, so adding a draw to the load does not shift the fault schedule.
import crypto from 'node:crypto';

export class Rng {
  private state: number;

  constructor(seed: number, stream = '') {
    this.state = (seed ^ crypto.createHash('sha256').update(stream).digest().readUInt32LE(0)) >>> 0;
  }

  /** [0, 1) */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** An integer in [lo, hi]. */
  between(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from nothing');
    return items[this.int(items.length)]!;
  }

  /** One of the keys, with probability proportional to its weight. */
  weighted<K extends string>(weights: Record<K, number>): K {
    const entries = Object.entries(weights) as [K, number][];
    let left = this.next() * entries.reduce((sum, [, w]) => sum + w, 0);
    for (const [key, w] of entries) if ((left -= w) < 0) return key;
    return entries.at(-1)![0];
  }
}

/** A fresh seed when none is given: printed by the soak so the run can be replayed. */
export function newSeed(): number {
  return crypto.randomBytes(4).readUInt32LE(0);
}
