// Parses the authority of a CONNECT request line ("host:port", "[v6]:port") strictly.
import net from 'node:net';
import { isValidHost } from '../config/config.js';

export interface ConnectTarget {
  host: string; // lower-case, IPv6 without brackets
  port: number;
}

export function parseConnectTarget(authority: string | undefined): ConnectTarget | null {
  if (!authority || authority.length > 300) return null;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(authority);
  if (!m) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  const host = (m[1] ?? m[2] ?? '').toLowerCase().replace(/\.$/, '');
  if (m[1] !== undefined ? !net.isIPv6(host) : !isValidHost(host)) return null;
  return { host, port };
}

export function formatAuthority(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}
