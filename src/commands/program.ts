// The regcache command line as one commander program: every command (a module of commands/ each), the
// shared exit codes and the .env hook. cli.ts runs it; tests read its help in process.
import path from 'node:path';
import { Command } from 'commander';
import { addCacheCommands } from './cache.js';
import { addCaCommands } from './ca.js';
import { addPrefetchCommand } from './prefetch.js';
import { addServeCommand } from './serve.js';
import { addStatusCommand } from './status.js';
import { applyEnvFile, EnvFileError } from './env-file.js';
import { VERSION } from '../config/version.js';
import { fail } from './exit.js';

export function regcacheProgram(): Command {
  const program = new Command();
  program
    .name('regcache')
    .description('A caching, TLS-intercepting forward proxy for container registries.')
    .version(VERSION)
    .addHelpText(
      'after',
      '\nExamples:\n  $ regcache                      # serve with defaults (port 3128, ./certs, ./data/cache)\n  $ regcache ca export > ca.crt   # the CA clients must trust\n  $ regcache cache du             # how full the cache is\n  $ regcache status               # hit ratio, bytes saved, fills, errors of the running server',
    );

  // commander's own usage errors (an unknown option or command, a missing or extra argument, a command
  // group without its subcommand) exit 2 as ours do (commands/exit.ts), after commander printed the
  // message; --help and --version still exit 0. Set before the commands, which inherit it.
  program.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2));

  // Before any command reads its configuration (never for --help or --version): the working directory's
  // .env fills what the environment leaves unset, so every command sees the same settings as `serve`.
  program.hook('preAction', () => {
    try {
      applyEnvFile(process.env, path.resolve('.env'));
    } catch (err) {
      if (err instanceof EnvFileError) fail(err.message);
      throw err;
    }
  });

  addServeCommand(program);
  addCaCommands(program);
  addCacheCommands(program);
  addPrefetchCommand(program);
  addStatusCommand(program);
  return program;
}
