// Sets of IP addresses and CIDR ranges: ALLOWED_CLIENTS, ALLOW_/DENY_DESTINATIONS and the ranges regcache
// never connects to by default. Matching is Node's BlockList, which also matches an IPv4-mapped IPv6
// address (::ffff:127.0.0.1) against IPv4 ranges, so the mapped form is no way around a rule.
import net from 'node:net';

export interface AddressRange {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
}

/** "10.0.0.0/8", "fd00::/8", "192.0.2.7", "::1" (a lone address is its own /32 or /128); null otherwise. */
export function parseAddressRange(text: string): AddressRange | null {
  const [address = '', bits, extra] = text.split('/');
  if (extra !== undefined) return null;
  const version = net.isIP(address);
  if (version === 0) return null;
  const max = version === 4 ? 32 : 128;
  const prefix = bits === undefined ? max : /^\d{1,3}$/.test(bits) ? Number(bits) : NaN;
  if (!(prefix >= 0 && prefix <= max)) return null;
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

export class AddressRanges {
  private readonly list = new net.BlockList();

  constructor(ranges: Iterable<AddressRange>) {
    for (const r of ranges) this.list.addSubnet(r.address, r.prefix, r.family);
  }

  static of(...cidrs: string[]): AddressRanges {
    return new AddressRanges(cidrs.map((c) => parseAddressRange(c)!));
  }

  has(address: string): boolean {
    const version = net.isIP(address);
    return version !== 0 && this.list.check(address, version === 4 ? 'ipv4' : 'ipv6');
  }
}

/** "::ffff:10.0.0.1" -> "10.0.0.1": how a dual-stack listener reports IPv4 peers. */
export function plainAddress(address: string): string {
  return address.startsWith('::ffff:') && net.isIPv4(address.slice(7)) ? address.slice(7) : address;
}
