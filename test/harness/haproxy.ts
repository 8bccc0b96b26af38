// A load balancer in front of regcache replicas: Debian's haproxy in TCP mode (a client's CONNECT and the
// TLS inside it go to one replica per connection, round robin), with an HTTP health check on each
// replica's /readyz, as a Kubernetes Service or a cloud balancer would drain a replica that is not ready.
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { freePort } from './ports.js';
import { logTail, spawnDaemon, waitFor, type Daemon } from './proc.js';

export interface Balancer {
  port: number;
  /** http://127.0.0.1:PORT: what clients use as their HTTPS_PROXY. */
  proxyUrl: string;
  daemon: Daemon;
  stop(): Promise<void>;
}

/** haproxy on a free port balancing over `backends` (ports on 127.0.0.1 answering /readyz). */
export async function startBalancer(dir: string, backends: number[]): Promise<Balancer> {
  const port = await freePort();
  const config = path.join(dir, 'haproxy.cfg');
  const log = path.join(dir, 'haproxy.log');
  await writeFile(
    config,
    [
      'global',
      '  maxconn 256',
      'defaults',
      '  mode tcp',
      '  timeout connect 5s',
      '  timeout client 120s',
      '  timeout server 120s',
      'frontend clients',
      `  bind 127.0.0.1:${port}`,
      '  default_backend replicas',
      'backend replicas',
      '  balance roundrobin',
      '  option httpchk GET /readyz',
      ...backends.map((p, i) => `  server r${i} 127.0.0.1:${p} check inter 1s`),
      '',
    ].join('\n'),
  );
  // -db: foreground, no daemon (stop() signals the very process started).
  const daemon = spawnDaemon('haproxy', ['-db', '-f', config], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdoutFile: log });
  await waitFor(
    async () => {
      if (!daemon.isRunning()) throw new Error(`haproxy exited:\n${await logTail(log)}`);
      return new Promise<boolean>((resolve) => {
        const socket = net.connect(port, '127.0.0.1', () => resolve(true)).once('error', () => resolve(false));
        socket.once('connect', () => socket.destroy());
      });
    },
    { timeoutMs: 10_000, what: 'haproxy to listen', intervalMs: 50 },
  );
  return { port, proxyUrl: `http://127.0.0.1:${port}`, daemon, stop: () => daemon.stop(5000) };
}
