// tier: e2e
// docker-compose.yaml as operators use it: `up` in a fresh clone with no .env, or with a .env (from
// .env.example) that may also hold npm start's PORT, CA_DIR and CACHE_DIR. Compose v1 (Debian's
// docker-compose) checks it here; Compose v2 does too where it is installed (not packaged by Debian 12).
import assert from 'node:assert/strict';
import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { BASE_PATH } from './harness/containerd.js';
import { run } from './harness/proc.js';
import { TmpDirs } from './harness/tmp.js';
import { SETTING_NAMES, SETTINGS, type Setting } from '../src/config/settings.js';

const ROOT = path.resolve(import.meta.dirname, '..');
// Set by the image (the settings table's `image`); Compose must never pass them, whatever .env says.
const IMAGE_VARIABLES = SETTING_NAMES.filter((name) => (SETTINGS[name] as Setting<unknown>).image !== undefined);

interface ComposeConfig {
  services: { regcache: { environment: Record<string, string | null>; volumes: (string | { source: string; target: string })[] } };
}

describe('docker-compose.yaml', () => {
  const tmp = new TmpDirs();
  let project: string;
  const compose = (command: readonly string[], args: string[]) =>
    run(command[0]!, [...command.slice(1), '--project-directory', project, '-f', path.join(project, 'docker-compose.yaml'), ...args], {
      env: { PATH: BASE_PATH, HOME: project },
      cwd: project,
    });
  /** `config` as the Compose given prints it, parsed; fails the test when Compose refuses the file. */
  const config = async (command: readonly string[]): Promise<ComposeConfig> => {
    const r = await compose(command, ['config']);
    assert.equal(r.code, 0, r.stderr);
    return parse(r.stdout) as ComposeConfig;
  };
  const volumeTargets = (c: ComposeConfig) =>
    c.services.regcache.volumes.map((v) => (typeof v === 'string' ? v.replace(/:rw$/, '') : `${v.source}:${v.target}`)).sort();

  before(async () => {
    project = await tmp.make('regcache-compose');
    await copyFile(path.join(ROOT, 'docker-compose.yaml'), path.join(project, 'docker-compose.yaml'));
  });
  after(() => tmp.cleanup());

  for (const [version, command] of [
    ['v1', ['docker-compose']],
    ['v2', ['docker', 'compose']],
  ] as const) {
    describe(`Compose ${version}`, () => {
      let installed = true;
      before(async () => {
        if (version === 'v2') installed = (await run(command[0], [command[1], 'version'], { env: { PATH: BASE_PATH } })).code === 0;
      });
      const needsCompose = (t: { skip: (message: string) => void }): boolean => {
        if (!installed) t.skip('Compose v2 (docker compose) is not installed: Debian 12 does not package it');
        return installed;
      };

      it('reads it in a fresh clone with no .env: every setting empty (regcache defaults), the image ports and volumes', async (t) => {
        if (!needsCompose(t)) return;
        await rm(path.join(project, '.env'), { force: true });
        const c = await config(command);
        const env = c.services.regcache.environment;
        assert.equal(env.REGISTRIES, '');
        for (const name of IMAGE_VARIABLES) assert.ok(!(name in env), `${name} stays the image's`);
        assert.deepEqual(volumeTargets(c), ['ca:/ca', 'cache:/docker_mirror_cache']);
      });

      it("takes a .env's settings, never npm start's PORT, MIRROR_PORT, CA_DIR and CACHE_DIR", async (t) => {
        if (!needsCompose(t)) return;
        // .env.example with npm start's lines uncommented, as its header tells npm start users to do.
        const example = await readFile(path.join(ROOT, '.env.example'), 'utf8');
        const dotenv = example
          .replace(/^#((?:PORT|CA_DIR|MIRROR_PORT|CACHE_DIR)=.*)$/gm, '$1')
          .replace(/^REGISTRIES=.*$/m, 'REGISTRIES=registry.internal:5000');
        for (const name of IMAGE_VARIABLES) assert.match(dotenv, new RegExp(`^${name}=`, 'm'), `.env.example still offers ${name} for npm start`);
        await writeFile(path.join(project, '.env'), dotenv);
        const c = await config(command);
        const env = c.services.regcache.environment;
        assert.equal(env.REGISTRIES, 'registry.internal:5000', 'the settings of .env reach the container');
        assert.equal(env.CACHE_MAX_SIZE, '32g');
        for (const name of IMAGE_VARIABLES) assert.ok(!(name in env), `${name} stays the image's`);
        assert.deepEqual(volumeTargets(c), ['ca:/ca', 'cache:/docker_mirror_cache']);
      });
    });
  }

  it('passes every variable regcache reads but the image four, and nothing else of its own', async () => {
    const file = parse(await readFile(path.join(ROOT, 'docker-compose.yaml'), 'utf8')) as ComposeConfig;
    const passed = Object.keys(file.services.regcache.environment);
    // Aliases (no_proxy for NO_PROXY) are not passed: the setting's own name is.
    const expected: string[] = SETTING_NAMES.filter((n) => !IMAGE_VARIABLES.includes(n));
    assert.deepEqual(expected.filter((n) => !passed.includes(n)).sort(), [], 'variables .env could not set for the container');
    assert.deepEqual(
      passed.filter((n) => !expected.includes(n)).sort(),
      ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'],
      'only the S3 credentials besides regcache own',
    );
    for (const name of passed) assert.equal(file.services.regcache.environment[name], `\${${name}:-}`, `${name} by interpolation, empty when unset`);
  });
});
