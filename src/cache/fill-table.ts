// The fills running now, per origin and content: who leads a fill (its fetch went upstream) and what the
// others join. FillCoordinator asks a FillTable; LocalFillTable is one process's map, SharedFillTable
// (shared-fill-table.ts) a worker's, which asks the primary so that one fill per content runs across
// every worker.
import type { ContentKind } from './content-store.js';
import type { Fill } from './fill.js';

/** A fill's identity: the content, and the origin ("host[:port]") it is fetched from. */
export interface FillKey {
  origin: string;
  kind: ContentKind;
  digest: string;
}

/** The lead of a fill: the leader says what its fetch gave, once. */
export interface FillLead {
  /** The fill runs: joiners may have it. */
  started(fill: Fill): void;
  /** Nothing to fill (not a 200, a bypass, a failed fetch): joiners are told so and go on their own. */
  ended(): void;
}

export type FillClaim =
  | { join: Promise<Fill | null> } // a fill runs: its Fill once it has started, null if it gave nothing to fill
  | { lead: FillLead } // this request fetches (registered, or alone when a fill runs that it may not join)
  | { stored: true }; // no fill runs, and the content has been stored meanwhile: look in the store (only to a claim that would join)

export interface FillTable {
  /** Fills registered now (this process's view). */
  readonly size: number;
  /** This origin's running fill once it has started; null when none runs or it gave nothing to fill. */
  running(key: FillKey): Promise<Fill | null>;
  /**
   * `join`: join a running fill if there is one, else lead. Not `join`: lead, registered only when no
   * fill runs (a request that may not join fetches alone).
   */
  claim(key: FillKey, join: boolean): Promise<FillClaim>;
}

/** A request's entry in a table's map of this process's fills: resolved with the fill it may read, or null. */
export interface PendingFill {
  promise: Promise<Fill | null>;
  done(fill: Fill | null): void;
}

/**
 * Puts a pending fill under `id` in `map` (this process's other requests for it wait on it while another
 * process or the bucket is asked); it leaves the map when done without a fill, or once its fill settles.
 */
export function registerPending(map: Map<string, Promise<Fill | null>>, id: string): PendingFill {
  let resolve: (fill: Fill | null) => void = () => undefined;
  const promise = new Promise<Fill | null>((r) => (resolve = r));
  map.set(id, promise);
  const forget = () => {
    if (map.get(id) === promise) map.delete(id);
  };
  return {
    promise,
    done: (fill) => {
      if (!fill || fill.settled) forget();
      else fill.once('settled', forget);
      resolve(fill);
    },
  };
}

/** Fills are per origin: bytes from one registry are never handed to a request that named another. */
export function fillKeyId(key: FillKey): string {
  return `${key.origin}|${key.kind}/${key.digest}`;
}

/** One process's fills: a map of promises, resolved when the leader's fetch has answered. */
export class LocalFillTable implements FillTable {
  private readonly inflight = new Map<string, Promise<Fill | null>>();

  get size(): number {
    return this.inflight.size;
  }

  async running(key: FillKey): Promise<Fill | null> {
    return (await this.inflight.get(fillKeyId(key))) ?? null;
  }

  claim(key: FillKey, join: boolean): Promise<FillClaim> {
    const id = fillKeyId(key);
    const pending = this.inflight.get(id);
    if (pending && join) return Promise.resolve({ join: pending });
    return Promise.resolve({ lead: this.lead(id, !pending) });
  }

  /** A lead; registered: joiners wait for it, and it stays in the map until the fill settles. */
  lead(id: string, registered: boolean): FillLead {
    let settle: (fill: Fill | null) => void = () => undefined;
    const promise = new Promise<Fill | null>((resolve) => (settle = resolve));
    if (registered) this.inflight.set(id, promise);
    const forget = () => {
      if (this.inflight.get(id) === promise) this.inflight.delete(id);
    };
    return {
      started: (fill) => {
        fill.once('settled', forget);
        settle(fill);
      },
      ended: () => {
        forget();
        settle(null);
      },
    };
  }
}
