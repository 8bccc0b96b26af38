// tier: unit
// The README's configuration and migration tables and .env.example are written from the settings table
// (`npm run docs:config`, scripts/config-docs.ts): this fails when either file drifts from it, when the
// generated text leaves a variable out, and when the image's ENV and the table disagree.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ENV_EXAMPLE, README, renderConfigurationTables, renderEnvExample, renderMigrationTable, renderReadme } from '../scripts/config-docs.js';
import { readEnvFile } from '../src/commands/env-file.js';
import { RPARDINI_VARIABLES } from '../src/config/rpardini-variables.js';
import { SETTINGS, SETTING_NAMES, type Setting } from '../src/config/settings.js';

const table = SETTINGS as Record<string, Setting<unknown>>;

describe('configuration documents', () => {
  it('README.md is what npm run docs:config writes', async () => {
    const readme = await readFile(README, 'utf8');
    assert.ok(readme === renderReadme(readme), 'README.md differs from src/config/settings.ts: run npm run docs:config');
  });

  it('.env.example is what npm run docs:config writes', async () => {
    assert.ok((await readFile(ENV_EXAMPLE, 'utf8')) === renderEnvExample(), '.env.example differs from src/config/settings.ts: run npm run docs:config');
  });

  it('the README has a row for every variable, with its default', () => {
    const tables = renderConfigurationTables();
    for (const name of SETTING_NAMES) {
      const row = tables.split('\n').find((line) => line.startsWith(`| \`${name}\` |`));
      assert.ok(row, name);
      const d = table[name]!.default;
      if (typeof d === 'string' && table[name]!.defaultText === undefined && d.trim() !== '') assert.ok(row.includes(`\`${d.replace(/\|/g, '\\|')}\``), row);
    }
  });

  it('the migration table names every rpardini variable', () => {
    const migration = renderMigrationTable();
    for (const name of RPARDINI_VARIABLES.flatMap((g) => g.names)) assert.ok(migration.includes(`\`${name}\``), name);
  });

  it('.env.example has a line for every variable: its default, or commented out with the image value or an example', async () => {
    const lines = (await readFile(ENV_EXAMPLE, 'utf8')).split('\n');
    for (const name of SETTING_NAMES) {
      const s = table[name]!;
      const line = lines.find((l) => l.startsWith(`${name}=`) || l.startsWith(`#${name}=`));
      assert.ok(line, name);
      const expected =
        s.image !== undefined
          ? `#${name}=${s.image}`
          : typeof s.default === 'string' && s.default.trim() === s.default
            ? `${name}=${s.default}`
            : `#${name}=${s.example}`;
      assert.equal(line, expected);
    }
    const set = readEnvFile(ENV_EXAMPLE);
    assert.deepEqual(
      SETTING_NAMES.filter((name) => name in set),
      SETTING_NAMES.filter((name) => typeof table[name]!.default === 'string' && table[name]!.image === undefined && table[name]!.default!.trim() !== ''),
      'copied to .env, it sets exactly the defaults',
    );
  });

  it("marks as the image's what the Dockerfile's ENV sets, with its value", async () => {
    const dockerfile = await readFile(path.resolve(import.meta.dirname, '../Dockerfile'), 'utf8');
    const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
    const block = /^ENV ((?:.*\\\n)*.*)$/m.exec(runtime)?.[1] ?? '';
    const env = Object.fromEntries([...block.matchAll(/([A-Z_]+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
    const imageSets = Object.fromEntries(SETTING_NAMES.filter((name) => table[name]!.image !== undefined).map((name) => [name, table[name]!.image]));
    assert.deepEqual(imageSets, Object.fromEntries(Object.entries(env).filter(([name]) => name in table)));
  });
});
