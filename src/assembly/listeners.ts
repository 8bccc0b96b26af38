// Where a serving process's connections come from. The one process listens on PORT, MIRROR_PORT and
// ADMIN_PORT itself; a worker is handed its connections by the primary, which listens
// (process/connection-handoff.ts). serveProxy takes either through `Listeners`.
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { ServerPorts } from '../admin/server-ports.js';
import type { Config } from '../config/config.js';
import type { Logger } from '../telemetry/log.js';
import { listenError } from './startup-checks.js';

export type Door = 'proxy' | 'mirror' | 'admin';

export interface Listeners {
  /** `server` takes the door's connections from now on; resolves with the port they arrive on. */
  take(door: Door, server: net.Server): Promise<number>;
  /** Every door is taken: connections may come (a worker says so to its primary). */
  open(): void;
  /** No new connections: the process drains (its servers close; a worker tells its primary). */
  close(): void;
}

const VARIABLE: Record<Door, string> = { proxy: 'PORT', mirror: 'MIRROR_PORT', admin: 'ADMIN_PORT' };

/** The configured port of a door. */
function configuredPort(config: Config, door: Door): number {
  return door === 'proxy' ? config.port : door === 'mirror' ? config.mirrorPort : config.adminPort;
}

/** What `ports` answers: the doors' ports as bound, with whether the mirror speaks TLS. */
export function serverPorts(config: Config, bound: { proxy: number; mirror: number | null; admin: number | null }): ServerPorts {
  return {
    proxy: bound.proxy,
    mirror: bound.mirror === null ? null : { port: bound.mirror, tls: config.mirrorTls !== null || config.mirrorHostname !== null },
    admin: bound.admin,
  };
}

/** The one process: each server listens on its own port. */
export function ownListeners(config: Config, log: Logger): Listeners {
  return {
    async take(door, server) {
      await listen(server, door, config);
      // After listen, an accept failure (EMFILE) must be logged, not crash the process.
      server.on('error', (err: NodeJS.ErrnoException) => log.error({ door, error: err.message, code: err.code }, 'listener error'));
      return (server.address() as AddressInfo).port;
    },
    open: () => undefined,
    close: () => undefined, // closing the servers stops their accepting
  };
}

/** Dual-stack on "::" unless IPv6 is disabled or missing, then 0.0.0.0; a failure names its variable. */
export async function listen(server: net.Server, door: Door, config: Config): Promise<void> {
  const port = configuredPort(config, door);
  try {
    await bind(server, port, config.disableIpv6);
  } catch (err) {
    throw listenError(VARIABLE[door], port, err);
  }
}

function bind(server: net.Server, port: number, disableIpv6: boolean): Promise<void> {
  const attempt = (host: string) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ port, host, ipv6Only: false }, () => {
        server.off('error', reject);
        resolve();
      });
    });
  if (disableIpv6) return attempt('0.0.0.0');
  return attempt('::').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EAFNOSUPPORT' || err.code === 'EADDRNOTAVAIL') return attempt('0.0.0.0');
    throw err;
  });
}
