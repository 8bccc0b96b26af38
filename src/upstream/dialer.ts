// Opens TCP connections to upstream hosts for both cache fills and tunnels, applying CONNECT_TO routing
// and chaining through UPSTREAM_PROXY (an HTTP CONNECT proxy) unless NO_PROXY exempts the host. Every
// connection that is not the operator's own route (a CONNECT_TO target, the upstream proxy) is checked
// against the DestinationPolicy on the address it resolves to, and made to that very address.
import dns from 'node:dns/promises';
import net from 'node:net';
import type { ConnectToRule, UpstreamProxy } from '../config/config.js';
import { DestinationRefusedError, type DestinationPolicy } from './destination-policy.js';
import { errorMessage, errorCode } from '../telemetry/error-message.js';

export interface DialerOptions {
  connectTo: ConnectToRule[];
  upstreamProxy: UpstreamProxy | null;
  noProxy: string[];
  connectTimeoutMs: number;
  policy: DestinationPolicy;
  /** Name resolution (getaddrinfo by default, so /etc/hosts counts); a test may fake it. */
  resolve?: (host: string) => Promise<string[]>;
}

export class DialError extends Error {
  constructor(
    message: string,
    readonly cause_: 'connect' | 'timeout' | 'proxy',
  ) {
    super(message);
    this.name = 'DialError';
  }
}

const MAX_PROXY_RESPONSE_HEAD = 16 * 1024;

export class Dialer {
  constructor(private readonly opts: DialerOptions) {}

  /** Where a connection for host:port really goes (curl's --connect-to semantics: first match wins). */
  route(host: string, port: number): { host: string; port: number } {
    const rule = this.connectToRule(host, port);
    return rule ? { host: rule.toHost || host, port: rule.toPort ?? port } : { host, port };
  }

  private connectToRule(host: string, port: number): ConnectToRule | undefined {
    const h = host.toLowerCase();
    return this.opts.connectTo.find((rule) => (rule.host === '' || rule.host === h) && (rule.port === null || rule.port === port));
  }

  usesProxyFor(host: string, port: number): boolean {
    return this.opts.upstreamProxy !== null && !matchesNoProxy(this.opts.noProxy, host, port);
  }

  /**
   * A connected TCP socket to host:port (after routing), possibly tunnelled through the upstream proxy.
   * `onread` (net's: every read into one buffer) applies to direct connections only, never through
   * UPSTREAM_PROXY, whose CONNECT answer is read from the socket as a stream (see usesProxyFor).
   */
  async connect(host: string, port: number, onread?: net.OnReadOpts): Promise<net.Socket> {
    const routed = this.connectToRule(host, port) !== undefined; // the operator's own route: not checked
    const target = this.route(host, port);
    const proxy = this.opts.upstreamProxy;
    if (!proxy || matchesNoProxy(this.opts.noProxy, host, port)) {
      return routed ? this.tcp(target.host, target.port, onread) : this.checkedTcp(host, port, onread);
    }
    const refusal = routed ? null : this.opts.policy.refusalOfName(host.toLowerCase(), port);
    if (refusal) throw new DestinationRefusedError(authority(host, port), refusal);
    const socket = await this.tcp(proxy.host, proxy.port);
    try {
      await this.proxyConnect(socket, proxy, target.host, target.port);
      return socket;
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  /** Resolves host, refuses it if no address may be connected to, else connects to an allowed address. */
  private async checkedTcp(host: string, port: number, onread?: net.OnReadOpts): Promise<net.Socket> {
    let addresses: string[];
    try {
      addresses = net.isIP(host) ? [host] : await (this.opts.resolve ?? resolveAll)(host);
    } catch (err) {
      throw new DialError(`cannot resolve ${host}: ${errorCode(err) ?? errorMessage(err)}`, 'connect');
    }
    const refusals = addresses.map((address) => this.opts.policy.refusal(host.toLowerCase(), address, port));
    const allowed = addresses.filter((_, i) => refusals[i] === null);
    if (allowed.length === 0) {
      const first = addresses[0] === host ? refusals[0]! : `${host} resolves to ${addresses[0]}: ${refusals[0]}`;
      throw new DestinationRefusedError(authority(host, port), first);
    }
    let failure: unknown;
    for (const address of allowed) {
      try {
        return await this.tcp(address, port, onread);
      } catch (err) {
        failure = err; // the next address may answer (a name with A and AAAA records, one unreachable)
      }
    }
    throw failure;
  }

  private tcp(host: string, port: number, onread?: net.OnReadOpts): Promise<net.Socket> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(onread ? { host, port, onread } : { host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new DialError(`connect to ${host}:${port} timed out`, 'timeout'));
      }, this.opts.connectTimeoutMs);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        socket.setNoDelay(true);
        resolve(socket);
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(new DialError(`connect to ${host}:${port} failed: ${err.message}`, 'connect'));
      });
    });
  }

  private proxyConnect(socket: net.Socket, proxy: UpstreamProxy, host: string, port: number): Promise<void> {
    const target = authority(host, port);
    const lines = [`CONNECT ${target} HTTP/1.1`, `Host: ${target}`];
    if (proxy.authorization) lines.push(`Proxy-Authorization: ${proxy.authorization}`);
    socket.write(lines.join('\r\n') + '\r\n\r\n');
    return new Promise((resolve, reject) => {
      let head = Buffer.alloc(0);
      const timer = setTimeout(() => fail(`upstream proxy did not answer CONNECT ${target}: timed out`, 'timeout'), this.opts.connectTimeoutMs);
      const fail = (message: string, cause: 'proxy' | 'timeout' = 'proxy') => {
        cleanup();
        reject(new DialError(message, cause));
      };
      const onData = (chunk: Buffer) => {
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > MAX_PROXY_RESPONSE_HEAD) fail('upstream proxy sent an oversized response head');
          return;
        }
        cleanup();
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(head.subarray(0, end).toString('latin1'));
        if (!status || status[1] !== '200') {
          reject(new DialError(`upstream proxy refused CONNECT ${target}: ${status ? status[1] : 'malformed response'}`, 'proxy'));
          return;
        }
        const rest = head.subarray(end + 4);
        if (rest.length > 0) {
          // Bytes a server-speaks-first origin sent right after the 200: keep them for the tunnel's pipe
          // (pause, or the still-flowing socket would emit them to no listener).
          socket.pause();
          socket.unshift(rest);
        }
        resolve();
      };
      const onError = (err: Error) => fail(`upstream proxy connection failed: ${err.message}`);
      const onClose = () => fail('upstream proxy closed the connection during CONNECT');
      const cleanup = () => {
        clearTimeout(timer);
        socket.off('data', onData);
        socket.off('error', onError);
        socket.off('close', onClose);
      };
      socket.on('data', onData);
      socket.once('error', onError);
      socket.once('close', onClose);
    });
  }
}

function authority(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Every address a name resolves to, as the system resolver gives them (what a dial tries). */
export async function resolveAll(host: string): Promise<string[]> {
  return (await dns.lookup(host, { all: true, verbatim: true })).map((a) => a.address);
}

// NO_PROXY as curl reads it: "*" matches all; "example.com" and ".example.com" match the domain and its
// subdomains; an entry with ":port" matches only that port; IP literals match exactly.
export function matchesNoProxy(entries: string[], host: string, port: number): boolean {
  const h = host.toLowerCase().replace(/^\[|\]$/g, '');
  return entries.some((raw) => {
    if (raw === '*') return true;
    let domain = raw;
    let entryPort: string | undefined;
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(raw);
    if (bracketed) [, domain = '', entryPort] = bracketed;
    else if (raw.split(':').length === 2) [domain = '', entryPort] = raw.split(':');
    if (entryPort && Number(entryPort) !== port) return false;
    domain = domain.replace(/^\*?\./, '');
    return h === domain || h.endsWith('.' + domain);
  });
}
