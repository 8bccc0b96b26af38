// The two lines a person reads at startup: what listens where (with the status page), and what a client
// must do next (trust the CA, set HTTPS_PROXY, or use the mirror). Plain sentences in `msg`: the
// `listening` line carries the same ports as fields for machines.
import os from 'node:os';
import type { ServerPorts } from '../admin/server-ports.js';
import type { Config } from '../config/config.js';
import { VERSION } from '../config/version.js';
import type { Logger } from '../telemetry/log.js';

export function logStartupSummary(log: Logger, config: Config, ports: ServerPorts, caCertFile: string): void {
  const host = os.hostname();
  const proxy = `http://${host}:${ports.proxy}`;
  const mirror = ports.mirror && `${ports.mirror.tls ? 'https' : 'http'}://${host}:${ports.mirror.port}`;
  const admin = ports.admin === null ? proxy : `http://${host}:${ports.admin}`;
  const where = [`proxy ${proxy}`, mirror && `registry mirror ${mirror}`, `status page ${admin}/status`].filter(Boolean).join(', ');
  log.info(`regcache ${VERSION} ready${config.workers > 1 ? ` (${config.workers} workers)` : ''}: ${where}`);
  const credentials = config.proxyAuth ? 'USER:PASSWORD@' : '';
  log.info(
    `clients: trust the CA ${caCertFile} (or curl ${proxy}/ca.crt), then set HTTPS_PROXY=http://${credentials}${host}:${ports.proxy}` +
      (mirror ? `; or, with no CA, use the mirror ${mirror} (curl ${admin}/setup/containerd)` : ''),
  );
}

/** How a fleet replica names itself on its status page: the host (a pod's name) and the process. */
export function replicaName(): string {
  return `${os.hostname()} (pid ${process.pid})`;
}
