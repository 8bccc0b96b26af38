// A set of keys that each expire a fixed time after they were added, holding at most a fixed number:
// beyond it the oldest key goes first. The caches of recent credential verdicts are built on it, so that
// no amount of distinct headers grows memory without bound.
export class ExpiringSet {
  private readonly expiries = new Map<string, number>(); // key -> expiry; insertion order: oldest first

  constructor(
    private readonly ttlMs: number,
    private readonly maxKeys: number,
  ) {}

  get size(): number {
    return this.expiries.size;
  }

  has(key: string, now: number): boolean {
    const expiry = this.expiries.get(key);
    if (expiry === undefined) return false;
    if (expiry > now) return true;
    this.expiries.delete(key);
    return false;
  }

  add(key: string, now: number): void {
    this.expiries.delete(key); // re-added keys move to the young end
    while (this.expiries.size >= this.maxKeys) this.expiries.delete(this.expiries.keys().next().value!);
    this.expiries.set(key, now + this.ttlMs);
  }
}
