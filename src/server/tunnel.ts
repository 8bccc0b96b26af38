// Hosts off the allowlist: a byte-for-byte tunnel, never decrypted. One log line when it closes.
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';
import type { Dialer } from '../upstream/dialer.js';
import { formatAuthority, type ConnectTarget } from './connect-target.js';

export class Tunnels {
  active = 0;

  constructor(
    private readonly dialer: Dialer,
    private readonly log: Logger,
  ) {}

  async open(client: Duplex, head: Buffer, target: ConnectTarget): Promise<void> {
    const started = Date.now();
    const authority = formatAuthority(target.host, target.port);
    let upstream;
    try {
      upstream = await this.dialer.connect(target.host, target.port);
    } catch (err) {
      this.log.warn({ tunnel: authority, error: (err as Error).message }, 'tunnel failed');
      if (client.writable) client.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    this.active++;
    let up = 0;
    let down = 0;
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) {
      up += head.length;
      upstream.write(head);
    }
    client.on('data', (chunk: Buffer) => (up += chunk.length));
    upstream.on('data', (chunk: Buffer) => (down += chunk.length));
    client.pipe(upstream);
    upstream.pipe(client);
    let closed = 0;
    let error: string | undefined;
    const onClose = () => {
      if (++closed !== 2) return;
      this.active--;
      this.log.info({ tunnel: authority, bytesUp: up, bytesDown: down, ms: Date.now() - started, ...(error ? { error } : {}) }, 'tunnel closed');
    };
    // Either side closing ends the other; errors are noted, never thrown.
    client.on('error', (err) => {
      error ??= `client: ${err.message}`;
      upstream.destroy();
    });
    upstream.on('error', (err) => {
      error ??= `upstream: ${err.message}`;
      client.destroy();
    });
    client.once('close', () => {
      upstream.destroy();
      onClose();
    });
    upstream.once('close', () => {
      client.destroy();
      onClose();
    });
  }
}
