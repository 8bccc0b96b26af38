// Allowlisted CONNECT targets: answer 200, terminate TLS with a leaf certificate for the host, and hand
// the decrypted socket to an HTTP/1.1 server; the socket carries the origin its CONNECT named, so each
// request on it knows which host it was meant for without asking anyone.
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import type { Logger } from '../telemetry/log.js';
import type { LeafCertificates } from '../tls/leaf-certificates.js';
import { formatAuthority, type ConnectTarget } from './connect-target.js';
import { CONNECT_ESTABLISHED, refuseSocket } from './socket-refusal.js';
import { errorMessage } from '../telemetry/error-message.js';

// The alerts a TLS client sends when it does not accept the certificate it was shown (OpenSSL's wording).
const REJECTED_OUR_CERTIFICATE = /alert (unknown ca|bad certificate|certificate unknown|certificate required)/i;

/** A decrypted connection, and the origin its CONNECT named. */
export class InterceptedSocket extends tls.TLSSocket {
  constructor(
    client: Duplex,
    options: tls.TLSSocketOptions,
    /** "https://host[:port]" (the port only when not 443), as URL writes it. */
    readonly origin: string,
  ) {
    super(client, options);
  }
}

export class TlsInterceptor {
  constructor(
    private readonly leaves: LeafCertificates,
    private readonly server: http.Server,
    private readonly log: Logger,
    private readonly handshakeTimeoutMs: number, // CLIENT_HEADERS_TIMEOUT: the handshake comes before the head
  ) {}

  intercept(client: Duplex, head: Buffer, target: ConnectTarget): void {
    let context: tls.SecureContext;
    try {
      context = this.leaves.contextFor(target.host);
    } catch (err) {
      this.log.error({ host: target.host, error: errorMessage(err) }, 'minting a leaf certificate failed');
      refuseSocket(client, 500);
      return;
    }
    client.write(CONNECT_ESTABLISHED);
    if (head.length > 0) client.unshift(head);
    const authority = formatAuthority(target.host, target.port);
    const socket = new InterceptedSocket(
      client,
      {
        isServer: true,
        secureContext: context,
        // Only HTTP/1.1 inside: clients that offer h2 (Go, curl) fall back to it.
        ALPNProtocols: ['http/1.1'],
      },
      new URL(`https://${authority}`).origin, // URL drops :443 itself
    );
    // A client that never finishes the handshake must not hold the socket forever (slowloris).
    const handshake = setTimeout(() => socket.destroy(new Error('TLS handshake timed out')), this.handshakeTimeoutMs);
    let secure = false;
    socket.once('secure', () => {
      secure = true;
      clearTimeout(handshake);
    });
    socket.once('close', () => clearTimeout(handshake));
    const clientAddress = (client as Partial<net.Socket>).remoteAddress;
    socket.once('error', (err) => {
      if (secure) {
        // After the handshake: the client went away, or regcache cut a response (its request line says why).
        this.log.debug({ host: authority, client: clientAddress, error: err.message }, 'client socket error');
        socket.destroy();
        return;
      }
      // Handshake failures (client does not trust the CA, non-TLS bytes) end here with a log line.
      const line: Record<string, unknown> = { host: authority, client: clientAddress, error: err.message };
      if (REJECTED_OUR_CERTIFICATE.test(err.message))
        line.hint = "the client does not trust regcache's CA: install GET /ca.crt in its trust store and restart it";
      this.log.warn(line, 'TLS interception failed');
      socket.destroy();
    });
    this.server.emit('connection', socket);
  }
}
