// tier: e2e
// The command line as users meet it: --help and usage errors (exit codes, stdout or stderr), `ca path|export`
// (which never create a CA), and the message `serve` stops with on a bad value.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { run, waitFor } from './harness/proc.js';
import { startRegcache } from './harness/regcache.js';
import { TmpDirs } from './harness/tmp.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const regcache = (args: string[], env: Record<string, string> = {}) =>
  run(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '', ...env }, timeoutMs: 20_000 });

/**
 * Runs a serving command until its output says it listens (however long a loaded machine takes), then
 * stops it and its children (its own process group); the output up to then.
 */
async function outputUntilListening(command: string, args: string[]): Promise<string> {
  const child = spawn(command, args, { env: { PATH: process.env.PATH ?? '' }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  child.stdout.on('data', (b: Buffer) => (output += b.toString('utf8')));
  child.stderr.on('data', (b: Buffer) => (output += b.toString('utf8')));
  const closed = new Promise<void>((resolve) => child.once('close', () => resolve()));
  try {
    await waitFor(async () => /listening/.test(output), { timeoutMs: 60_000, what: `${command} to say it listens`, intervalMs: 50 }).catch((err: Error) => {
      throw new Error(`${err.message}; output:\n${output}`);
    });
  } finally {
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      // already gone
    }
    await closed;
  }
  return output;
}

describe('regcache CLI', () => {
  const tmp = new TmpDirs();
  after(() => tmp.cleanup());

  // Every command's help is read in process (test/command-help.test.ts); these two go through the real
  // command line: printed on stdout, exit 0.
  for (const command of [[], ['cache', 'ls']]) {
    it(`regcache ${command.join(' ')} --help shows usage and examples`, async () => {
      const r = await regcache([...command, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^Usage: regcache/);
      assert.match(r.stdout, /Examples:\n  \$ regcache/);
    });
  }

  it('logs human-readable lines on a terminal and JSON otherwise', async () => {
    const dir = await tmp.make('regcache-cli-tty');
    const serve = `PORT=0 MIRROR_PORT=0 WORKERS=1 CA_DIR=${dir}/certs CACHE_DIR=${dir}/cache exec ${process.execPath} ${CLI} serve`;
    const tty = await outputUntilListening('script', ['-qec', serve, '/dev/null']); // a pseudo-terminal for stdout
    assert.match(tty, /INFO.*listening/);
    assert.doesNotMatch(tty, /^\{"level"/m);
    const piped = await outputUntilListening('sh', ['-c', serve]);
    assert.match(piped, /^\{"level":"info".*"msg":"listening"\}$/m);
  });

  // commander's own usage errors exit 2, as the README says and as regcache's own do (a bad value, below).
  for (const args of [['serve', 'extra-argument'], ['no-such-command'], ['--no-such-option'], ['cache', 'ls', '--no-such-option'], ['cache']]) {
    it(`regcache ${args.join(' ')} is a usage error: exit 2 with the reason on stderr`, async () => {
      const r = await regcache(args);
      assert.equal(r.code, 2, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(r.stderr, /^error: (too many arguments|unknown option)|^Usage: regcache cache/);
    });
  }

  it('prints the version', async () => {
    const r = await regcache(['--version']);
    assert.match(r.stdout.trim(), /^\d+\.\d+\.\d+$/);
  });

  it('ca path and ca export never create a CA: without one they name the file they looked for', async () => {
    const root = await tmp.make('regcache-cli-ca');
    const dir = path.join(root, 'certs');
    for (const command of ['path', 'export']) {
      const r = await regcache(['ca', command, '--ca-dir', dir]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stdout, '');
      assert.match(
        r.stderr,
        new RegExp(`^regcache: there is no CA certificate at ${path.join(dir, 'ca.crt')} \\(CA_DIR=${dir}, or --ca-dir\\): regcache serve creates`),
      );
    }
    assert.equal(existsSync(dir), false, 'nothing was created');

    const server = await startRegcache({ dir: root, caDir: dir }); // the server creates the CA
    await server.stop();
    const exported = await regcache(['ca', 'export', '--ca-dir', dir]);
    assert.equal(exported.code, 0, exported.stderr);
    assert.equal(exported.stdout, await readFile(path.join(dir, 'ca.crt'), 'utf8'), "the server's CA, unchanged");
    const where = await regcache(['ca', 'path'], { CA_DIR: dir });
    assert.equal(where.stdout.trim(), path.join(dir, 'ca.crt'));
  });

  // A bad value stops `serve` before it does anything, naming the variable and an example: every variable's
  // message is checked in process (test/config.test.ts, BAD_VALUES); these go through the real `serve`.
  const bad: [string, string][] = [
    ['PORT', 'http'],
    ['MIRROR_TLS_CERT', '/etc/cert.pem'],
  ];
  for (const [variable, value] of bad) {
    it(`stops on ${variable}=${JSON.stringify(value)} with a message naming it`, async () => {
      const dir = await tmp.make('regcache-cli-config');
      const r = await regcache(['serve'], {
        CA_DIR: path.join(dir, 'certs'),
        CACHE_DIR: path.join(dir, 'cache'),
        PORT: '0',
        MIRROR_PORT: '0',
        [variable]: value,
      });
      assert.equal(r.code, 2, r.stderr);
      const named = variable === 'MIRROR_TLS_CERT' ? 'MIRROR_TLS_KEY' : variable; // the missing half is the one named
      assert.match(r.stderr, new RegExp(`^regcache: ${named}=`));
      assert.match(r.stderr, /e\.g\./);
    });
  }
});
