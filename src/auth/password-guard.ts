// Every credential check of the process goes through one PasswordGuard, whichever door (proxy, mirror,
// admin) asks: a header verified recently passes at once, one refused recently is refused at once,
// concurrent checks of one header share a single comparison, and what is left is throttled per client
// address (FailureThrottle) and compared off the event loop (BcryptWorker). Cheap for the server, costly
// for guessers: see docs/decisions.md.
import type { Logger } from '../telemetry/log.js';
import type { Metrics } from '../telemetry/metrics.js';
import { BcryptBusyError, BcryptWorker } from './bcrypt-worker.js';
import { systemClock, type Clock } from './clock.js';
import { FailureThrottle, type Verdict } from './failure-throttle.js';
import { UserSet, type AuthResult, type BcryptCompare, type CredentialChecks } from './user-set.js';
import { errorMessage } from '../telemetry/error-message.js';

export type { AuthResult };

const MAX_CHECKS_IN_FLIGHT = 10_000; // distinct headers being checked at once; beyond, refused unchecked
// An attempt refused unchecked because checks are overloaded is answered after this long: answered at
// once, a flood would spin on new connections and take the CPU the checks were refused to save.
const OVERLOAD_HOLD_MS = 1_000;

export interface PasswordGuardOptions {
  log?: Logger;
  clock?: Clock;
  bcrypt?: BcryptCompare; // default: the worker thread
  metrics?: Pick<Metrics, 'authCheck'>; // regcache_auth_checks_total
}

export class PasswordGuard implements CredentialChecks {
  private readonly worker = new BcryptWorker();
  private readonly bcrypt: BcryptCompare;
  private readonly clock: Clock;
  private readonly log: Logger | undefined;
  private readonly metrics: Pick<Metrics, 'authCheck'> | undefined;
  private readonly throttle: FailureThrottle;
  private readonly inFlight = new Map<string, Promise<AuthResult>>(); // header key + sets -> the check

  constructor(options: PasswordGuardOptions = {}) {
    this.log = options.log;
    this.metrics = options.metrics;
    this.clock = options.clock ?? systemClock;
    this.bcrypt = options.bcrypt ?? ((password, hash) => this.worker.compare(password, hash));
    this.throttle = new FailureThrottle(this.clock, (address, failures) =>
      this.log?.warn({ address, failures }, 'repeated wrong credentials: password checks from this address are slowed down'),
    );
  }

  /**
   * Which of `sets` (tried in order) accepts the header presented by a client at `address`. Refusals
   * from the caches and of absent headers are immediate and never count against the address.
   */
  async authenticate(header: string | undefined, address: string, sets: UserSet[]): Promise<AuthResult> {
    if (!header) return { refused: 'none' };
    const key = UserSet.keyOf(header);
    const now = this.clock.now();
    const verified = sets.find((set) => set.verified.has(key, now));
    if (verified) {
      this.metrics?.authCheck('cached_valid');
      return { users: verified };
    }
    const open = sets.filter((set) => !set.refused.has(key, now));
    if (open.length === 0) {
      this.metrics?.authCheck('cached_invalid');
      return { refused: 'wrong' };
    }
    const flightKey = `${key} ${open.map((set) => set.variable).join(' ')}`;
    const joined = this.inFlight.get(flightKey);
    if (joined) return joined;
    if (this.inFlight.size >= MAX_CHECKS_IN_FLIGHT) {
      this.metrics?.authCheck('unchecked');
      await this.clock.sleep(OVERLOAD_HOLD_MS);
      return { refused: 'unchecked' };
    }
    const check = this.checkThrottled(header, key, address, open).finally(() => this.inFlight.delete(flightKey));
    this.inFlight.set(flightKey, check);
    return check;
  }

  /** Stops the bcrypt worker (at shutdown). */
  close(): Promise<void> {
    return this.worker.close();
  }

  private async checkThrottled(header: string, key: string, address: string, sets: UserSet[]): Promise<AuthResult> {
    let accepted: UserSet | undefined;
    const verdict = await this.throttle.attempt(address, async (): Promise<Verdict> => {
      for (const set of sets) {
        const result = await this.compare(set, header);
        if (result === 'unchecked') return 'unchecked';
        const now = this.clock.now();
        if (result === 'valid') {
          set.verified.add(key, now);
          accepted = set;
          return 'good';
        }
        set.refused.add(key, now);
      }
      return 'bad';
    });
    if (verdict === 'unchecked') this.metrics?.authCheck('unchecked');
    return accepted ? { users: accepted } : { refused: verdict === 'unchecked' ? 'unchecked' : 'wrong' };
  }

  private async compare(set: UserSet, header: string): Promise<'valid' | 'invalid' | 'malformed' | 'unchecked'> {
    try {
      const result = await set.compare(header, this.bcrypt);
      this.metrics?.authCheck(result);
      return result;
    } catch (err) {
      if (err instanceof BcryptBusyError) await this.clock.sleep(OVERLOAD_HOLD_MS);
      else this.log?.error({ error: errorMessage(err), users: set.variable }, 'password check failed');
      return 'unchecked';
    }
  }
}
