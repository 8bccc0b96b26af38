// docker-compose.yaml as the README has operators use it: `cp .env.example .env`, then Compose. Compose v1
// (Debian's docker-compose) checks it here; Compose v2 does too where it is installed (not in Debian 12).
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BASE_PATH } from './harness/containerd.js';
import { run } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';

const ROOT = path.resolve(import.meta.dirname, '..');
// The container's settings as `config` prints them: one indented NAME: value line each.
const setting = (name: string) => new RegExp(`^ +${name}: `, 'm');

describe('docker-compose.yaml', () => {
  const tmp = new TmpDirs();
  let project: string;
  const compose = (command: string[], args: string[]) =>
    run(command[0]!, [...command.slice(1), '--project-directory', project, '-f', path.join(project, 'docker-compose.yaml'), ...args], {
      env: { PATH: BASE_PATH, HOME: project },
      cwd: project,
    });

  before(async () => {
    project = await tmp.make('regcache-compose');
    await copyFile(path.join(ROOT, 'docker-compose.yaml'), path.join(project, 'docker-compose.yaml'));
  });
  after(() => tmp.cleanup());

  it('asks for the .env the README has operators copy first', async () => {
    const r = await compose(['docker-compose'], ['config', '--quiet']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /find env file: .*\/\.env/);
  });

  for (const [version, command] of [
    ['v1', ['docker-compose']],
    ['v2', ['docker', 'compose']],
  ] as const) {
    it(`is valid for Compose ${version} with .env.example as .env, which leaves the image's ports and volumes alone`, async (t) => {
      if (version === 'v2' && (await run(command[0], [command[1], 'version'], { env: { PATH: BASE_PATH } })).code !== 0) {
        t.skip('Compose v2 (docker compose) is not installed: Debian 12 does not package it');
        return;
      }
      await copyFile(path.join(ROOT, '.env.example'), path.join(project, '.env'));
      const r = await compose([...command], ['config']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, setting('REGISTRIES'), 'the settings of .env reach the container');
      assert.match(r.stdout, /^ +- ca:\/ca(:rw)?$/m);
      assert.match(r.stdout, /^ +- cache:\/docker_mirror_cache(:rw)?$/m);
      for (const name of ['PORT', 'MIRROR_PORT', 'CA_DIR', 'CACHE_DIR']) assert.doesNotMatch(r.stdout, setting(name), `${name} stays the image's`);
    });
  }
});
