// tier: e2e
// The set-up scripts regcache hands out (/setup/systemd, /setup/containerd.sh), run for real by bash in a
// directory standing in for / (REGCACHE_ROOT), with curl, update-ca-certificates and systemctl stubbed
// to record what they were asked to do (issue 13, item 13).
import assert from 'node:assert/strict';
import { chmod, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { containerdHostsToml, containerdSetupScript, systemdSetupScript } from '../src/admin/setup-script.js';
import { run } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';

describe('set-up scripts', () => {
  const tmp = new TmpDirs();
  let dir: string;
  let stubs: string;

  before(async () => {
    dir = await tmp.make('regcache-setup');
    stubs = path.join(dir, 'bin');
    await mkdir(stubs);
    const stub = async (name: string, body: string) => {
      await writeFile(path.join(stubs, name), `#!/bin/sh\necho "${name} $*" >> "$CALLS"\n${body}\n`);
      await chmod(path.join(stubs, name), 0o755);
    };
    await stub('curl', 'while [ $# -gt 0 ]; do [ "$1" = -o ] && echo FAKE-CA > "$2"; shift; done');
    await stub('update-ca-certificates', '');
    await stub('systemctl', '');
  });
  after(() => tmp.cleanup());

  const runScript = async (name: string, script: string, env: Record<string, string> = {}) => {
    const root = path.join(dir, name);
    await mkdir(root, { recursive: true });
    await writeFile(path.join(dir, `${name}.sh`), script);
    const calls = path.join(dir, `${name}.calls`);
    await writeFile(calls, '');
    const r = await run('bash', [path.join(dir, `${name}.sh`)], {
      env: { PATH: `${stubs}:/usr/bin:/bin`, REGCACHE_ROOT: root, CALLS: calls, REGCACHE_RESTART_DELAY: '0', ...env },
    });
    return { ...r, root, calls: (await readFile(calls, 'utf8')).trim().split('\n').filter(Boolean) };
  };

  it('writes its own drop-in with the proxy credentials, 0600, escaped for the shell and for systemd, and leaves http-proxy.conf alone', async () => {
    const credentials = { user: "al'ice", password: "p@ss%w'd $(x)" };
    const script = systemdSetupScript({ origin: 'http://regcache.lan:3128', credentials });
    const root = path.join(dir, 'systemd');
    const mine = path.join(root, 'etc/systemd/system/docker.service.d/http-proxy.conf');
    await mkdir(path.dirname(mine), { recursive: true });
    await writeFile(mine, '[Service]\nEnvironment="HTTPS_PROXY=http://old:3128/"\n');
    const r = await runScript('systemd', script);
    assert.equal(r.code, 0, r.stderr);
    const dropin = path.join(root, 'etc/systemd/system/docker.service.d/regcache-proxy.conf');
    const text = await readFile(dropin, 'utf8');
    const encoded = `${encodeURIComponent("al'ice")}:${encodeURIComponent("p@ss%w'd $(x)")}`.replace(/%/g, '%%');
    assert.ok(text.includes(`"HTTPS_PROXY=http://${encoded}@regcache.lan:3128/"`), text);
    assert.match(text, /"NO_PROXY=localhost,127\.0\.0\.1,::1"/);
    assert.equal((await stat(dropin)).mode & 0o777, 0o600);
    assert.equal(await readFile(mine, 'utf8'), '[Service]\nEnvironment="HTTPS_PROXY=http://old:3128/"\n', "the operator's own drop-in is untouched");
    assert.equal(await readFile(path.join(root, 'usr/local/share/ca-certificates/regcache.crt'), 'utf8'), 'FAKE-CA\n');
    assert.ok(
      r.calls.some((c) => c === 'curl -fsS http://regcache.lan:3128/ca.crt -o ' + path.join(root, 'usr/local/share/ca-certificates/regcache.crt')),
      'the CA is fetched without the credentials',
    );
    assert.match(r.stderr, /running containers stop/);
    assert.deepEqual(
      r.calls.filter((c) => c.startsWith('systemctl')),
      ['systemctl daemon-reload', 'systemctl restart docker.service'],
    );
  });

  it('leaves the restart to the operator with REGCACHE_NO_RESTART=1', async () => {
    const r = await runScript('no-restart', systemdSetupScript({ origin: 'http://10.0.0.5:3128', credentials: null }), { REGCACHE_NO_RESTART: '1' });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!r.calls.some((c) => c.startsWith('systemctl')));
    assert.match(r.stdout, /systemctl restart docker\.service/);
    assert.match(
      await readFile(path.join(r.root, 'etc/systemd/system/docker.service.d/regcache-proxy.conf'), 'utf8'),
      /"HTTPS_PROXY=http:\/\/10\.0\.0\.5:3128\/"/,
    );
  });

  it('writes one hosts.toml per registry, with the mirror credentials as a header, and names the wildcards it cannot write', async () => {
    const toml = containerdHostsToml('http://regcache.lan:5000', ['registry-1.docker.io', 'ghcr.io', '*.corp.example'], { user: 'bob', password: 'pw' });
    const r = await runScript('containerd', containerdSetupScript(toml));
    assert.equal(r.code, 0, r.stderr);
    const hub = await readFile(path.join(r.root, 'etc/containerd/certs.d/docker.io/hosts.toml'), 'utf8');
    assert.match(hub, /^server = "https:\/\/registry-1\.docker\.io"$/m);
    assert.match(hub, /\[host\."http:\/\/regcache\.lan:5000"\]\n {2}capabilities = \["pull", "resolve"\]/);
    assert.ok(hub.includes(`Authorization = "Basic ${Buffer.from('bob:pw').toString('base64')}"`));
    assert.equal((await stat(path.join(r.root, 'etc/containerd/certs.d/ghcr.io/hosts.toml'))).mode & 0o777, 0o600);
    assert.match(toml, /\*\.corp\.example is on the allowlist, but containerd has no wildcard hosts/);
    assert.match(containerdSetupScript(toml), /\*\.corp\.example is on the allowlist/);
    // What it says it wrote is where it wrote: under REGCACHE_ROOT, not the real /etc.
    const said = [...r.stdout.matchAll(/^wrote (.+)$/gm)].map((m) => m[1]!);
    assert.deepEqual(said, [path.join(r.root, 'etc/containerd/certs.d/docker.io/hosts.toml'), path.join(r.root, 'etc/containerd/certs.d/ghcr.io/hosts.toml')]);
  });
});
