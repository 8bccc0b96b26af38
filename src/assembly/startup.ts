// What a server does once before it serves, whatever the number of processes (the one process, or the
// primary before it forks its workers): check the configuration against the machine, load or create the
// CA, and warn about settings an operator should know about. Workers skip it: the primary did it for them.
import net from 'node:net';
import path from 'node:path';
import { describeConfig, type Config } from '../config/config.js';
import type { Logger } from '../telemetry/log.js';
import { checkStartup } from './startup-checks.js';
import { loadOrCreateCa, type CertificateAuthority } from '../tls/certificate-authority.js';
import { DestinationPolicy } from '../upstream/destination-policy.js';
import { matchesNoProxy, resolveAll } from '../upstream/dialer.js';

const CA_EXPIRY_WARNING_MS = 30 * 86_400_000;

/** Checks, the CA (created if there is none), the warnings; `warnings` are the doors' (auth/doors.ts). */
export async function prepareStartup(config: Config, log: Logger, warnings: string[]): Promise<CertificateAuthority> {
  log.debug({ config: describeConfig(config) }, 'configuration');
  warnAboutRetiredVariables(config, log);
  for (const warning of warnings) log.warn(warning);
  await checkStartup(config); // before a CA is created, the spool wiped or a port bound
  const { ca, created, keyPassphrase } = await loadOrCreateCa(config.caDir, config.caKeyPassphrase);
  log.info({ caCert: ca.certFile, created, keyEncrypted: keyPassphrase !== null }, created ? 'created a new CA: clients must trust it' : 'loaded CA');
  if (keyPassphrase === 'rpardini-default') {
    // Said once, at start: the key opened, but with a passphrase anyone can look up.
    log.warn(
      { caKey: path.join(config.caDir, 'ca.key') },
      "ca.key is encrypted and CA_KEY_PASSPHRASE is unset: opened it with rpardini/docker-registry-proxy's published default passphrase, which protects nothing (keep CA_DIR private; set CA_KEY_PASSPHRASE if your key has another)",
    );
  }
  if (ca.notAfter.getTime() - Date.now() < CA_EXPIRY_WARNING_MS) {
    log.warn({ caCert: ca.certFile, notAfter: ca.notAfter.toISOString() }, 'the CA expires soon: replace it and have clients trust the new one');
  }
  if (!config.verifySsl) log.warn('VERIFY_SSL=false: upstream certificates are NOT verified');
  // Names are resolved in the background: a slow resolver must not hold up startup, and a name that does
  // not resolve now fails (and is logged) at its first fill.
  warnAboutRefusedRegistries(config, log).catch((err: unknown) =>
    log.warn({ error: err instanceof Error ? err.message : String(err) }, 'could not check the registries against the destination policy'),
  );
  return ca;
}

/** One warning for each rpardini/docker-registry-proxy variable set here that regcache does not read, naming what replaces it. */
export function warnAboutRetiredVariables(config: Config, log: Logger): void {
  for (const { name, instead } of config.retired) {
    log.warn({ variable: name, instead }, `${name} is a setting of rpardini/docker-registry-proxy that regcache does not read: ${instead}`);
  }
}

/**
 * An allowlisted registry that is itself a refused destination (REGISTRIES=localhost:5000, or a name that
 * resolves to this host) would fail on every fill with a 403: say so at startup, naming the fix, unless
 * CONNECT_TO routes it. A name is judged as the dialer will judge it: on the addresses it resolves to, or,
 * through UPSTREAM_PROXY (which resolves names itself), by the name alone.
 */
export async function warnAboutRefusedRegistries(config: Config, log: Logger, resolve: (host: string) => Promise<string[]> = resolveAll): Promise<void> {
  const destinations = new DestinationPolicy({ allow: config.allowDestinations, deny: config.denyDestinations });
  const checks = config.registries.map(async (entry) => {
    const m = /^([^*:][^:]*)(?::(\d+))?$/.exec(entry);
    if (!m) return;
    const [, host = '', portText = '443'] = m;
    const port = Number(portText);
    if (config.connectTo.some((rule) => (rule.host === '' || rule.host === host) && (rule.port === null || rule.port === port))) return;
    let refused = destinations.refusalOfName(host, port);
    let address: string | undefined;
    if (!refused && !net.isIP(host) && !(config.upstreamProxy && !matchesNoProxy(config.noProxy, host, port))) {
      let addresses: string[];
      try {
        addresses = await resolve(host);
      } catch {
        return; // does not resolve (yet): its fills will say so
      }
      for (const a of addresses) {
        refused = destinations.refusal(host, a, port);
        if (refused) {
          address = a;
          break;
        }
      }
    }
    if (refused) {
      log.warn({ registry: entry, address, reason: refused }, 'an allowlisted registry is a refused destination: list it in ALLOW_DESTINATIONS to reach it');
    }
  });
  await Promise.all(checks);
}
