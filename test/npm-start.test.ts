// tier: e2e
// `npm start` as the README has a user run it, in a copy of the package (its own dist/, so this checkout's
// build is never touched): it compiles only when dist/ is missing or older than src/, and a SIGTERM to the
// npm process, the one the user (or a service manager) started, stops regcache and every worker.
import assert from 'node:assert/strict';
import { appendFile, cp, readdir, readFile, stat, symlink } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { spawnDaemon, waitFor, type Daemon } from './harness/proc.js';
import { parseLogLines, type LogLine } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '..');

/** The pids of every live descendant of pid, from /proc. */
async function descendants(pid: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const text = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => null); // gone meanwhile
    const m = text && /\) \S+ (\d+)/.exec(text); // the name in parentheses may hold spaces
    if (m) parents.set(Number(entry), Number(m[1]));
  }
  const found: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parents) {
      if (parent === p) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return found;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const refused = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(true));
  });

describe('npm start', () => {
  const tmp = new TmpDirs();
  let pkg: string;
  let runs = 0;
  const started: number[] = []; // every process npm started: none may outlive the test, even when it fails

  before(async () => {
    pkg = await tmp.make('regcache-npm-start');
    for (const item of ['package.json', 'tsconfig.json', 'src']) await cp(path.join(ROOT, item), path.join(pkg, item), { recursive: true });
    await symlink(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'));
  });
  after(async () => {
    for (const pid of started.filter(alive)) process.kill(pid, 'SIGKILL');
    await tmp.cleanup();
  });

  /** `npm start` in the copy, as a user starts it; resolves once regcache says it listens. */
  const start = async (workers: 1 | 2): Promise<{ npm: Daemon; log: string; listening: LogLine; lines: () => Promise<LogLine[]> }> => {
    const run = ++runs;
    const log = path.join(pkg, `start-${run}.log`);
    const npm = spawnDaemon('npm', ['start'], {
      cwd: pkg,
      stdoutFile: log,
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: pkg,
        PORT: '0',
        MIRROR_PORT: '0',
        WORKERS: String(workers),
        CA_DIR: path.join(pkg, 'ca'),
        CACHE_DIR: path.join(pkg, `cache-${run}`),
        npm_config_update_notifier: 'false',
      },
    });
    const lines = async () => parseLogLines(await readFile(log, 'utf8').catch(() => ''));
    let listening: LogLine | undefined;
    await waitFor(
      async () => {
        if (!npm.isRunning()) throw new Error(`npm start exited:\n${await readFile(log, 'utf8')}`);
        listening = (await lines()).find((l) => l.msg === 'listening');
        return listening !== undefined;
      },
      { timeoutMs: 180_000, intervalMs: 100, what: 'regcache started by npm start to listen' },
    );
    started.push(...(await descendants(npm.pid)));
    return { npm, log, listening: listening!, lines };
  };

  it('compiles when dist/ is missing or older than src/, and not when it is up to date', async () => {
    const built = path.join(pkg, 'dist', 'cli.js');
    // One process: what is compiled does not depend on the workers (each start with two costs ~2 s more CPU).
    const first = await start(1);
    assert.match(await readFile(first.log, 'utf8'), /> tsc -b tsconfig\.json/);
    await first.npm.stop(20_000);
    const compiled = (await stat(built)).mtimeMs;

    const second = await start(1);
    await second.npm.stop(20_000);
    assert.equal((await stat(built)).mtimeMs, compiled, 'dist/ was up to date: nothing was compiled');

    // An edit to a source file is compiled at the next start (incrementally: tsconfig.json's `incremental`
    // keeps what it checked in tsconfig.tsbuildinfo, so only the edit and what depends on it is checked again).
    await appendFile(path.join(pkg, 'src', 'cli.ts'), '// an edit\n');
    const third = await start(1);
    await third.npm.stop(20_000);
    assert.ok((await stat(built)).mtimeMs > compiled, 'the edited source was compiled');
  });

  it('stops regcache and all its workers on a SIGTERM to the npm process', async () => {
    const { npm, listening, lines } = await start(2);
    const tree = await descendants(npm.pid);
    const port = Number(listening.port);
    assert.ok(tree.length >= 3, `npm's tree holds regcache's primary and its two workers: ${tree.join(' ')}`);

    process.kill(npm.pid, 'SIGTERM'); // as kill -TERM or systemctl stop does: to that one process only
    await npm.exited;
    await waitFor(async () => tree.every((pid) => !alive(pid)), { timeoutMs: 30_000, what: `every process npm started to exit: ${tree.join(' ')}` });
    assert.ok(await refused(port), 'the port is free');
    const logged = await lines();
    assert.ok(
      logged.some((l) => l.msg === 'shutting down' && l.signal === 'SIGTERM' && l.worker === 0),
      'the primary got the SIGTERM and drained',
    );
    assert.equal(logged.filter((l) => l.msg === 'worker stopped').length, 2, 'both workers stopped');
  });
});
