// tier: unit
// Where regcache connects and who may use it, decided in-process against fakes (fast): the destination
// policy on resolved addresses, the Dialer that applies it (names resolving to loopback, operator routes,
// the upstream proxy), ALLOWED_CLIENTS, and the configuration syntax behind them.
import assert from 'node:assert/strict';
import net from 'node:net';
import os from 'node:os';
import { after, before, describe, it } from 'node:test';
import { ConfigError, loadConfig, parseDestination, portAllowed, type DestinationRule } from '../src/config/config.js';
import type { IncomingMessage } from 'node:http';
import { AllowedClients } from '../src/doors/allowed-clients.js';
import type { Logger } from '../src/telemetry/log.js';
import { DestinationPolicy, DestinationRefusedError } from '../src/upstream/destination-policy.js';
import { Dialer } from '../src/upstream/dialer.js';

const rules = (...items: string[]): DestinationRule[] => items.map((i) => parseDestination(i)!);
const policy = (allow: string[] = [], deny: string[] = []) =>
  new DestinationPolicy({ allow: rules(...allow), deny: rules(...deny), localAddresses: () => ['127.0.0.1', '::1', '192.0.2.2', 'fe80::1%eth0'] });

describe('destination policy', () => {
  it('refuses the host itself, link-local, unspecified and multicast addresses, in every spelling', () => {
    const p = policy();
    for (const address of [
      '127.0.0.1',
      '127.0.0.2',
      '::1',
      '::ffff:127.0.0.1',
      '0.0.0.0',
      '::',
      '169.254.169.254',
      'fe80::1',
      '224.0.0.1',
      'ff02::1',
      '255.255.255.255',
      '192.0.2.2',
    ]) {
      assert.notEqual(p.refusal(address, address, 443), null, address);
    }
    assert.match(p.refusal('169.254.169.254', '169.254.169.254', 80)!, /link-local/);
    assert.match(p.refusal('192.0.2.2', '192.0.2.2', 22)!, /this host's own addresses/);
  });

  it('lets public and private ranges through: internal registries live in 10/8', () => {
    const p = policy();
    for (const address of ['8.8.8.8', '10.1.2.3', '172.17.0.2', '192.168.1.10', '2001:db8::1', 'fd12::7'])
      assert.equal(p.refusal(address, address, 443), null, address);
  });

  it('allows what ALLOW_DESTINATIONS lists, by address, range, name and port', () => {
    const p = policy(['127.0.0.1:5000', '127.0.0.8/29', 'registry.local', '[::1]:5001']);
    assert.equal(p.refusal('127.0.0.1', '127.0.0.1', 5000), null);
    assert.notEqual(p.refusal('127.0.0.1', '127.0.0.1', 5001), null, 'only the listed port');
    assert.equal(p.refusal('127.0.0.9', '127.0.0.9', 22), null);
    assert.equal(p.refusal('registry.local', '127.0.0.1', 8080), null, 'a listed name may resolve to loopback');
    assert.notEqual(p.refusal('other.local', '127.0.0.1', 8080), null);
    assert.equal(p.refusal('::1', '::1', 5001), null);
  });

  it('never connects to its own listeners, even where the operator allows the address', () => {
    const p = policy(['127.0.0.0/8', '192.0.2.2']);
    p.listeningPorts.add(3128);
    assert.equal(p.refusal('127.0.0.1', '127.0.0.1', 8080), null);
    for (const address of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '0.0.0.0', '192.0.2.2'])
      assert.match(p.refusal(address, address, 3128)!, /own listener/, address);
    assert.equal(p.refusal('10.0.0.1', '10.0.0.1', 3128), null, 'another host on the same port is not regcache');
  });

  it('refuses what DENY_DESTINATIONS lists; an explicit ALLOW_DESTINATIONS entry still wins', () => {
    const p = policy(['10.0.0.5:5000'], ['10.0.0.0/8', 'metadata.internal']);
    assert.match(p.refusal('10.9.9.9', '10.9.9.9', 443)!, /DENY_DESTINATIONS/);
    assert.match(p.refusal('metadata.internal', '8.8.8.8', 80)!, /DENY_DESTINATIONS/);
    assert.equal(p.refusal('10.0.0.5', '10.0.0.5', 5000), null);
  });

  it('judges names it cannot resolve (through UPSTREAM_PROXY) by literal and by localhost', () => {
    const p = policy([], ['*.corp.example']);
    assert.match(p.refusalOfName('localhost', 443)!, /loopback/);
    assert.match(p.refusalOfName('x.localhost', 443)!, /loopback/);
    assert.match(p.refusalOfName('169.254.169.254', 80)!, /link-local/);
    for (const spelling of ['2130706433', '127.1', '0x7f.0.0.1', '0177.0.0.1', '0x7f000001'])
      assert.match(p.refusalOfName(spelling, 443)!, /loopback/, spelling);
    assert.match(p.refusalOfName('2852039166', 80)!, /link-local/, '169.254.169.254 as one number');
    assert.equal(p.refusalOfName('1password.com', 443), null);
    assert.equal(p.refusalOfName('123.example', 443), null);
    assert.match(p.refusalOfName('a.corp.example', 443)!, /DENY_DESTINATIONS/);
    assert.equal(p.refusalOfName('registry.example', 443), null);
  });
});

describe("destination policy, edge by edge (killing the policy group's surviving mutants)", () => {
  it('names its refusals: the error, unspecified, multicast and broadcast', () => {
    const p = policy();
    const err = new DestinationRefusedError('x:1', 'why');
    assert.equal(err.name, 'DestinationRefusedError');
    assert.match(err.message, /does not connect to x:1: why/);
    assert.match(p.refusal('0.0.0.0', '0.0.0.0', 443)!, /unspecified/);
    assert.match(p.refusal('224.0.0.1', '224.0.0.1', 443)!, /multicast or broadcast/);
    assert.match(p.refusal('255.255.255.255', '255.255.255.255', 443)!, /multicast or broadcast/);
  });

  it('counts loopback as this host, and link-local or multicast as not, with no interface addresses known', () => {
    const p = new DestinationPolicy({ allow: rules('127.0.0.0/8', '169.254.0.0/16', '224.0.0.0/4'), deny: [], localAddresses: () => [] });
    p.listeningPorts.add(3128);
    assert.match(p.refusal('127.0.0.1', '127.0.0.1', 3128)!, /own listener/);
    assert.equal(p.refusal('169.254.1.1', '169.254.1.1', 3128), null, 'link-local is a neighbour, not this host');
    assert.equal(p.refusal('224.0.0.1', '224.0.0.1', 3128), null);
  });

  it('uses the interface addresses it is given, and reads them again only after a while', () => {
    let reads = 0;
    const p = new DestinationPolicy({ allow: [], deny: [], localAddresses: () => (reads++, ['203.0.113.5', 'fe80::9%eth0']) });
    assert.match(p.refusal('203.0.113.5', '203.0.113.5', 443)!, /this host's own addresses/);
    assert.equal(p.refusal('203.0.113.6', '203.0.113.6', 443), null);
    for (let i = 0; i < 5; i++) p.refusal('8.8.8.8', '8.8.8.8', 443);
    assert.equal(reads, 1, 'read once, not per connection');
  });

  it("reads this host's real interface addresses by default", () => {
    const p = new DestinationPolicy({ allow: [], deny: [] });
    const own = Object.values(os.networkInterfaces())
      .flat()
      .map((a) => a?.address)
      .find((a) => a && net.isIPv4(a) && !a.startsWith('127.'));
    if (!own) return assert.match(p.refusal('127.0.0.1', '127.0.0.1', 443)!, /loopback/); // a machine with lo only
    assert.match(p.refusal(own, own, 443)!, /this host's own addresses/, own);
  });

  it('judges an IPv6 literal as an address before resolution', () => {
    const p = policy();
    assert.match(p.refusalOfName('::1', 443)!, /loopback/);
    assert.match(p.refusalOfName('fe80::1', 443)!, /link-local/);
    assert.equal(p.refusalOfName('2001:db8::1', 443), null);
  });

  it('denies a name when any one DENY_DESTINATIONS rule matches, and a name rule is not a suffix rule', () => {
    const p = policy([], ['metadata.internal', '*.corp.example']);
    assert.equal(p.refusalOfName('metadata.internal', 80), 'listed in DENY_DESTINATIONS');
    assert.equal(p.refusalOfName('a.corp.example', 80), 'listed in DENY_DESTINATIONS');
    assert.equal(p.refusalOfName('xmetadata.internal', 80), null, 'an exact name does not match a longer one');
    assert.equal(p.refusalOfName('corp.example', 80), null, '*.corp.example is subdomains only');
  });
});

describe('dialer and destination policy', () => {
  let server: net.Server;
  let port: number;
  let accepted = 0;
  before(async () => {
    server = net.createServer((s) => {
      accepted++;
      s.destroy();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  });
  after(() => server.close());

  const dialer = (opts: { allow?: string[]; resolve?: (host: string) => Promise<string[]>; connectTo?: string; proxyPort?: number }) =>
    new Dialer({
      connectTo: opts.connectTo ? loadConfig({ CONNECT_TO: opts.connectTo }).connectTo : [],
      upstreamProxy: opts.proxyPort ? { host: '127.0.0.1', port: opts.proxyPort, authorization: null, display: '' } : null,
      noProxy: [],
      connectTimeoutMs: 2000,
      policy: policy(opts.allow),
      resolve: opts.resolve,
    });

  it('refuses a name that resolves to loopback, naming the address, without connecting', async () => {
    const before = accepted;
    await assert.rejects(
      dialer({ resolve: async () => ['127.0.0.1'] }).connect('rebound.example', port),
      (e: unknown) => e instanceof DestinationRefusedError && /rebound\.example resolves to 127\.0\.0\.1: loopback/.test(e.message),
    );
    assert.equal(accepted, before);
  });

  /** The server's next accepted connection (its 'connection' listener has counted it by then). */
  const nextAccept = (): Promise<void> => new Promise((resolve) => server.once('connection', () => resolve()));

  it('connects to the allowed address of a name that also resolves to a refused one', async () => {
    const before = accepted;
    const accept = nextAccept();
    const socket = await dialer({ allow: ['127.0.0.1'], resolve: async () => ['169.254.169.254', '127.0.0.1'] }).connect('mixed.example', port);
    assert.equal(socket.remoteAddress, '127.0.0.1');
    await accept;
    socket.destroy();
    assert.equal(accepted, before + 1, 'one connection, to the allowed address');
  });

  it("follows the operator's CONNECT_TO route without judging it", async () => {
    const before = accepted;
    const accept = nextAccept();
    // 127.0.0.1 is loopback, which the policy refuses for a name that resolves to it: the route is not judged.
    const socket = await dialer({ connectTo: `registry.test:443:127.0.0.1:${port}` }).connect('registry.test', 443);
    assert.equal(socket.remoteAddress, '127.0.0.1');
    assert.equal(socket.remotePort, port, 'connected to the route, not registry.test:443');
    await accept;
    socket.destroy();
    assert.equal(accepted, before + 1);
  });

  it('refuses a loopback target before asking the upstream proxy', async () => {
    const before = accepted;
    await assert.rejects(dialer({ proxyPort: port }).connect('127.0.0.1', 22), DestinationRefusedError);
    await assert.rejects(dialer({ proxyPort: port }).connect('localhost', 443), DestinationRefusedError);
    assert.equal(accepted, before, 'the proxy was never contacted');
  });
});

describe('ALLOWED_CLIENTS', () => {
  it('admits loopback and the private ranges by default, IPv4-mapped included, and nobody else', () => {
    const clients = new AllowedClients(loadConfig({}).allowedClients);
    for (const a of ['127.0.0.1', '::1', '::ffff:10.1.2.3', '172.20.0.5', '192.168.0.9', 'fd00::2', 'fe80::1']) assert.ok(clients.allows(a), a);
    for (const a of ['8.8.8.8', '::ffff:8.8.8.8', '2001:db8::1', '100.64.0.1', undefined]) assert.ok(!clients.allows(a), String(a));
  });
  it('refuses a request whose connection is already gone without logging a refused client (issue 25 soak)', () => {
    const lines: { level: string; msg: string }[] = [];
    const log = {
      warn: (_o: unknown, msg: string) => lines.push({ level: 'warn', msg }),
      debug: (_o: unknown, msg: string) => lines.push({ level: 'debug', msg }),
    };
    const clients = new AllowedClients(loadConfig({}).allowedClients);
    const gone = { socket: { remoteAddress: undefined }, method: 'GET' } as unknown as IncomingMessage;
    assert.equal(clients.admits(gone, log as unknown as Logger, 'proxy'), false, 'still refused');
    const outside = { socket: { remoteAddress: '8.8.8.8' }, method: 'GET' } as unknown as IncomingMessage;
    assert.equal(clients.admits(outside, log as unknown as Logger, 'proxy'), false);
    assert.deepEqual(
      lines.map((l) => l.level),
      ['debug', 'warn'],
      'only the client with an address is a refusal worth a warning',
    );
  });
  it('opens to anyone with "any"', () => {
    assert.ok(new AllowedClients(loadConfig({ ALLOWED_CLIENTS: 'any' }).allowedClients).allows('8.8.8.8'));
  });
});

describe('destination and client configuration', () => {
  it('parses hosts, addresses, ranges and ports', () => {
    assert.deepEqual(parseDestination('Registry.Local:5000'), { host: 'registry.local', range: null, port: 5000 });
    assert.deepEqual(parseDestination('*.corp.example'), { host: '*.corp.example', range: null, port: null });
    assert.deepEqual(parseDestination('10.0.0.0/8:443'), { host: null, range: { address: '10.0.0.0', prefix: 8, family: 'ipv4' }, port: 443 });
    assert.deepEqual(parseDestination('[::1]:5000'), { host: null, range: { address: '::1', prefix: 128, family: 'ipv6' }, port: 5000 });
    assert.deepEqual(parseDestination('fd00::/8'), { host: null, range: { address: 'fd00::', prefix: 8, family: 'ipv6' }, port: null });
    for (const bad of ['bad host', '10.0.0.0/33', 'a:99999', '[x]:1', 'a:b:c']) assert.equal(parseDestination(bad), null, bad);
  });
  it('reads port lists with ranges, and refuses nonsense naming the variable', () => {
    const c = loadConfig({ TUNNEL_PORTS: '443 8443 9000-9100' });
    assert.ok(portAllowed(c.tunnelPorts, 9050) && portAllowed(c.tunnelPorts, 8443) && !portAllowed(c.tunnelPorts, 22));
    assert.ok(portAllowed(loadConfig({}).tunnelPorts, 443) && !portAllowed(loadConfig({}).tunnelPorts, 80), 'default: 443 only');
    assert.ok(portAllowed(loadConfig({}).forwardPorts, 80) && !portAllowed(loadConfig({}).forwardPorts, 25), "default: squid's Safe_ports");
    for (const [variable, value] of [
      ['TUNNEL_PORTS', '0'],
      ['FORWARD_PORTS', '90-80'],
      ['ALLOWED_CLIENTS', '10.0.0.0/40'],
      ['ALLOW_DESTINATIONS', 'bad host!'],
      ['DENY_DESTINATIONS', '1.2.3.4:0'],
    ] as const) {
      assert.throws(
        () => loadConfig({ [variable]: value }),
        (e: unknown) => e instanceof ConfigError && e.message.startsWith(`${variable}=`),
        `${variable}=${value}`,
      );
    }
  });
});
