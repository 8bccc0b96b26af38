// `regcache ca path|export`: the CA the server created, which clients must trust; never creates one.
import type { Command } from 'commander';
import { configOrFail } from './config-or-fail.js';
import { fail } from './exit.js';

export function addCaCommands(program: Command): void {
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
    .addHelpText(
      'after',
      '\nExamples:\n  $ regcache ca export > regcache-ca.crt\n  $ regcache ca export | ssh node1 "sudo tee /usr/local/share/ca-certificates/regcache.crt"',
    )
    .action(async (options: { caDir?: string }) => {
      process.stdout.write((await caCertificateOrFail(options)).certPem);
    });

  /** The CA the server created (a client must trust that one, not a new one made here). */
  async function caCertificateOrFail(options: { caDir?: string }): Promise<{ certFile: string; certPem: string }> {
    // Loaded here: node-forge is most of what the module costs, and other commands and --help need none of it.
    const { CaError, readCaCertificate } = await import('../tls/certificate-authority.js');
    try {
      return await readCaCertificate(configOrFail(options).caDir);
    } catch (err) {
      if (err instanceof CaError) fail(err.message, 1);
      throw err;
    }
  }
}
