// A slow upstream link: a network namespace joined to this one by a veth pair, whose namespace end
// shapes what leaves it, so that a server inside (the upstream registry) answers at `rateMbit` with
// `delayMs` of added latency; requests into it go at full speed (they are small).
// With netem in the kernel that is one qdisc (`netem delay rate`). Kernels without it (CONFIG_NET_SCH_NETEM
// unset, as on the VMs this was written on) get `tbf` for the rate and, for the delay, a relay in this
// process that holds every chunk coming back from the server for delayMs before passing it on: each
// request/response exchange (TCP and TLS handshakes included) then waits about one delay, as over a link
// with that round trip, but TCP's own window growth does not see it. `shaping` says which one is in use.
// Names carry this process's pid so concurrent runs do not clash; remove() undoes everything, and so does
// process exit when a failure skips it (the namespace's processes are killed by the harness first).
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { run } from '../../test/harness/proc.js';

export interface SlowLinkOptions {
  rateMbit: number;
  delayMs: number;
}

export interface SlowLink {
  ns: string;
  /** The far end, where servers inside listen. */
  nsIp: string;
  /** Prefix a command with this to run it inside the namespace. */
  prefix: string[];
  /** What shapes the link, for reports. */
  shaping: string;
  /** Where clients reach a server listening on nsIp:port with the delay applied. */
  expose(port: number): Promise<{ address: string; port: number }>;
  remove(): Promise<void>;
}

async function ip(args: string[]): Promise<void> {
  const res = await run('ip', args);
  if (res.code !== 0) throw new Error(`ip ${args.join(' ')}: ${res.stderr.trim()}`);
}

/** A /30 in 10.150-199.x.0 that no interface here uses yet (other runs, other benches and tests). */
async function freeSubnet(): Promise<string> {
  const used = (await run('ip', ['-o', '-4', 'addr', 'show'])).stdout;
  for (let i = 0; i < 500; i++) {
    const n = process.pid + i * 7919;
    const base = `10.${150 + (n % 50)}.${Math.floor(n / 50) % 250}`;
    if (!used.includes(` ${base}.`)) return base;
  }
  throw new Error('no free 10.150-199.x.0/30 subnet for the slow link');
}

/**
 * Accepts on 127.0.0.1 and connects each client to target; what the target sends back is written to the
 * client delayMs after it arrived (equal timeouts fire in order, so the byte order holds).
 */
async function startDelayRelay(target: { host: string; port: number }, delayMs: number): Promise<{ port: number; close(): void }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
    }
    const close = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close);
    upstream.on('error', close);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      setTimeout(() => {
        // A slow client: stop reading from the server until it catches up (the disk is not the queue here).
        if (!client.destroyed && !client.write(chunk)) {
          upstream.pause();
          client.once('drain', () => upstream.resume());
        }
      }, delayMs);
    });
    upstream.on('end', () => setTimeout(() => client.end(), delayMs));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close() {
      server.close();
      for (const socket of sockets) socket.destroy(); // idle keep-alive connections would keep node running
    },
  };
}

export async function createSlowLink(o: SlowLinkOptions): Promise<SlowLink> {
  const ns = `rcpb${process.pid}`; // at most 11 characters: the veth names stay under IFNAMSIZ (15)
  const hostIf = `${ns}a`;
  const nsIf = `${ns}b`;
  const base = await freeSubnet();
  const [hostIp, nsIp] = [`${base}.1`, `${base}.2`];
  const relays: Array<{ close(): void }> = [];

  const removeSync = (): void => {
    spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    spawnSync('ip', ['link', 'del', hostIf], { stdio: 'ignore' });
  };
  process.once('exit', removeSync);
  const remove = async (): Promise<void> => {
    for (const relay of relays) relay.close();
    process.removeListener('exit', removeSync);
    await run('ip', ['netns', 'del', ns]);
    await run('ip', ['link', 'del', hostIf]); // gone with the namespace already, unless a process held it
  };

  let shaping: string;
  let relayed: boolean;
  try {
    await ip(['netns', 'add', ns]);
    await ip(['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', nsIf]);
    await ip(['link', 'set', nsIf, 'netns', ns]);
    await ip(['addr', 'add', `${hostIp}/30`, 'dev', hostIf]);
    await ip(['link', 'set', hostIf, 'up']);
    const inNs = (args: string[]): Promise<void> => ip(['netns', 'exec', ns, 'ip', ...args]);
    await inNs(['addr', 'add', `${nsIp}/30`, 'dev', nsIf]);
    await inNs(['link', 'set', nsIf, 'up']);
    await inNs(['link', 'set', 'lo', 'up']);
    const tc = (qdisc: string[]) => run('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', nsIf, 'root', ...qdisc]);
    // A limit far above the bandwidth-delay product (200 Mbit/s x 30 ms is ~500 full-size packets): the
    // default of 1000 packets would drop TSO bursts and measure TCP recovery instead of the link.
    const netem = ['netem', 'delay', `${o.delayMs}ms`, 'rate', `${o.rateMbit}mbit`, 'limit', '100000'];
    const netemRes = await tc(netem);
    if (netemRes.code === 0) {
      shaping = netem.slice(0, 5).join(' ');
      relayed = false;
    } else if (/unknown/i.test(netemRes.stderr)) {
      // The burst covers one 64 KiB TSO segment several times over; the latency bound only sizes the queue.
      const tbf = ['tbf', 'rate', `${o.rateMbit}mbit`, 'burst', '256kb', 'latency', '100ms'];
      const tbfRes = await tc(tbf);
      if (tbfRes.code !== 0) throw new Error(`tc qdisc add ${tbf.join(' ')}: ${tbfRes.stderr.trim()}`);
      shaping = `${tbf.slice(0, 3).join(' ')} + a ${o.delayMs} ms delay relay (this kernel has no netem)`;
      relayed = true;
    } else {
      throw new Error(`tc qdisc add ${netem.join(' ')}: ${netemRes.stderr.trim()}`);
    }
  } catch (err) {
    await remove();
    throw err;
  }
  return {
    ns,
    nsIp,
    prefix: ['ip', 'netns', 'exec', ns],
    shaping,
    async expose(port) {
      if (!relayed) return { address: nsIp, port };
      const relay = await startDelayRelay({ host: nsIp, port }, o.delayMs);
      relays.push(relay);
      return { address: '127.0.0.1', port: relay.port };
    },
    remove,
  };
}
