// The time source of the password checks (cache expiry, failure windows, throttle delays): the real one
// in the server, a fake one in tests that must not wait seconds.
import { setTimeout as sleep } from 'node:timers/promises';

export interface Clock {
  now(): number; // ms since the epoch
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms) => sleep(ms),
};
