// Where regcache may connect on a client's behalf: tunnels, plain-HTTP forwards, cache fills, and the
// redirects and token realms those lead to. Never into the host itself (loopback, its own addresses, its
// own listeners), its link-local neighbourhood (cloud metadata at 169.254.169.254), unspecified or
// multicast addresses, unless the operator lists the destination in ALLOW_DESTINATIONS; never to what
// DENY_DESTINATIONS lists. Private ranges stay reachable: internal registries live there. The decision
// is made on the address actually connected to, after resolution, so a name that resolves (or rebinds)
// to 127.0.0.1 is refused like the literal. CONNECT_TO targets and UPSTREAM_PROXY are the operator's
// own routes and are not checked here (the Dialer knows which connections those are).
import os from 'node:os';
import net from 'node:net';
import { AddressRanges, numericIpv4, plainAddress } from '../reference/address-ranges.js';
import type { DestinationRule } from '../config/config.js';

export class DestinationRefusedError extends Error {
  constructor(
    readonly destination: string, // host:port as asked for
    readonly reason: string,
  ) {
    super(`regcache does not connect to ${destination}: ${reason}`);
    this.name = 'DestinationRefusedError';
  }
}

// squid's to_localhost and the other addresses that are never a remote registry. Connecting to 0.0.0.0 or
// :: reaches this host on Linux, as loopback does.
const SPECIAL: Array<{ ranges: AddressRanges; reason: string; thisHost: boolean }> = [
  { ranges: AddressRanges.of('127.0.0.0/8', '::1'), reason: 'loopback', thisHost: true },
  { ranges: AddressRanges.of('0.0.0.0/8', '::'), reason: 'unspecified (this host)', thisHost: true },
  { ranges: AddressRanges.of('169.254.0.0/16', 'fe80::/10'), reason: 'link-local (cloud metadata lives here)', thisHost: false },
  { ranges: AddressRanges.of('224.0.0.0/4', '255.255.255.255', 'ff00::/8'), reason: 'multicast or broadcast', thisHost: false },
];
const LOCAL_ADDRESS_TTL_MS = 10_000;

export interface DestinationPolicyOptions {
  allow: DestinationRule[];
  deny: DestinationRule[];
  /** The host's own interface addresses (os.networkInterfaces() by default; a test may fake them). */
  localAddresses?: () => string[];
}

export class DestinationPolicy {
  /** regcache's own listening ports, on every local address (it listens on all of them). */
  readonly listeningPorts = new Set<number>();
  private readonly allow: CompiledRule[];
  private readonly deny: CompiledRule[];
  private readonly readLocal: () => string[];
  private local: { addresses: Set<string>; readAt: number } = { addresses: new Set(), readAt: -Infinity };

  constructor(opts: DestinationPolicyOptions) {
    this.allow = opts.allow.map(compile);
    this.deny = opts.deny.map(compile);
    this.readLocal = opts.localAddresses ?? interfaceAddresses;
  }

  /** Why host:port, resolved to address, may not be connected to; null when it may. */
  refusal(host: string, address: string, port: number): string | null {
    const ip = plainAddress(address);
    const special = SPECIAL.find((s) => s.ranges.has(ip));
    const thisHost = special?.thisHost === true || this.localAddresses().has(ip);
    // Never itself, allowed or not: a CONNECT to its own port nests tunnels until descriptors run out.
    if (thisHost && this.listeningPorts.has(port)) return "regcache's own listener";
    if (this.allow.some((rule) => rule(host, ip, port))) return null;
    if (this.deny.some((rule) => rule(host, ip, port))) return 'listed in DENY_DESTINATIONS';
    if (special) return special.reason;
    if (thisHost) return "one of this host's own addresses";
    return null;
  }

  /**
   * Before resolution, for connections through UPSTREAM_PROXY (which resolves names itself): IP literals,
   * and names a resolver reads as one ("2130706433", "127.1"), are judged as addresses, and "localhost"
   * names (RFC 6761) as loopback.
   */
  refusalOfName(host: string, port: number): string | null {
    if (net.isIP(host)) return this.refusal(host, host, port);
    const numeric = numericIpv4(host);
    if (numeric) return this.refusal(host, numeric, port);
    if (host === 'localhost' || host.endsWith('.localhost')) return this.refusal(host, '127.0.0.1', port);
    if (this.deny.some((rule) => rule(host, '', port))) return 'listed in DENY_DESTINATIONS';
    return null;
  }

  private localAddresses(): Set<string> {
    const now = Date.now();
    // Interfaces come and go (containers, VPNs); re-read now and then, not on every connection.
    if (now - this.local.readAt > LOCAL_ADDRESS_TTL_MS) this.local = { addresses: new Set(this.readLocal().map(plainAddress)), readAt: now };
    return this.local.addresses;
  }
}

type CompiledRule = (host: string, address: string, port: number) => boolean;

function compile(rule: DestinationRule): CompiledRule {
  const portMatches = (port: number) => rule.port === null || rule.port === port;
  if (rule.range) {
    const ranges = new AddressRanges([rule.range]);
    return (_host, address, port) => portMatches(port) && ranges.has(address);
  }
  const name = rule.host!;
  const suffix = name.startsWith('*.') ? name.slice(1) : null;
  return (host, _address, port) => portMatches(port) && (suffix ? host.endsWith(suffix) : host === name);
}

function interfaceAddresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .map((a) => a?.address.replace(/%.*$/, '') ?? '') // fe80::1%eth0: the zone is not part of the address
    .filter(Boolean);
}
