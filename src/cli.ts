#!/usr/bin/env node
// The regcache command line.
import cluster from 'node:cluster';
import path from 'node:path';
import { Command, Option } from 'commander';
import { addCacheCommands } from './cache-commands.js';
import { addPrefetchCommand } from './prefetch-command.js';
import { ConfigError, loadConfig } from './config.js';
import { applyEnvFile, EnvFileError } from './env-file.js';
import { createLogger } from './log.js';
import { startPrimary } from './primary.js';
import { startProxy } from './proxy.js';
import { startWorker } from './worker.js';
import { CacheDirInUseError } from './admin/control-socket.js';
import { StartupError } from './startup-checks.js';
import { CaError, readCaCertificate } from './tls/certificate-authority.js';
import { VERSION } from './version.js';
import { fail } from './cli-exit.js';

const program = new Command();
program
  .name('regcache')
  .description('A caching, TLS-intercepting forward proxy for container registries.')
  .version(VERSION)
  .addHelpText('after', '\nExamples:\n  $ regcache                      # serve with defaults (port 3128, ./certs, ./data/cache)\n  $ regcache ca export > ca.crt   # the CA clients must trust\n  $ regcache cache du             # how full the cache is');

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

program
  .command('serve', { isDefault: true })
  .description('Run the proxy (the default command). Every option can also be set by its environment variable.')
  .option('-p, --port <port>', 'listening port (PORT, default 3128)')
  .option('--ca-dir <dir>', 'where ca.crt and ca.key live (CA_DIR, default ./certs)')
  .option('--cache-dir <dir>', 'the content store (CACHE_DIR, default ./data/cache)')
  .addOption(
    new Option('--connect-to <HOST:PORT:ADDR:PORT>', "connect to ADDR:PORT when the upstream is HOST:PORT (CONNECT_TO; curl's syntax; repeatable)")
      .argParser((value: string, previous: string[] = []) => [...previous, value]),
  )
  .option('--upstream-proxy <url>', 'http://[user:pass@]host:port that carries all upstream traffic (UPSTREAM_PROXY)')
  .option('--log-level <level>', 'fatal, error, warn, info, debug, trace or silent (LOG_LEVEL, default info)')
  .addHelpText(
    'after',
    `
Examples:
  $ regcache serve
  $ PORT=3128 REGISTRIES="quay.io ghcr.io" regcache
  $ regcache serve --connect-to registry-1.docker.io:443:10.0.0.5:5000`,
  )
  .action(async (options: { port?: string; caDir?: string; cacheDir?: string; connectTo?: string[]; upstreamProxy?: string; logLevel?: string }) => {
    let config;
    try {
      config = loadConfig(process.env, options);
    } catch (err) {
      if (err instanceof ConfigError) fail(err.message);
      throw err;
    }
    // WORKERS > 1: this process is the primary, or (forked by it, running this same command) a worker.
    const role = config.workers === 1 ? 'single' : cluster.isPrimary ? 'primary' : 'worker';
    const workerId = role === 'single' ? undefined : role === 'primary' ? 0 : cluster.worker!.id;
    const log = createLogger(config.logLevel, undefined, workerId);
    let stopping = false;
    const stopWith = (close: (graceMs?: number) => Promise<void>) => (signal: string, graceMs?: number) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      void close(graceMs).then(() => process.exit(0));
    };
    try {
      if (role === 'primary') {
        const tree = await startPrimary(config, log);
        const stop = stopWith(tree.close);
        // A second signal ends every process at once.
        const onSignal = (signal: string) => (stopping ? (tree.kill(), process.exit(1)) : stop(signal));
        process.on('SIGTERM', () => onSignal('SIGTERM'));
        process.on('SIGINT', () => onSignal('SIGINT'));
        return;
      }
      let stop: ((signal: string, graceMs?: number) => void) | null = null;
      // The primary's order to drain (its SIGTERM) arrives as a message; a signal of the worker's own too.
      const proxy = role === 'worker' ? await startWorker(config, log, workerId!, (graceMs) => stop?.('primary', graceMs)) : await startProxy(config, log);
      stop = stopWith(proxy.close);
      process.once('SIGTERM', () => stop!('SIGTERM'));
      process.once('SIGINT', () => stop!('SIGINT'));
    } catch (err) {
      if (err instanceof ConfigError) fail(err.message);
      if (err instanceof CaError) log.fatal({ error: err.message }, 'cannot load the CA');
      else if (err instanceof StartupError) log.fatal({ variable: err.variable, error: err.message }, 'startup failed');
      else if (err instanceof CacheDirInUseError) log.fatal({ variable: 'CACHE_DIR', error: err.message }, 'startup failed');
      else log.fatal({ error: (err as Error).message, code: (err as NodeJS.ErrnoException).code }, 'startup failed');
      process.exit(1);
    }
  });

function configOrFail(overrides: { caDir?: string }): ReturnType<typeof loadConfig> {
  try {
    return loadConfig(process.env, overrides);
  } catch (err) {
    if (err instanceof ConfigError) fail(err.message);
    throw err;
  }
}


const ca = program
  .command('ca')
  .description("regcache's CA certificate, which clients must trust.")
  .addHelpText('after', '\nExamples:\n  $ regcache ca path\n  $ regcache ca export > regcache-ca.crt');
ca.command('path')
  .description('print where ca.crt is (CA_DIR/ca.crt); never creates a CA (exit 1 when there is none)')
  .option('--ca-dir <dir>', 'where ca.crt and ca.key live (CA_DIR, default ./certs)')
  .addHelpText('after', '\nExamples:\n  $ regcache ca path\n  $ sudo cp "$(regcache ca path)" /usr/local/share/ca-certificates/regcache.crt')
  .action(async (options: { caDir?: string }) => {
    process.stdout.write((await caCertificateOrFail(options)).certFile + '\n');
  });
ca.command('export')
  .description('print the CA certificate (PEM); never creates a CA (exit 1 when there is none)')
  .option('--ca-dir <dir>', 'where ca.crt and ca.key live (CA_DIR, default ./certs)')
  .addHelpText('after', '\nExamples:\n  $ regcache ca export > regcache-ca.crt\n  $ regcache ca export | ssh node1 "sudo tee /usr/local/share/ca-certificates/regcache.crt"')
  .action(async (options: { caDir?: string }) => {
    process.stdout.write((await caCertificateOrFail(options)).certPem);
  });

/** The CA the server created (a client must trust that one, not a new one made here). */
async function caCertificateOrFail(options: { caDir?: string }): Promise<{ certFile: string; certPem: string }> {
  try {
    return await readCaCertificate(configOrFail(options).caDir);
  } catch (err) {
    if (err instanceof CaError) fail(err.message, 1);
    throw err;
  }
}

addCacheCommands(program);
addPrefetchCommand(program);

await program.parseAsync(process.argv);
