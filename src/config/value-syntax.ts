// The syntaxes settings are written in (nginx sizes and times, booleans, ports, host lists, address ranges,
// curl's --connect-to, URLs): each parses a value or throws a ConfigError naming the variable, the value
// and an example (config-error.ts). Which variable uses which syntax is the table's (settings.ts).
import path from 'node:path';
import { parseAddressRange, type AddressRange } from '../reference/address-ranges.js';
import { ConfigError, invalid, type ValueSite } from './config-error.js';

export interface ConnectToRule {
  host: string; // lower-case; '' matches any host
  port: number | null; // null matches any port
  toHost: string; // '' keeps the host
  toPort: number | null; // null keeps the port
}

export interface UpstreamProxy {
  host: string;
  port: number;
  authorization: string | null; // ready-made "Basic ..." value; never logged
  display: string; // URL with the password redacted
}

/** An ALLOW_/DENY_DESTINATIONS entry: a host name (or *.domain), or an address range; optionally one port. */
export interface DestinationRule {
  host: string | null; // lower-case name, "*.domain" for any depth below domain
  range: AddressRange | null;
  port: number | null; // null: any port
}

export interface PortRange {
  from: number;
  to: number;
}

/** CACHE_STORE=s3://BUCKET[/PREFIX]. */
export interface CacheStore {
  bucket: string;
  prefix: string; // '' or ending in '/'
  display: string; // "s3://bucket/prefix/"
}

export interface RegistryCredentials {
  host: string; // lower-case, optional :port
  user: string;
  password: string; // never logged
}

/** MIRROR_AUTH / ADMIN_AUTH value that leaves the door open even when PROXY_AUTH is set. */
export const NO_AUTH = 'none';

export function splitList(value: string): string[] {
  return value.split(/[\s,]+/).filter((s) => s.length > 0);
}

const SIZE_UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** nginx size syntax: "32g", "500m", "1024k", plain bytes (case-insensitive). */
export function size(value: string, at: ValueSite): number {
  const m = /^(\d+)([kmgt]?)$/i.exec(value);
  const bytes = m ? Number(m[1]) * SIZE_UNITS[m[2]!.toLowerCase()]! : NaN;
  if (!(bytes > 0) || !Number.isSafeInteger(bytes)) throw invalid(at, value, 'a size such as 32g, 500m, 1024k or plain bytes');
  return bytes;
}

const TIME_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
  M: 30 * 86_400_000,
  y: 365 * 86_400_000,
};

/** nginx time syntax: "60d", "12h", "30m", "1h30m", plain seconds; M is 30 days, y 365 days. */
export function duration(value: string, at: ValueSite): number {
  let ms = 0;
  const rest = value.replace(/(\d+)(ms|[smhdwMy]?)/g, (_all, n: string, unit: string) => {
    ms += Number(n) * TIME_UNITS[unit || 's']!;
    return '';
  });
  if (rest !== '' || !(ms > 0) || !Number.isSafeInteger(ms)) throw invalid(at, value, 'a duration such as 60d, 12h, 30m or 1h30m');
  return ms;
}

/** A CLI flag's size (--to-size): the same syntax, the flag named in the error. */
export function parseSize(variable: string, value: string): number {
  return size(value, { name: variable, example: '32g' });
}

/** A CLI flag's duration (--older-than): the same syntax, the flag named in the error. */
export function parseDuration(variable: string, value: string): number {
  return duration(value, { name: variable, example: '60d' });
}

export function bool(value: string, at: ValueSite): boolean {
  const v = value.toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(v)) return true;
  if (['false', '0', 'no', 'off'].includes(v)) return false;
  throw invalid(at, value, 'true or false');
}

export function oneOf<const T extends string>(allowed: readonly T[]): (value: string, at: ValueSite) => T {
  return (value, at) => {
    if (!(allowed as readonly string[]).includes(value)) throw invalid(at, value, `one of ${allowed.join(', ')}`);
    return value as T;
  };
}

/** A TCP port; 0 (a free port, or off: the table says which) is allowed. */
export function port(value: string, at: ValueSite): number {
  const n = /^\d{1,5}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 0 && n <= 65535)) throw invalid(at, value, 'a TCP port 1-65535');
  return n;
}

/** A file or directory, relative to the working directory. */
export function filePath(value: string): string {
  return path.resolve(value);
}

export function regex(value: string, at: ValueSite): RegExp {
  try {
    return new RegExp(value);
  } catch {
    throw invalid(at, value, 'a regular expression');
  }
}

const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A host name or IP literal (IPv6 in brackets when a port follows is handled by the caller). */
export function isValidHost(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(host)) return host.split('.').every((o) => Number(o) <= 255);
  if (host.includes(':')) return /^[0-9a-f:.]+$/i.test(host); // IPv6 literal
  return host.split('.').every((l) => HOST_LABEL.test(l));
}

export function hostName(value: string, at: ValueSite): string {
  if (!isValidHost(value.toLowerCase())) throw invalid(at, value, 'a host name');
  return value.toLowerCase();
}

/** Hosts to intercept: "registry.example.com *.example.org:5000", lower-cased. */
export function hostList(value: string, at: ValueSite): string[] {
  return splitList(value).map((item) => {
    const entry = item.toLowerCase();
    const m = /^(\*\.)?([^:]+)(?::(\d{1,5}))?$/.exec(entry);
    if (!m || !isValidHost(m[2]!) || (m[3] !== undefined && !(Number(m[3]) >= 1 && Number(m[3]) <= 65535))) {
      throw invalid(at, item, 'space- or comma-separated hosts');
    }
    return entry;
  });
}

export function addressRanges(value: string, at: ValueSite): AddressRange[] | 'any' {
  if (value.toLowerCase() === 'any') return 'any';
  return splitList(value).map((item) => {
    const range = parseAddressRange(item);
    if (!range) throw invalid(at, item, 'IP addresses or CIDR ranges, or "any"');
    return range;
  });
}

/** "443", "80 1025-65535": single ports and inclusive ranges. */
export function portRanges(value: string, at: ValueSite): PortRange[] {
  return splitList(value).map((item) => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(item);
    const from = Number(m?.[1]);
    const to = m?.[2] === undefined ? from : Number(m[2]);
    if (!m || !(from >= 1 && to <= 65535 && from <= to)) throw invalid(at, item, 'ports and ranges 1-65535');
    return { from, to };
  });
}

export function portAllowed(ranges: PortRange[], port: number): boolean {
  return ranges.some((r) => port >= r.from && port <= r.to);
}

export function formatPortRange(r: PortRange): string {
  return r.from === r.to ? String(r.from) : `${r.from}-${r.to}`;
}

/** "registry.local:5000", "*.corp.example", "127.0.0.1", "10.0.0.0/8:443", "[::1]:5000", "fd00::/8". */
export function parseDestination(item: string): DestinationRule | null {
  const entry = item.toLowerCase();
  let target = entry;
  let port: string | undefined;
  const bracketed = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(entry);
  if (bracketed) [, target = '', port] = bracketed;
  else if (entry.split(':').length === 2) [target = '', port] = entry.split(':');
  const portNumber = port === undefined ? null : Number(port);
  if (portNumber !== null && !(portNumber >= 1 && portNumber <= 65535)) return null;
  const range = parseAddressRange(target);
  if (range) return { host: null, range, port: portNumber };
  if (bracketed || target.includes(':') || !isValidHost(target.replace(/^\*\./, ''))) return null; // an IPv6 address is a range
  return { host: target, range: null, port: portNumber };
}

export function destinations(value: string, at: ValueSite): DestinationRule[] {
  return splitList(value).map((item) => {
    const rule = parseDestination(item);
    if (!rule) throw invalid(at, item, 'hosts, IP addresses or CIDR ranges, each with an optional :port (IPv6 in brackets)');
    return rule;
  });
}

export function formatDestination(rule: DestinationRule): string {
  const target = rule.host ?? `${rule.range!.address}/${rule.range!.prefix}`;
  if (rule.port === null) return target;
  return rule.range?.family === 'ipv6' ? `[${target}]:${rule.port}` : `${target}:${rule.port}`;
}

// S3's bucket names: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit.
const BUCKET_NAME = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;

/** "s3://bucket", "s3://bucket/some/prefix" (slashes around the prefix do not matter). */
export function cacheStore(value: string, at: ValueSite): CacheStore {
  const m = /^s3:\/\/([^/]+)(?:\/(.*))?$/.exec(value);
  const bucket = m?.[1] ?? '';
  const prefix = (m?.[2] ?? '').replace(/^\/+|\/+$/g, '');
  if (!m || !BUCKET_NAME.test(bucket) || /\/\/|[\x00-\x1f]/.test(prefix)) {
    throw invalid(at, value, 's3://BUCKET or s3://BUCKET/PREFIX (an S3 bucket name: lower-case letters, digits, dots, hyphens)');
  }
  const keyPrefix = prefix === '' ? '' : `${prefix}/`;
  return { bucket, prefix: keyPrefix, display: `s3://${bucket}/${keyPrefix}` };
}

/** An S3 API URL; credentials never go in it (they come from the AWS SDK's chain). */
export function s3Endpoint(value: string, at: ValueSite): string {
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    // reported below
  }
  if (!url || !['http:', 'https:'].includes(url.protocol) || url.username || url.password) {
    throw invalid(at, redactUrl(value), 'an http:// or https:// URL without credentials (those come from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)');
  }
  return value.replace(/\/+$/, '');
}

/** http://[user:pass@]host:port: the password becomes a ready-made header and never appears again. */
export function upstreamProxy(value: string, at: ValueSite): UpstreamProxy {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw invalid(at, redactUrl(value), 'http://[user:pass@]host:port');
  }
  if (url.protocol !== 'http:' || !url.hostname) throw invalid(at, redactUrl(value), 'an http:// URL');
  const user = decodeURIComponent(url.username);
  const pass = decodeURIComponent(url.password);
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return {
    host,
    port: url.port ? Number(url.port) : 80,
    authorization: user || pass ? 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64') : null,
    display: `http://${user ? user + ':***@' : ''}${url.host}`,
  };
}

function redactUrl(value: string): string {
  return value.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/** rpardini's AUTH_REGISTRIES: "host:user:pass host2:user2:pass2"; both delimiters configurable. */
export function registryCredentials(value: string, at: ValueSite, listDelimiter: string, fieldDelimiter: string): RegistryCredentials[] {
  return value
    .split(listDelimiter)
    .map((item) => item.trim())
    .filter(Boolean)
    .map((item, i) => {
      const [host = '', user = '', ...rest] = item.split(fieldDelimiter);
      const password = rest.join(fieldDelimiter); // a password may contain the delimiter
      if (!isValidHost(host.toLowerCase().replace(/:\d+$/, '')) || !user || !password) {
        // The value is never shown: it holds passwords.
        throw new ConfigError(
          at.name,
          `(entry ${i + 1})`,
          `host${fieldDelimiter}user${fieldDelimiter}password entries separated by "${listDelimiter}", e.g. ${at.name}="${at.example}"`,
        );
      }
      return { host: host.toLowerCase(), user, password };
    });
}

// curl's --connect-to syntax: HOST1:PORT1:HOST2:PORT2, any part may be empty; IPv6 in brackets.
export function connectToRules(value: string, at: ValueSite): ConnectToRule[] {
  return splitList(value).map((rule) => {
    const fields = splitConnectTo(rule);
    if (!fields) throw invalid(at, rule, 'HOST:PORT:ADDR:PORT');
    const [host, port, toHost, toPort] = fields;
    const num = (s: string): number | null => (s === '' ? null : Number(s));
    return { host: host.toLowerCase(), port: num(port), toHost, toPort: num(toPort) };
  });
}

function splitConnectTo(rule: string): [string, string, string, string] | null {
  const fields: string[] = [];
  let rest = rule;
  for (let i = 0; i < 4; i++) {
    let field: string;
    if (rest.startsWith('[')) {
      const end = rest.indexOf(']');
      if (end < 0) return null;
      field = rest.slice(1, end);
      rest = rest.slice(end + 1);
    } else {
      const idx = rest.indexOf(':');
      field = idx < 0 ? rest : rest.slice(0, idx);
      rest = idx < 0 ? '' : rest.slice(idx);
    }
    fields.push(field);
    if (i < 3) {
      if (!rest.startsWith(':')) return null;
      rest = rest.slice(1);
    }
  }
  if (rest !== '') return null;
  const [h, p, th, tp] = fields as [string, string, string, string];
  const portOk = (s: string) => s === '' || (/^\d{1,5}$/.test(s) && Number(s) >= 1 && Number(s) <= 65535);
  if (!portOk(p) || !portOk(tp)) return null;
  if ((h !== '' && !isValidHost(h.toLowerCase())) || (th !== '' && !isValidHost(th.toLowerCase()))) return null;
  return [h, p, th, tp];
}
