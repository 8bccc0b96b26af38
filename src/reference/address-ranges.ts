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

/**
 * The IPv4 address inet_aton reads in a name such as "2130706433", "127.1" or "0x7f.0.0.1", which
 * resolvers (getaddrinfo, an upstream proxy's) take as an address, not a name; null for a real name.
 */
export function numericIpv4(name: string): string | null {
  const parts = name.split('.');
  if (parts.length > 4 || !parts.every((p) => /^(0x[0-9a-f]+|0[0-7]*|[1-9]\d*)$/i.test(p))) return null;
  const values = parts.map((p) => (/^0x/i.test(p) ? parseInt(p, 16) : /^0\d/.test(p) ? parseInt(p, 8) : Number(p)));
  const last = values.pop()!;
  if (values.some((v) => v > 255) || last >= 256 ** (4 - values.length)) return null;
  let n = last;
  values.forEach((v, i) => (n += v * 256 ** (3 - i)));
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}
