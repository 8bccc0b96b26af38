// Hosts off the allowlist: a byte-for-byte tunnel, never decrypted. One log line when it closes.
import type { Duplex } from 'node:stream';
import type { Logger } from '../telemetry/log.js';
import { DestinationRefusedError } from '../upstream/destination-policy.js';
import type { Dialer } from '../upstream/dialer.js';
import { formatAuthority, type ConnectTarget } from './connect-target.js';
import { ReusedBufferCopy } from './reused-buffer-copy.js';
import { CONNECT_ESTABLISHED, refuseSocket } from './socket-refusal.js';
import { errorMessage } from '../telemetry/error-message.js';

export class Tunnels {
  active = 0;

  constructor(
    private readonly dialer: Dialer,
    private readonly log: Logger,
  ) {}

  async open(client: Duplex, head: Buffer, target: ConnectTarget): Promise<void> {
    const started = Date.now();
    const authority = formatAuthority(target.host, target.port);
    // Downloads (upstream to client) are the bulk of a tunnel: copied through one reused buffer where the
    // dialer can read into it (a direct connection), else piped.
    const down = this.dialer.usesProxyFor(target.host, target.port) ? null : new ReusedBufferCopy(client);
    let upstream;
    try {
      upstream = await this.dialer.connect(target.host, target.port, down?.onread);
    } catch (err) {
      if (err instanceof DestinationRefusedError) {
        this.log.warn({ tunnel: authority, reason: err.reason }, 'tunnel refused');
        refuseSocket(client, 403, err.message);
        return;
      }
      // The cause stays in the log: "connection refused" against "timed out" would tell a port scan
      // which ports are open, closed or filtered.
      this.log.warn({ tunnel: authority, error: errorMessage(err) }, 'tunnel failed');
      refuseSocket(client, 502);
      return;
    }
    if (client.destroyed) {
      upstream.destroy();
      return;
    }
    this.active++;
    let up = 0;
    let piped = 0; // bytes down when piped
    client.write(CONNECT_ESTABLISHED);
    if (head.length > 0) {
      up += head.length;
      upstream.write(head);
    }
    client.on('data', (chunk: Buffer) => (up += chunk.length));
    client.pipe(upstream);
    if (down) down.start(upstream);
    else {
      upstream.on('data', (chunk: Buffer) => (piped += chunk.length));
      upstream.pipe(client);
    }
    let closed = 0;
    let error: string | undefined;
    const onClose = () => {
      if (++closed !== 2) return;
      this.active--;
      this.log.info(
        { tunnel: authority, bytesUp: up, bytesDown: down ? down.bytes : piped, ms: Date.now() - started, ...(error ? { error } : {}) },
        'tunnel closed',
      );
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
