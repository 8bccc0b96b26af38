import net from 'node:net';

/**
 * A TCP port on loopback nothing listens on, for a child process to bind. The port is released before
 * returning, so another process could take it before the child binds it:
 *
 * - alone (one test file), the kernel picks it: a tiny race, acceptable;
 * - under test/harness/run-tests.ts, files run side by side, so each running file gets a band of ports of
 *   its own (REGCACHE_TEST_PORTS=LOW-HIGH, below the kernel's ephemeral range, which outgoing connections
 *   and port 0 draw from) and hands them out in turn: two files never pick the same port, and a port
 *   is never handed out twice in one file.
 */
export async function freePort(): Promise<number> {
  const band = portBand();
  if (band === null) return kernelPort();
  for (let tries = 0; tries < band.high - band.low; tries++) {
    const port = band.low + (nextInBand++ % (band.high - band.low));
    if (await bindable(port)) return port;
  }
  throw new Error(`freePort: no free port in REGCACHE_TEST_PORTS=${band.low}-${band.high}`);
}

// Where the next search starts: a random point, so a file that restarts in the same band does not start
// from the ports the one before it used.
let nextInBand = Math.floor(Math.random() * 1_000_000);

function portBand(): { low: number; high: number } | null {
  const m = /^(\d+)-(\d+)$/.exec(process.env.REGCACHE_TEST_PORTS ?? '');
  if (m === null) return null;
  const [low, high] = [Number(m[1]), Number(m[2])];
  return low > 0 && high > low && high <= 65536 ? { low, high } : null;
}

function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once('error', () => resolve(false));
    // Every IPv4 address: a listener on any of them would make a child's bind fail.
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

function kernelPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      if (addr === null || typeof addr === 'string') {
        server.close();
        reject(new Error('freePort: unexpected server address'));
        return;
      }
      const { port } = addr;
      server.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}
