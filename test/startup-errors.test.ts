// tier: e2e
// Startup failures name the setting behind them and the fix, and are found before anything is touched:
// no CA is created and no cache directory appears when the configuration cannot work (issue 13, item 8).
// The real CLI, as root and as uid 1000 (the image's user), against real files, mounts and ports.
import assert from 'node:assert/strict';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createTestCA } from './harness/pki.js';
import { freePort } from './harness/ports.js';
import { run } from './harness/proc.js';
import type { LogLine } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const asUid1000 = ['setpriv', '--reuid=1000', '--regid=1000', '--clear-groups'];

interface Case {
  name: string;
  env: (dir: string) => Promise<Record<string, string>>;
  user?: string[]; // run under this prefix
  variable: string;
  message: RegExp;
}

describe('startup errors name the setting and the fix', () => {
  const tmp = new TmpDirs();
  let root: string;
  let busy: net.Server;
  let busyPort: number;
  let certPem: string;

  before(async () => {
    root = await tmp.make('regcache-startup');
    await chmod(root, 0o755); // uid 1000 must reach the case directories
    busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, resolve));
    busyPort = (busy.address() as net.AddressInfo).port;
    certPem = (await createTestCA(path.join(root, 'ca'), 'startup test CA')).certPem;
  });

  after(async () => {
    busy?.close();
    await run('sh', ['-c', `umount ${root}/*/ro 2>/dev/null; true`]);
    await tmp.cleanup();
  });

  const cases: Case[] = [
    {
      name: 'a missing UPSTREAM_CA_FILE',
      env: async (d) => ({ UPSTREAM_CA_FILE: path.join(d, 'nope.pem') }),
      variable: 'UPSTREAM_CA_FILE',
      message: /nope\.pem cannot be read \(ENOENT\)/,
    },
    {
      name: 'an UPSTREAM_CA_FILE that is not PEM',
      env: async (d) => {
        await writeFile(path.join(d, 'bundle.txt'), 'not a certificate\n');
        return { UPSTREAM_CA_FILE: path.join(d, 'bundle.txt') };
      },
      variable: 'UPSTREAM_CA_FILE',
      message: /holds no PEM certificate/,
    },
    {
      name: 'a MIRROR_TLS_KEY that is not a key',
      env: async (d) => {
        await writeFile(path.join(d, 'mirror.crt'), certPem);
        await writeFile(path.join(d, 'mirror.key'), certPem);
        return { MIRROR_TLS_CERT: path.join(d, 'mirror.crt'), MIRROR_TLS_KEY: path.join(d, 'mirror.key'), MIRROR_PORT: String(await freePort()) };
      },
      variable: 'MIRROR_TLS_KEY',
      message: /holds no PEM private key/,
    },
    {
      name: 'a CACHE_DIR on a read-only filesystem',
      env: async (d) => {
        await mkdir(path.join(d, 'ro'));
        const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', path.join(d, 'ro')]);
        assert.equal(mounted.code, 0, `this test mounts a read-only tmpfs (root): ${mounted.stderr}`);
        return { CACHE_DIR: path.join(d, 'ro', 'cache') };
      },
      variable: 'CACHE_DIR',
      message: /read-only filesystem/,
    },
    {
      name: "a CACHE_DIR owned by root, as a root-run container (rpardini's) leaves its volume, for the image's uid 1000",
      env: async (d) => {
        await mkdir(path.join(d, 'docker_mirror_cache'), { mode: 0o755 });
        await mkdir(path.join(d, 'ca'), { mode: 0o777 });
        await chmod(path.join(d, 'ca'), 0o777);
        return { CACHE_DIR: path.join(d, 'docker_mirror_cache'), CA_DIR: path.join(d, 'ca') };
      },
      user: asUid1000,
      variable: 'CACHE_DIR',
      message: /not writable by this process \(uid 1000, gid 1000\): give it to uid 1000, e\.g\. chown -R 1000:1000 .*docker_mirror_cache/,
    },
    {
      name: 'a CA_DIR uid 1000 cannot read',
      env: async (d) => {
        await mkdir(path.join(d, 'ca'), { mode: 0o700 });
        await chmod(path.join(d, 'ca'), 0o700);
        await writeFile(path.join(d, 'ca', 'ca.crt'), certPem);
        await writeFile(path.join(d, 'ca', 'ca.key'), 'x');
        await mkdir(path.join(d, 'cache'), { mode: 0o777 });
        await chmod(path.join(d, 'cache'), 0o777);
        return { CA_DIR: path.join(d, 'ca'), CACHE_DIR: path.join(d, 'cache') };
      },
      user: asUid1000,
      variable: 'CA_DIR',
      message: /not readable by this process \(uid 1000/,
    },
    { name: 'a PORT in use', env: async () => ({ PORT: String(busyPort) }), variable: 'PORT', message: new RegExp(`PORT=\\d+ is in use by another process`) },
    {
      name: 'a MIRROR_PORT in use',
      env: async () => ({ MIRROR_PORT: String(busyPort) }),
      variable: 'MIRROR_PORT',
      message: /MIRROR_PORT=\d+ is in use by another process: stop it, or choose another port/,
    },
    { name: 'an ADMIN_PORT in use', env: async () => ({ ADMIN_PORT: String(busyPort) }), variable: 'ADMIN_PORT', message: /ADMIN_PORT=\d+ is in use/ },
    {
      name: 'MIRROR_PORT equal to PORT',
      env: async () => ({ PORT: '41234', MIRROR_PORT: '41234' }),
      variable: 'MIRROR_PORT',
      message: /MIRROR_PORT=41234 is also PORT/,
    },
  ];

  for (const c of cases) {
    it(`${c.name}: one fatal line naming ${c.variable}, exit 1, nothing created`, async () => {
      const dir = path.join(root, c.name.replace(/\W+/g, '-').slice(0, 60));
      await mkdir(dir, { mode: 0o755 });
      await chmod(dir, 0o755);
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        PORT: '0',
        MIRROR_PORT: '0',
        CA_DIR: path.join(dir, 'certs'),
        CACHE_DIR: path.join(dir, 'cache'),
        ...(await c.env(dir)),
      };
      const before = new Set(await readdir(dir));
      const r = await run(c.user?.[0] ?? process.execPath, [...(c.user?.slice(1) ?? []), ...(c.user ? [process.execPath] : []), CLI, 'serve'], {
        env,
        timeoutMs: 20_000,
      });
      assert.equal(r.code, 1, `${r.stdout}${r.stderr}`);
      const lines = r.stdout
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as LogLine);
      const fatal = lines.filter((l) => l.level === 'fatal');
      assert.equal(fatal.length, 1, r.stdout);
      assert.equal(fatal[0]?.msg, 'startup failed');
      assert.equal(fatal[0]?.variable, c.variable);
      assert.match(String(fatal[0]?.error), c.message);
      assert.doesNotMatch(r.stdout + r.stderr, /\n\s+at /, 'no stack trace');
      assert.ok(!lines.some((l) => /CA/.test(l.msg) && l.level === 'info'), 'no CA was loaded or created');
      const created = (await readdir(dir)).filter((f) => !before.has(f));
      assert.deepEqual(created, [], 'nothing was created');
    });
  }
});
