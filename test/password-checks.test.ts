// tier: unit
// The password checks behind every door, in-process: verdict caches and de-duplication (the 2nd..Nth
// identical attempt compares nothing), unknown users checked like known ones, per-address throttling
// on a fake clock, client addresses, bounded sets, and the listing rule; bcrypt is a counting stand-in on
// the calling thread. The real bcrypt worker thread: test/bcrypt-worker.test.ts.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { BcryptBusyError } from '../src/auth/bcrypt-worker.js';
import { ConfigError } from '../src/config/config.js';
import { clientAddress } from '../src/auth/client-address.js';
import type { Clock } from '../src/auth/clock.js';
import { ExpiringSet } from '../src/auth/expiring-set.js';
import { delayAfter, FailureThrottle } from '../src/auth/failure-throttle.js';
import { PasswordGuard, type AuthResult } from '../src/auth/password-guard.js';
import { UserSet } from '../src/auth/user-set.js';
import type { Logger } from '../src/telemetry/log.js';
import type { Entry } from '../src/cache/entry-index.js';
import { mayList } from '../src/cache/tag-listing.js';
import { TmpDirs } from './harness/tmp.js';
import { basic, sha } from './support/credentials.js';

/** Time that moves only when told, or when something sleeps (which then returns at once). */
class FakeClock implements Clock {
  t = 1_800_000_000_000;
  readonly slept: number[] = [];
  now(): number {
    return this.t;
  }
  async sleep(ms: number): Promise<void> {
    this.slept.push(ms);
    this.t += ms;
  }
}

/** bcryptjs on the calling thread, counted, with the hashes it was asked about. */
class CountingBcrypt {
  readonly hashes: string[] = [];
  running = 0;
  maxRunning = 0;
  readonly compare = async (password: string, hash: string): Promise<boolean> => {
    this.hashes.push(hash);
    this.running++;
    this.maxRunning = Math.max(this.maxRunning, this.running);
    await new Promise((resolve) => setImmediate(resolve)); // let other checks start if they can
    this.running--;
    return bcrypt.compareSync(password, hash);
  };
  get runs(): number {
    return this.hashes.length;
  }
}

const ok = (r: AuthResult): boolean => 'users' in r;
const refusal = (r: AuthResult): string => ('users' in r ? 'accepted' : r.refused);

describe('password checks', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  const htpasswd = async (lines: string): Promise<string> => {
    const file = path.join(await tmp.make('regcache-htpasswd'), 'htpasswd');
    await writeFile(file, lines);
    return file;
  };
  const setUp = async (lines: string, clock = new FakeClock()) => {
    const counting = new CountingBcrypt();
    const guard = new PasswordGuard({ clock, bcrypt: counting.compare });
    const users = UserSet.load(await htpasswd(lines), 'PROXY_AUTH', guard);
    return { clock, counting, guard, users };
  };

  it('compares an identical wrong header once, however often and however concurrently it comes', async () => {
    const { counting, users } = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    const wrong = basic('alice', 'wrong');
    const concurrent = await Promise.all(Array.from({ length: 20 }, () => users.check(wrong, '10.0.0.1')));
    assert.ok(concurrent.every((r) => refusal(r) === 'wrong'));
    for (let i = 0; i < 20; i++) assert.equal(refusal(await users.check(wrong, '10.0.0.1')), 'wrong');
    assert.equal(counting.runs, 1, 'one bcrypt for 40 identical attempts');
    assert.ok(ok(await users.check(basic('alice', 'right'), '10.0.0.1')));
    assert.ok(ok(await users.check(basic('alice', 'right'), '10.0.0.2')));
    assert.equal(counting.runs, 2, 'the good header is compared once too');
  });

  it('forgets a verified header after two minutes, a refused one after ten', async () => {
    const { clock, counting, users } = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    await users.check(basic('alice', 'right'), '10.0.0.1');
    await users.check(basic('alice', 'wrong'), '10.0.0.1');
    clock.t += 119_000;
    await users.check(basic('alice', 'right'), '10.0.0.1');
    assert.equal(counting.runs, 2);
    clock.t += 2_000;
    assert.ok(ok(await users.check(basic('alice', 'right'), '10.0.0.1')));
    assert.equal(counting.runs, 3, 'verified again after 2 minutes');
    await users.check(basic('alice', 'wrong'), '10.0.0.1');
    assert.equal(counting.runs, 3, 'still refused from the cache');
    clock.t += 10 * 60_000;
    await users.check(basic('alice', 'wrong'), '10.0.0.1');
    assert.equal(counting.runs, 4, 'compared again after 10 minutes');
  });

  it('checks an unknown user against a stand-in of the same bcrypt cost as the file', async () => {
    const { counting, users } = await setUp(`alice:${bcrypt.hashSync('right', 5)}\nbob:${bcrypt.hashSync('b0b', 5)}\ncarl:${bcrypt.hashSync('c', 4)}\n`);
    assert.equal(refusal(await users.check(basic('alice', 'wrong'), '10.0.0.1')), 'wrong');
    assert.equal(refusal(await users.check(basic('mallory', 'wrong'), '10.0.0.2')), 'wrong');
    assert.equal(counting.runs, 2, 'one bcrypt each');
    assert.match(counting.hashes[1]!, /^\$2[aby]\$05\$.{53}$/, 'the most common cost of the file, a full-length hash');
    assert.notEqual(counting.hashes[1], counting.hashes[0]);
  });

  it('reads an htpasswd file with CRLF line ends and comments, takes the most common bcrypt cost for the stand-in, and refuses inline users without a name or a password', async () => {
    const lines = `# regcache users\r\n\r\nalice:${bcrypt.hashSync('right', 4)}\r\n  # bob left\r\ncarl:${bcrypt.hashSync('c', 6)}\r\ndora:${bcrypt.hashSync('d', 6)}\r\n`;
    const { counting, users } = await setUp(lines);
    assert.ok(ok(await users.check(basic('alice', 'right'), '10.0.0.1')));
    assert.equal(refusal(await users.check(basic('nobody', 'x'), '10.0.0.2')), 'wrong');
    assert.match(counting.hashes[1]!, /^\$2[aby]\$06\$/, 'two of three entries have cost 6');
    for (const value of ['alice:', ':secret', 'alice:right bob:', 'alice:right,:x'])
      assert.throws(
        () => UserSet.load(value, 'PROXY_AUTH', new PasswordGuard()),
        (e: unknown) => e instanceof ConfigError,
        value,
      );
    const inline = UserSet.load('alice:right, bob:b0b', 'PROXY_AUTH', new PasswordGuard({ bcrypt: counting.compare }));
    assert.ok(ok(await inline.check(basic('bob', 'b0b'), '10.0.0.3')));
    assert.equal(refusal(await inline.check(basic('bob', 'right'), '10.0.0.3')), 'wrong');
  });

  it('gives every check of a mixed file one bcrypt, and a SHA-only file none', async () => {
    const mixed = await setUp(`alice:${bcrypt.hashSync('right', 4)}\nbob:${sha('b0b')}\n`);
    assert.ok(ok(await mixed.users.check(basic('bob', 'b0b'), '10.0.0.1')));
    assert.equal(refusal(await mixed.users.check(basic('bob', 'wrong'), '10.0.0.1')), 'wrong');
    assert.equal(refusal(await mixed.users.check(basic('nobody', 'x'), '10.0.0.1')), 'wrong');
    assert.equal(mixed.counting.runs, 3, 'a SHA user costs a bcrypt too, so that timing does not tell kinds apart');
    const shaOnly = await setUp(`bob:${sha('b0b')}\n`);
    assert.ok(ok(await shaOnly.users.check(basic('bob', 'b0b'), '10.0.0.1')));
    assert.equal(refusal(await shaOnly.users.check(basic('nobody', 'b0b'), '10.0.0.1')), 'wrong');
    assert.equal(shaOnly.counting.runs, 0);
  });

  it('slows an address down after five failures: 250 ms doubling to 10 s; a success starts it over', async () => {
    const { clock, users } = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    for (let i = 0; i < 5; i++) await users.check(basic('alice', `guess-${i}`), '10.0.0.9');
    assert.deepEqual(clock.slept, [], 'five free failures');
    for (let i = 5; i < 13; i++) await users.check(basic('alice', `guess-${i}`), '10.0.0.9');
    assert.deepEqual(clock.slept, [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    assert.deepEqual([4, 5, 10, 11, 50].map(delayAfter), [0, 250, 8000, 10_000, 10_000]);

    clock.slept.length = 0;
    await users.check(basic('alice', 'guess-x'), '10.0.0.10');
    assert.deepEqual(clock.slept, [], 'another address is not slowed down');
    assert.ok(ok(await users.check(basic('alice', 'right'), '10.0.0.10'))); // now cached as verified
    assert.ok(ok(await users.check(basic('alice', 'right'), '10.0.0.9')));
    assert.deepEqual(clock.slept, [], 'a verified header is never delayed');
    assert.equal(refusal(await users.check(basic('alice', 'guess-0'), '10.0.0.9')), 'wrong');
    assert.deepEqual(clock.slept, [], 'a header refused before is answered from the cache, without delay');

    await users.check(basic('alice', 'guess-y'), '10.0.0.9');
    assert.deepEqual(clock.slept, [10_000]);
    const fresh = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    for (let i = 0; i < 6; i++) await fresh.users.check(basic('alice', `g${i}`), '10.0.0.9');
    assert.deepEqual(fresh.clock.slept, [250]);
    assert.ok(ok(await fresh.users.check(basic('alice', 'right'), '10.0.0.9')));
    assert.deepEqual(fresh.clock.slept, [250, 500], 'a good password from a slowed-down address waits its turn too');
    for (let i = 0; i < 5; i++) await fresh.users.check(basic('alice', `after-${i}`), '10.0.0.9');
    assert.deepEqual(fresh.clock.slept, [250, 500], 'and then the address started over');
  });

  it('forgets failures after 15 minutes', async () => {
    const { clock, users } = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    for (let i = 0; i < 6; i++) await users.check(basic('alice', `guess-${i}`), '10.0.0.9');
    assert.deepEqual(clock.slept, [250]);
    clock.t += 15 * 60_000 + 1;
    await users.check(basic('alice', 'later'), '10.0.0.9');
    assert.deepEqual(clock.slept, [250]);
  });

  it('checks one address one header at a time, and holds and refuses unchecked what queues beyond 16', async () => {
    const { clock, counting, users } = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    const results = await Promise.all(Array.from({ length: 40 }, (_, i) => users.check(basic('alice', `guess-${i}`), '10.0.0.7')));
    assert.deepEqual(clock.slept.slice(0, 24), Array<number>(24).fill(250), 'the ones beyond the queue are held before they are refused');
    assert.equal(counting.maxRunning, 1, 'one comparison at a time for one address');
    assert.equal(counting.runs, 16);
    assert.equal(results.filter((r) => refusal(r) === 'unchecked').length, 24);
    assert.equal(results.filter((r) => refusal(r) === 'wrong').length, 16);
    const elsewhere = await Promise.all(Array.from({ length: 4 }, (_, i) => users.check(basic('alice', `other-${i}`), `10.0.1.${i}`)));
    assert.ok(elsewhere.every((r) => refusal(r) === 'wrong'));
    assert.equal(counting.maxRunning, 4, 'different addresses are checked side by side');
  });

  it('holds for a second, then refuses unchecked, what comes while the bcrypt worker is overloaded', async () => {
    const clock = new FakeClock();
    const guard = new PasswordGuard({ clock, bcrypt: () => Promise.reject(new BcryptBusyError()) });
    const users = UserSet.load(await htpasswd(`alice:${bcrypt.hashSync('right', 4)}\n`), 'PROXY_AUTH', guard);
    assert.equal(refusal(await users.check(basic('alice', 'right'), '10.0.0.1')), 'unchecked');
    assert.deepEqual(clock.slept, [1000]);
    for (let i = 0; i < 6; i++) await users.check(basic('alice', `x${i}`), '10.0.0.1');
    assert.deepEqual(clock.slept, Array<number>(7).fill(1000), 'not counted as failures of the address');
  });

  it('refuses without a comparison when no credentials or no Basic credentials come', async () => {
    const { counting, users } = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    assert.equal(refusal(await users.check(undefined, '10.0.0.1')), 'none');
    for (const bad of ['Bearer abc', 'Basic !!!', `Basic ${Buffer.from('no-colon').toString('base64')}`])
      assert.equal(refusal(await users.check(bad, '10.0.0.1')), 'wrong', bad);
    assert.equal(counting.runs, 0);
  });

  it('takes Basic credentials only as the whole header, spaces around them allowed; an empty user name is an unknown user', async () => {
    const { counting, users } = await setUp(`alice:${sha('right')}\n`);
    const creds = basic('alice', 'right').slice('Basic '.length);
    assert.ok(ok(await users.check(`Basic ${creds}  `, '10.0.0.1')), 'trailing spaces');
    for (const bad of [`XBasic ${creds}`, `Proxy Basic ${creds}`, `Basic ${creds}!`, `Basic ${creds} trailing`])
      assert.equal(refusal(await users.check(bad, '10.0.0.1')), 'wrong', bad);
    const bcryptFile = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    assert.equal(refusal(await bcryptFile.users.check(basic('', 'right'), '10.0.0.1')), 'wrong');
    assert.equal(bcryptFile.counting.runs, 1, 'compared with the stand-in, as any unknown user is');
    assert.equal(counting.runs, 0);
  });

  it('refuses an unknown user even when the stand-in comparison says yes', async () => {
    const guard = new PasswordGuard({ clock: new FakeClock(), bcrypt: async () => true });
    const users = UserSet.load(await htpasswd(`alice:${bcrypt.hashSync('right', 4)}\n`), 'PROXY_AUTH', guard);
    assert.equal(refusal(await users.check(basic('mallory', 'anything'), '10.0.0.1')), 'wrong');
    assert.ok(ok(await users.check(basic('alice', 'anything'), '10.0.0.1')), 'the comparison decides for a known user');
  });

  it('never lets a check for one user set answer for another: a header good for PROXY_AUTH is refused by ADMIN_AUTH while both run', async () => {
    const { guard, users: proxyUsers } = await setUp(`alice:${bcrypt.hashSync('right', 4)}\n`);
    const adminUsers = UserSet.load(await htpasswd(`root:${bcrypt.hashSync('other', 4)}\n`), 'ADMIN_AUTH', guard);
    const header = basic('alice', 'right');
    const [proxy, admin] = await Promise.all([proxyUsers.check(header, '10.0.0.1'), adminUsers.check(header, '10.0.0.1')]);
    assert.ok(ok(proxy));
    assert.equal(refusal(admin), 'wrong');
  });

  it('logs the start of a slow-down once and a comparison that failed, and counts every check by result', async () => {
    const clock = new FakeClock();
    const logged: { level: string; fields: Record<string, unknown>; msg: string }[] = [];
    const log = Object.fromEntries(
      ['warn', 'error'].map((level) => [level, (fields: Record<string, unknown>, msg: string) => logged.push({ level, fields, msg })]),
    ) as unknown as Logger;
    const counted: string[] = [];
    let failure: Error | null = null;
    const counting = new CountingBcrypt();
    const guard = new PasswordGuard({
      clock,
      log,
      metrics: { authCheck: (result) => counted.push(result) },
      bcrypt: (password, hash) => (failure ? Promise.reject(failure) : counting.compare(password, hash)),
    });
    const users = UserSet.load(await htpasswd(`alice:${bcrypt.hashSync('right', 4)}\n`), 'PROXY_AUTH', guard);
    for (let i = 0; i < 7; i++) await users.check(basic('alice', `guess-${i}`), '10.0.0.5');
    assert.deepEqual(
      logged.map((l) => [l.level, l.fields, l.msg.startsWith('repeated wrong credentials')]),
      [['warn', { address: '10.0.0.5', failures: 5 }, true]],
    );
    await users.check(basic('alice', 'guess-0'), '10.0.0.5');
    await users.check(basic('alice', 'right'), '10.0.0.6');
    await users.check(basic('alice', 'right'), '10.0.0.6');
    await users.check(`Basic ${Buffer.from('no-colon').toString('base64')}`, '10.0.0.6');
    assert.deepEqual(counted, [...Array<string>(7).fill('invalid'), 'cached_invalid', 'valid', 'cached_valid', 'malformed']);
    counted.length = 0;
    failure = new Error('worker gone');
    assert.equal(refusal(await users.check(basic('alice', 'new-1'), '10.0.0.6')), 'unchecked');
    assert.deepEqual(logged.at(-1), { level: 'error', fields: { error: 'worker gone', users: 'PROXY_AUTH' }, msg: 'password check failed' });
    const slept = clock.slept.length;
    failure = new BcryptBusyError();
    assert.equal(refusal(await users.check(basic('alice', 'new-2'), '10.0.0.6')), 'unchecked');
    assert.deepEqual(clock.slept.slice(slept), [1000], 'held only when the worker is busy');
    assert.equal(logged.length, 2, 'a busy worker is not an error');
    assert.deepEqual(counted, ['unchecked', 'unchecked']);
  });

  it('refuses unchecked, after a second, a distinct header beyond 10,000 checks in flight', async () => {
    const clock = new FakeClock();
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const guard = new PasswordGuard({ clock, bcrypt: () => gate.then(() => false) });
    const users = UserSet.load(await htpasswd(`alice:${bcrypt.hashSync('right', 4)}\n`), 'PROXY_AUTH', guard);
    const held = Array.from({ length: 10_000 }, (_, i) => users.check(basic('alice', `g${i}`), `10.4.${i >> 8}.${i & 255}`));
    assert.equal(refusal(await users.check(basic('alice', 'one-more'), '10.5.0.1')), 'unchecked');
    assert.deepEqual(clock.slept, [1000]);
    release();
    assert.ok((await Promise.all(held)).every((r) => refusal(r) === 'wrong'));
  });
});

describe('client addresses, bounded sets, listings', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  it('counts IPv4-mapped addresses as IPv4 and IPv6 by /64', () => {
    assert.equal(clientAddress({ remoteAddress: '::ffff:192.0.2.7' }), '192.0.2.7');
    assert.equal(clientAddress({ remoteAddress: '192.0.2.7' }), '192.0.2.7');
    assert.equal(clientAddress({ remoteAddress: '2001:db8:0:1:aaaa::5' }), '2001:db8:0:1::/64');
    assert.equal(clientAddress({ remoteAddress: '2001:0db8:0000:0001:ffff:1:2:3' }), '2001:db8:0:1::/64');
    assert.equal(clientAddress({ remoteAddress: '::1' }), '0:0:0:0::/64');
    assert.equal(clientAddress({ remoteAddress: undefined }), 'unknown');
    assert.equal(clientAddress({ remoteAddress: '::FFFF:192.168.100.200' }), '192.168.100.200');
    assert.equal(clientAddress({ remoteAddress: '2001:db8::ffff:10.0.0.1' }), '2001:db8:0:0::/64', 'not IPv4-mapped: IPv6');
    assert.equal(clientAddress({ remoteAddress: 'FE80::1%eth0' }), 'fe80:0:0:0::/64');
    assert.equal(clientAddress({ remoteAddress: '1:2::3:4:5:6:7' }), '1:2:0:3::/64');
    assert.equal(clientAddress({ remoteAddress: 'a:b:c::' }), 'a:b:c:0::/64');
  });

  it('warns once when an address starts being slowed down, and forgets an address with no failures', async () => {
    const clock = new FakeClock();
    const warned: [string, number][] = [];
    const throttle = new FailureThrottle(clock, (address, failures) => warned.push([address, failures]));
    await throttle.attempt('10.6.0.1', async () => 'good');
    assert.equal(throttle.tracked, 0, 'a good attempt leaves nothing behind');
    for (let i = 0; i < 8; i++) await throttle.attempt('10.6.0.2', async () => 'bad');
    assert.deepEqual(warned, [['10.6.0.2', 5]]);
    assert.equal(throttle.tracked, 1);
  });

  it('keeps an address that keeps failing when the bound drops the oldest', async () => {
    const clock = new FakeClock();
    const throttle = new FailureThrottle(clock);
    for (let i = 0; i < 5; i++) await throttle.attempt('10.7.0.1', async () => 'bad'); // first tracked
    for (let i = 0; i < 9_999; i++) await throttle.attempt(`10.8.${i >> 8}.${i & 255}`, async () => 'bad');
    await throttle.attempt('10.7.0.1', async () => 'bad'); // its sixth: waits, and it is the youngest now
    assert.deepEqual(clock.slept, [250]);
    await throttle.attempt('10.9.0.1', async () => 'bad'); // one more address: the oldest goes, not 10.7.0.1
    await throttle.attempt('10.7.0.1', async () => 'bad');
    assert.deepEqual(clock.slept, [250, 500]);
  });

  it('keeps at most its bound of keys, oldest out first, each until it expires', () => {
    const set = new ExpiringSet(1000, 3);
    for (const k of ['a', 'b', 'c', 'd']) set.add(k, 0);
    assert.equal(set.size, 3);
    assert.deepEqual(
      ['a', 'b', 'c', 'd'].map((k) => set.has(k, 500)),
      [false, true, true, true],
    );
    assert.equal(set.has('d', 1000), false, 'expired');
  });

  it('keeps at most 10,000 refused and 1,000 verified headers per user set, whatever a client sends', async () => {
    const guard = new PasswordGuard({ clock: new FakeClock(), bcrypt: () => Promise.reject(new Error('no bcrypt in a SHA file')) });
    const file = path.join(await tmp.make('regcache-htpasswd'), 'htpasswd');
    await writeFile(file, `alice:${sha('right')}\n`);
    const users = UserSet.load(file, 'PROXY_AUTH', guard);
    for (let i = 0; i < 10_050; i++) assert.equal(refusal(await users.check(basic('alice', `guess-${i}`), `10.1.${i >> 8}.${i & 255}`)), 'wrong');
    assert.equal(users.refused.size, 10_000);
    // One password, 1,050 spellings of its header (the scheme's case, the spaces around the credentials).
    const right = basic('alice', 'right').slice('Basic '.length);
    for (let i = 0; i < 1_050; i++) assert.ok(ok(await users.check(`${i & 1 ? 'basic' : 'Basic'}${' '.repeat(1 + (i >> 1))}${right}`, '10.2.0.1')));
    assert.equal(users.verified.size, 1_000);
    await guard.close();
  });

  it('tracks at most 10,000 client addresses, dropping the one whose last failure is oldest', async () => {
    const clock = new FakeClock();
    const throttle = new FailureThrottle(clock);
    for (let i = 0; i < 10_050; i++) {
      clock.t += 1;
      await throttle.attempt(`10.3.${i >> 8}.${i & 255}`, async () => 'bad');
    }
    assert.equal(throttle.tracked, 10_000);
    // An address still tracked keeps its failures; one dropped starts over (the first 50 went first).
    for (let i = 0; i < 5; i++) await throttle.attempt('10.3.39.50', async () => 'bad'); // the 10,035th: still tracked
    assert.deepEqual(clock.slept, [250], 'its sixth failure waits');
    for (let i = 0; i < 5; i++) await throttle.attempt('10.3.0.0', async () => 'bad'); // the first: dropped
    assert.deepEqual(clock.slept, [250], 'five free failures again');
  });

  it('names an entry to anyone only when upstream serves it to anyone', () => {
    const entry = (access: Entry['access']): Entry => ({
      kind: 'manifest',
      digest: 'sha256:x',
      size: 1,
      mediaType: 'm',
      created: 0,
      lastAccess: 0,
      refs: [],
      sources: [],
      tags: [],
      ...(access ? { access } : {}),
    });
    assert.deepEqual(
      (['public', 'private', undefined] as const).map((a) => [mayList(entry(a), 'anyone'), mayList(entry(a), 'admin')]),
      [
        [true, true],
        [false, true],
        [false, true], // not known yet counts as private
      ],
    );
  });
});
