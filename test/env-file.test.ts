// tier: e2e
// The working directory's .env: read in-process (syntax, precedence, errors), .env.example as shipped,
// and the CLI's commands reading it from where they run.
import assert from 'node:assert/strict';
import { access, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config/config.js';
import { applyEnvFile, EnvFileError, readEnvFile } from '../src/commands/env-file.js';
import { run, spawnDaemon, waitFor } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';

const CLI = path.resolve(import.meta.dirname, '../dist/cli.js');
const EXAMPLE = path.resolve(import.meta.dirname, '../.env.example');

describe('.env', () => {
  const tmp = new TmpDirs();
  let dir: string;
  let n = 0;
  const envFile = async (text: string): Promise<string> => {
    const file = path.join(dir, `case-${n++}.env`);
    await writeFile(file, text);
    return file;
  };
  before(async () => {
    dir = await tmp.make('regcache-env-file');
  });
  after(() => tmp.cleanup());

  it('reads NAME=value lines: comments, export, quotes, spaces, multi-line values, empty values', async () => {
    const file = await envFile(
      [
        '# a comment',
        '',
        'REGISTRIES=quay.io ghcr.io',
        '  export LOG_LEVEL = debug  ',
        'PROXY_AUTH="alice:s3cret # not a comment"',
        "AUTH_REGISTRIES='quay.io:me:pw'",
        'UPSTREAM_PROXY=http://proxy:3128 # a comment',
        'MIRROR_AUTH="line one',
        'line two"',
        'REGISTRY_DOMAIN=',
        'ALLOW_PUSH=true\r',
      ].join('\n'),
    );
    assert.deepEqual(readEnvFile(file), {
      REGISTRIES: 'quay.io ghcr.io',
      LOG_LEVEL: 'debug',
      PROXY_AUTH: 'alice:s3cret # not a comment',
      AUTH_REGISTRIES: 'quay.io:me:pw',
      UPSTREAM_PROXY: 'http://proxy:3128',
      MIRROR_AUTH: 'line one\nline two',
      REGISTRY_DOMAIN: '',
      ALLOW_PUSH: 'true',
    });
  });

  it('is no error when it does not exist', () => {
    assert.deepEqual(readEnvFile(path.join(dir, 'missing.env')), {});
    const env = { PORT: '1' };
    assert.deepEqual(applyEnvFile(env, path.join(dir, 'missing.env')), []);
    assert.deepEqual(env, { PORT: '1' });
  });

  it('fills only what the environment leaves unset: a variable set there, even to "", wins', async () => {
    const file = await envFile('PORT=4000\nCACHE_DIR=/from-file\nLOG_LEVEL=debug\n');
    const env: Record<string, string | undefined> = { PORT: '5000', CACHE_DIR: '' };
    assert.deepEqual(applyEnvFile(env, file), ['LOG_LEVEL']);
    assert.deepEqual(env, { PORT: '5000', CACHE_DIR: '', LOG_LEVEL: 'debug' });
  });

  for (const [what, text, line, message] of [
    ['a line without =', 'PORT=3128\nREGISTRIES quay.io\nLOG_LEVEL=info\n', 2, /expected NAME=value/],
    ['a name with a space', 'LOG LEVEL=info\n', 1, /expected NAME=value/],
    ['a quote that never closes', 'PORT=3128\nPROXY_AUTH="alice:s3cret\nLOG_LEVEL=info\n', 2, /quote that never closes/],
  ] as const) {
    it(`stops on ${what}, naming the file and line and never the value`, async () => {
      const file = await envFile(text);
      assert.throws(
        () => readEnvFile(file),
        (err: Error) => {
          assert.ok(err instanceof EnvFileError);
          assert.ok(err.message.startsWith(`${file} line ${line}: `), err.message);
          assert.match(err.message, message);
          assert.doesNotMatch(err.message, /quay\.io|s3cret/);
          return true;
        },
      );
    });
  }

  it('stops on a file it cannot read, naming it', async () => {
    await mkdir(path.join(dir, 'a-directory.env'));
    assert.throws(() => readEnvFile(path.join(dir, 'a-directory.env')), /^EnvFileError: cannot read .*a-directory\.env: EISDIR/);
  });

  it(".env.example, copied to .env, sets the defaults and leaves the image's ports and directories alone", () => {
    const example = readEnvFile(EXAMPLE);
    assert.ok(Object.keys(example).length > 30, 'the example documents the variables');
    for (const name of ['PORT', 'MIRROR_PORT', 'CA_DIR', 'CACHE_DIR']) assert.equal(example[name], undefined, `${name} is set by the image`);
    // Every setting it sets is the default (the record of what was set aside).
    const { settings: fromExample, ...withExample } = loadConfig(example);
    const { settings: fromNothing, ...withNothing } = loadConfig({});
    assert.deepEqual(withExample, withNothing);
    assert.deepEqual(fromExample.texts, fromNothing.texts);
  });

  describe('the CLI', () => {
    it('serve reads .env from the working directory, under the environment', async () => {
      const cwd = path.join(dir, 'serve');
      await mkdir(cwd);
      await writeFile(path.join(cwd, '.env'), 'PORT=0\nMIRROR_PORT=0\nCA_DIR=./ca-from-dotenv\nCACHE_DIR=./cache-from-dotenv\nLOG_LEVEL=warn\n');
      const log = path.join(cwd, 'serve.log');
      const daemon = spawnDaemon(process.execPath, [CLI, 'serve'], { env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'info' }, stdoutFile: log, cwd });
      try {
        await waitFor(async () => (await readText(log)).includes('"msg":"listening"'), { timeoutMs: 15_000, what: 'regcache to listen' });
        await access(path.join(cwd, 'ca-from-dotenv', 'ca.crt'));
        await access(path.join(cwd, 'cache-from-dotenv'));
      } finally {
        await daemon.stop(5000);
      }
      assert.match(await readText(log), /"level":"info"/, 'LOG_LEVEL from the environment wins over .env');
    });

    it('every command reads it; a malformed one stops with exit code 2, --help still works', async () => {
      const cwd = path.join(dir, 'commands');
      await mkdir(cwd);
      await writeFile(path.join(cwd, '.env'), 'CA_DIR=/nowhere/ca-from-dotenv\n');
      const where = await run(process.execPath, [CLI, 'ca', 'path'], { env: { PATH: process.env.PATH ?? '' }, cwd });
      assert.match(where.stdout + where.stderr, /\/nowhere\/ca-from-dotenv\/ca\.crt/);

      await writeFile(path.join(cwd, '.env'), 'CA_DIR=/nowhere\nthis is not an assignment\n');
      for (const args of [['serve'], ['cache', 'du'], ['ca', 'path']]) {
        const r = await run(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? '' }, cwd });
        assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
        assert.equal(r.stderr, `regcache: ${path.join(cwd, '.env')} line 2: expected NAME=value, a # comment or a blank line\n`);
      }
      const help = await run(process.execPath, [CLI, '--help'], { env: { PATH: process.env.PATH ?? '' }, cwd });
      assert.equal(help.code, 0, help.stderr);
    });
  });
});

const readText = (file: string): Promise<string> => readFile(file, 'utf8').catch(() => '');
