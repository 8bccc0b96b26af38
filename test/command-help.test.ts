// tier: unit
// Every command's --help, read from the program cli.ts runs (commands/program.ts), in process: usage and
// examples, and an example of the options users reach for. test/cli.test.ts runs --help through the real
// command line for two of them (the exit code and stdout).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Command } from 'commander';
import { regcacheProgram } from '../src/commands/program.js';

/** What `regcache COMMAND... --help` prints. */
function helpOf(command: string[]): string {
  let cmd: Command = regcacheProgram();
  for (const name of command) {
    const sub = cmd.commands.find((c) => c.name() === name);
    assert.ok(sub, `regcache ${command.join(' ')}: no command ${name}`);
    cmd = sub;
  }
  let out = '';
  cmd.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) });
  cmd.outputHelp();
  return out;
}

describe('regcache --help, every command', () => {
  for (const command of [
    [],
    ['serve'],
    ['ca'],
    ['ca', 'path'],
    ['ca', 'export'],
    ['cache'],
    ['cache', 'ls'],
    ['cache', 'du'],
    ['cache', 'rm'],
    ['cache', 'prune'],
    ['cache', 'verify'],
    ['prefetch'],
    ['status'],
  ]) {
    it(`regcache ${command.join(' ')} --help shows usage and examples`, () => {
      const help = helpOf(command);
      assert.match(help, new RegExp(`^Usage: regcache${command.map((c) => ` ${c}`).join('')}\\b`));
      assert.match(help, /Examples:\n {2}\$ regcache/);
    });
  }

  for (const [command, flag] of [
    [['cache', 'ls'], '--images'],
    [['cache', 'ls'], '--registry'],
    [['cache', 'rm'], '--dry-run'],
    [['cache', 'prune'], '--dry-run'],
    [['prefetch'], '--cache-dir'],
    [['prefetch'], '--mirror'],
  ] as const) {
    it(`regcache ${command.join(' ')} --help has an example of ${flag}`, () => {
      const help = helpOf([...command]);
      assert.match(help.slice(help.indexOf('Examples:')), new RegExp(`\\$ regcache ${command.join(' ')} .*${flag}`));
    });
  }
});
