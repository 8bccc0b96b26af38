// The users one of PROXY_AUTH, MIRROR_AUTH or ADMIN_AUTH lets in, and what was recently concluded about
// headers presented for them. Verdicts are kept as the sha256 of the header, never the header:
// - verified: 2 minutes, at most 1,000. An active client presents the same header on every connection
//   and must not pay a bcrypt each time; kept short because an entry is a fast (sha256) verifier of a
//   password that the file protects with a slow hash, and it is one bcrypt per active credential per
//   2 minutes (on the worker) to renew it.
// - refused: 10 minutes, at most 10,000. The 2nd..Nth identical wrong attempt costs no bcrypt, and a
//   client stuck with an outdated password adds at most two failures to its address per 15-minute
//   throttle window, so it never gets its address slowed down (only distinct guesses do). A refusal
//   cannot turn into a success while the process runs (the users are read once, at startup).
import crypto from 'node:crypto';
import { ExpiringSet } from './expiring-set.js';
import { loadUsers, sha256, type Secret, type Users } from './htpasswd.js';

const VERIFIED_TTL_MS = 2 * 60_000;
const VERIFIED_MAX = 1_000;
const REFUSED_TTL_MS = 10 * 60_000;
const REFUSED_MAX = 10_000;

/** Whose credentials a request carried, or why none were accepted (for the refusal's log line). */
export type AuthResult = { users: UserSet } | { refused: 'none' | 'wrong' | 'unchecked' };

/** Where a set's checks go: the process's one PasswordGuard (password-guard.ts). */
export interface CredentialChecks {
  authenticate(header: string | undefined, address: string, sets: UserSet[]): Promise<AuthResult>;
}

export type BcryptCompare = (password: string, hash: string) => Promise<boolean>;

/** What a comparison found: the right password, a wrong one (or an unknown user), or no Basic credentials. */
export type Comparison = 'valid' | 'invalid' | 'malformed';

export class UserSet {
  readonly verified = new ExpiringSet(VERIFIED_TTL_MS, VERIFIED_MAX);
  readonly refused = new ExpiringSet(REFUSED_TTL_MS, REFUSED_MAX);

  private constructor(
    readonly variable: string, // PROXY_AUTH, MIRROR_AUTH or ADMIN_AUTH: names the set in logs and errors
    private readonly users: Users,
    private readonly guard: CredentialChecks,
  ) {}

  /** From the variable's value (an htpasswd path or inline users); checks go through `guard`. */
  static load(value: string, variable: string, guard: CredentialChecks): UserSet {
    return new UserSet(variable, loadUsers(value, variable), guard);
  }

  get description(): string {
    return this.users.description;
  }

  /** Whether an Authorization (Proxy-Authorization) header names one of these users with the right password. */
  check(header: string | undefined, address: string): Promise<AuthResult> {
    return this.guard.authenticate(header, address, [this]);
  }

  /**
   * Compares the password of a Basic header with the user's entry, uncached. An unknown user is compared
   * with a stand-in of the same kind and cost, so that the time taken does not tell users apart.
   * Throws what `bcrypt` throws (BcryptBusyError when the worker's queue is full).
   */
  async compare(header: string, bcrypt: BcryptCompare): Promise<Comparison> {
    const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    const decoded = m ? Buffer.from(m[1]!, 'base64').toString('utf8') : '';
    const colon = decoded.indexOf(':');
    if (colon < 0) return 'malformed';
    const known = this.users.byName.get(decoded.slice(0, colon));
    const password = decoded.slice(colon + 1);
    const secret = known ?? this.users.stranger;
    const match = await matches(secret, password, bcrypt);
    if (this.users.padding && secret.kind !== 'bcrypt') await matches(this.users.padding, password, bcrypt);
    return known !== undefined && match ? 'valid' : 'invalid';
  }

  /** The key both caches use for a header. */
  static keyOf(header: string): string {
    return sha256(header).toString('hex');
  }
}

async function matches(secret: Secret, password: string, bcrypt: BcryptCompare): Promise<boolean> {
  switch (secret.kind) {
    case 'bcrypt':
      return bcrypt(password, secret.hash);
    case 'sha1':
      return safeEqual(sha1(password), secret.digest);
    case 'plain':
      return safeEqual(sha256(password), secret.sha256);
  }
}

function sha1(text: string): Buffer {
  return crypto.createHash('sha1').update(text).digest();
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && crypto.timingSafeEqual(a, b);
}
