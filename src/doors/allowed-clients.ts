// ALLOWED_CLIENTS: who may use regcache at all, on every listener (proxy, mirror, admin). A client from
// elsewhere gets 403 before anything else runs: no authentication, no classification, no connection out.
// The default is squid's localnet (loopback and the private ranges): a proxy that lands on a public
// address by accident is not an open proxy.
import type { IncomingMessage } from 'node:http';
import { AddressRanges, plainAddress, type AddressRange } from '../reference/address-ranges.js';
import type { Logger } from '../telemetry/log.js';

export const CLIENT_REFUSED = 'this address may not use regcache (ALLOWED_CLIENTS)';

export class AllowedClients {
  private readonly ranges: AddressRanges | null; // null: anyone

  constructor(allowed: AddressRange[] | 'any') {
    this.ranges = allowed === 'any' ? null : new AddressRanges(allowed);
  }

  allows(address: string | undefined): boolean {
    return this.ranges === null || (address !== undefined && this.ranges.has(plainAddress(address)));
  }

  /** Whether the request's client may go on; logs the refusal (the caller answers 403). */
  admits(req: IncomingMessage, log: Logger, where: string): boolean {
    const client = req.socket.remoteAddress;
    if (this.allows(client)) return true;
    // No address: the connection closed before its request was handled (a client that reset, a health
    // check that hung up). Refused all the same, but nobody was turned away: no warning without a client.
    if (client === undefined) log.debug({ where, method: req.method }, 'client gone before its request was handled');
    else log.warn({ client, where, method: req.method }, 'client refused (ALLOWED_CLIENTS)');
    return false;
  }
}
