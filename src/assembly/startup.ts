// What a server does once before it serves, whatever the number of processes (the one process, or the
// primary before it forks its workers): check the configuration against the machine, load or create the
// CA, and warn about settings an operator should know about. Workers skip it: the primary did it for them.
import path from 'node:path';
import type { Config } from '../config/config.js';
import type { Logger } from '../telemetry/log.js';
import { checkStartup } from './startup-checks.js';
import { loadOrCreateCa, type CertificateAuthority } from '../tls/certificate-authority.js';
import { DestinationPolicy } from '../upstream/destination-policy.js';

const CA_EXPIRY_WARNING_MS = 30 * 86_400_000;

/** Checks, the CA (created if there is none), the warnings; `warnings` are the doors' (auth/doors.ts). */
export async function prepareStartup(config: Config, log: Logger, warnings: string[]): Promise<CertificateAuthority> {
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
  warnAboutRefusedRegistries(config, log);
  return ca;
}

/**
 * An allowlisted registry that is itself a refused destination (REGISTRIES=localhost:5000) would fail on
 * every fill with a 403: say so at startup, naming the fix, unless CONNECT_TO routes it.
 */
function warnAboutRefusedRegistries(config: Config, log: Logger): void {
  const destinations = new DestinationPolicy({ allow: config.allowDestinations, deny: config.denyDestinations });
  for (const entry of config.registries) {
    const m = /^([^*:][^:]*)(?::(\d+))?$/.exec(entry);
    if (!m) continue;
    const [, host = '', port = '443'] = m;
    if (config.connectTo.some((rule) => (rule.host === '' || rule.host === host) && (rule.port === null || rule.port === Number(port)))) continue;
    const reason = destinations.refusalOfName(host, Number(port));
    if (reason) log.warn({ registry: entry, reason }, 'an allowlisted registry is a refused destination: list it in ALLOW_DESTINATIONS to reach it');
  }
}
