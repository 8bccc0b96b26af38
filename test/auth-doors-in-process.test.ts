// tier: unit
// Which users each door asks for (src/auth/doors.ts), in process: PROXY_AUTH closes every door and its
// users' verdicts are shared by the doors that inherit it; MIRROR_AUTH and ADMIN_AUTH name other users,
// or "none" to open their door with a warning. Through a real server: test/auth-doors.test.ts.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { loadDoors } from '../src/auth/doors.js';
import { PasswordGuard } from '../src/auth/password-guard.js';
import { basic } from './support/credentials.js';

describe('doors and their users', () => {
  const guard = new PasswordGuard();
  after(() => guard.close());
  const doorsOf = (proxyAuth: string | null, mirrorAuth: string | null, adminAuth: string | null, mirrorPort = 5000) =>
    loadDoors({ proxyAuth, mirrorAuth, adminAuth, mirrorPort }, guard);
  const admits = async (set: { check: (h: string, a: string) => Promise<object> } | null, user: string, pass: string) =>
    set === null ? 'open' : 'users' in (await set.check(basic(user, pass), '10.9.0.1')) ? 'yes' : 'no';

  it('leaves every door open when nothing is set', () => {
    assert.deepEqual(doorsOf(null, null, null), { doors: { proxy: null, mirror: null, admin: null }, warnings: [] });
  });

  it('closes every door with PROXY_AUTH, one set of users shared by all three', async () => {
    const { doors, warnings } = doorsOf('ops:ops-pw', null, null);
    assert.ok(doors.proxy && doors.mirror === doors.proxy && doors.admin === doors.proxy);
    assert.equal(doors.proxy.variable, 'PROXY_AUTH');
    assert.deepEqual(warnings, []);
    assert.equal(await admits(doors.mirror, 'ops', 'ops-pw'), 'yes');
    assert.equal(await admits(doors.admin, 'ops', 'wrong'), 'no');
  });

  it('asks for MIRROR_AUTH and ADMIN_AUTH users where they are set, and only for them', async () => {
    const { doors } = doorsOf('ops:ops-pw', 'puller:pull-pw', 'admin:admin-pw');
    assert.deepEqual([doors.proxy?.variable, doors.mirror?.variable, doors.admin?.variable], ['PROXY_AUTH', 'MIRROR_AUTH', 'ADMIN_AUTH']);
    assert.deepEqual(
      await Promise.all([
        admits(doors.mirror, 'puller', 'pull-pw'),
        admits(doors.mirror, 'ops', 'ops-pw'),
        admits(doors.admin, 'admin', 'admin-pw'),
        admits(doors.admin, 'ops', 'ops-pw'),
      ]),
      ['yes', 'no', 'yes', 'no'],
    );
    const alone = doorsOf(null, 'puller:pull-pw', null);
    assert.equal(alone.doors.proxy, null);
    assert.equal(alone.doors.admin, null);
    assert.equal(alone.doors.mirror?.variable, 'MIRROR_AUTH');
  });

  it('opens a door set to "none" even with PROXY_AUTH, and warns of it (the mirror only when it listens)', () => {
    const mirrorOpen = doorsOf('ops:ops-pw', 'none', null);
    assert.equal(mirrorOpen.doors.mirror, null);
    assert.ok(mirrorOpen.doors.admin);
    assert.equal(mirrorOpen.warnings.length, 1);
    assert.match(mirrorOpen.warnings[0]!, /^MIRROR_AUTH=none: the registry mirror serves anyone/);
    assert.deepEqual(doorsOf('ops:ops-pw', 'none', null, 0).warnings, [], 'no mirror, no warning');
    const adminOpen = doorsOf('ops:ops-pw', null, 'none');
    assert.equal(adminOpen.doors.admin, null);
    assert.ok(adminOpen.doors.mirror);
    assert.equal(adminOpen.warnings.length, 1);
    assert.match(adminOpen.warnings[0]!, /^ADMIN_AUTH=none: \/metrics, \/api\/v1\/\*, \/setup\/\* and the mirror's \/v2\/_catalog are open to anyone/);
    assert.deepEqual(doorsOf(null, 'none', 'none').warnings, [], 'nothing to warn of without PROXY_AUTH');
  });
});
