// Slows down password guessing per client address. Checks from one address run one at a time (a client
// retrying one credential on many connections shares a single check upstream of this, so only distinct
// guesses queue here). An address gets a few failed checks for free; after that each further check waits
// before it runs (250 ms, doubling, at most 10 s), so one address gets at most one guess per delay. A
// success from the address (a user behind it who knows a password) starts it over; failures older than
// the window are forgotten. Attempts beyond those already queued are held for the delay (at least the
// first one) and refused without a check: that costs the server a timer, the guesser its time, and
// nobody a bcrypt run.
import type { Clock } from './clock.js';

const FREE_FAILURES = 5;
const WINDOW_MS = 15 * 60_000;
const FIRST_DELAY_MS = 250;
const MAX_DELAY_MS = 10_000;
const MAX_QUEUED = 16; // per address, the one being checked included
const MAX_ADDRESSES = 10_000; // beyond: the address tracked longest without a failure is dropped

/** How an attempt ended: 'good' and 'bad' were checked; 'unchecked' was refused without a check. */
export type Verdict = 'good' | 'bad' | 'unchecked';

interface AddressState {
  failures: number; // within the window
  lastFailure: number;
  queued: number; // attempts waiting for their turn or being checked
  turn: Promise<void>; // settles when the last queued attempt is done
}

export class FailureThrottle {
  private readonly addresses = new Map<string, AddressState>(); // order: least recent failure first

  constructor(
    private readonly clock: Clock,
    private readonly onThrottled: (address: string, failures: number) => void = () => undefined,
  ) {}

  /** Addresses tracked now (for tests of the bound). */
  get tracked(): number {
    return this.addresses.size;
  }

  /** Runs `check` for an attempt from `address` in its turn, after the address's delay. */
  async attempt(address: string, check: () => Promise<Verdict>): Promise<Verdict> {
    const state = this.stateOf(address);
    if (state.queued >= MAX_QUEUED) {
      // This many attempts at once is guessing even before the failures say so: held at least the first delay.
      await this.clock.sleep(Math.max(FIRST_DELAY_MS, delayAfter(state.failures)));
      return 'unchecked';
    }
    state.queued++;
    const previous = state.turn;
    let done!: () => void;
    state.turn = new Promise<void>((resolve) => (done = resolve));
    try {
      await previous;
      const wait = delayAfter(state.failures);
      if (wait > 0) await this.clock.sleep(wait);
      const verdict = await check();
      this.settle(address, state, verdict);
      return verdict;
    } finally {
      state.queued--;
      done();
      if (state.queued === 0 && state.failures === 0 && this.addresses.get(address) === state) this.addresses.delete(address);
    }
  }

  private stateOf(address: string): AddressState {
    const state = this.addresses.get(address);
    if (state) {
      if (state.failures > 0 && this.clock.now() - state.lastFailure > WINDOW_MS) state.failures = 0;
      return state;
    }
    while (this.addresses.size >= MAX_ADDRESSES) this.addresses.delete(this.addresses.keys().next().value!);
    const fresh: AddressState = { failures: 0, lastFailure: 0, queued: 0, turn: Promise.resolve() };
    this.addresses.set(address, fresh);
    return fresh;
  }

  private settle(address: string, state: AddressState, verdict: Verdict): void {
    if (verdict === 'good') state.failures = 0; // attempts still queued run without a delay
    if (verdict !== 'bad') return;
    state.failures++;
    state.lastFailure = this.clock.now();
    if (this.addresses.get(address) === state) {
      this.addresses.delete(address); // to the young end
      this.addresses.set(address, state);
    }
    if (state.failures === FREE_FAILURES) this.onThrottled(address, state.failures);
  }
}

/** How long a check waits after this many recent failures from its address. */
export function delayAfter(failures: number): number {
  return failures < FREE_FAILURES ? 0 : Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** (failures - FREE_FAILURES));
}
