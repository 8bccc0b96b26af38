// `regcache serve` (the default command): loads the configuration, starts the one process, or the primary
// and (in forked processes running this same command) the workers, and stops them on SIGTERM/SIGINT.
import cluster from 'node:cluster';
import { Option, type Command } from 'commander';
import { CacheDirInUseError } from '../admin/control-socket.js';
import { ConfigError, loadConfig } from '../config/config.js';
import { fail } from './exit.js';
import { errorMessage, errorCode } from '../telemetry/error-message.js';

export function addServeCommand(program: Command): void {
  program
    .command('serve', { isDefault: true })
    .description('Run the proxy (the default command). Every option can also be set by its environment variable.')
    .option('-p, --port <port>', 'listening port (PORT, default 3128)')
    .option('--ca-dir <dir>', 'where ca.crt and ca.key live (CA_DIR, default ./certs)')
    .option('--cache-dir <dir>', 'the content store (CACHE_DIR, default ./data/cache)')
    .addOption(
      new Option('--connect-to <HOST:PORT:ADDR:PORT>', "connect to ADDR:PORT when the upstream is HOST:PORT (CONNECT_TO; curl's syntax; repeatable)").argParser(
        (value: string, previous: string[] = []) => [...previous, value],
      ),
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
      // The logger first (its warnings handler sees what loading the server may warn), then the server. Both
      // are loaded here, not at the top: every other command and --help would load them for nothing.
      const [{ createLogger }, { logProcessWarnings }, { logProcessCrashes }] = await Promise.all([
        import('../telemetry/log.js'),
        import('../telemetry/process-warnings.js'),
        import('../telemetry/process-crashes.js'),
      ]);
      const log = createLogger(config.logLevel, config.logFormat === null ? undefined : config.logFormat === 'pretty', workerId);
      logProcessWarnings(log);
      logProcessCrashes(log);
      const [{ startProxy }, { StartupError }, { startPrimary }, { startWorker }, { CaError }] = await Promise.all([
        import('../assembly/proxy.js'),
        import('../assembly/startup-checks.js'),
        import('../process/primary.js'),
        import('../process/worker.js'),
        import('../tls/certificate-authority.js'),
      ]);
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
        else log.fatal({ error: errorMessage(err), code: errorCode(err) }, 'startup failed');
        process.exit(1);
      }
    });
}
