// Which client an attempt counts against for throttling: its IP address as the socket reports it, with
// IPv4-mapped IPv6 ("::ffff:192.0.2.1", what a dual-stack listener reports for IPv4 clients) shown as
// IPv4, and IPv6 addresses cut to their /64 (one host usually holds a whole /64, so counting single
// addresses would give it 2^64 fresh starts).
import net from 'node:net';

export function clientAddress(socket: { remoteAddress?: string | undefined }): string {
  const address = socket.remoteAddress ?? '';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (net.isIPv6(address)) return `${expandIpv6(address).slice(0, 4).join(':')}::/64`;
  return address || 'unknown';
}

/** The eight groups of an IPv6 address, "::" expanded, without a zone ("%eth0"). */
function expandIpv6(address: string): string[] {
  const [head = '', tail] = address.replace(/%.*$/, '').toLowerCase().split('::');
  const left = head === '' ? [] : head.split(':');
  const right = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return groups.map((g) => (g.includes('.') ? g : parseInt(g, 16).toString(16))); // "0db8" and "db8" alike
}
