// Answers on a raw client socket (a CONNECT, or a request the HTTP parser gave up on), where there is no
// ServerResponse to write to: one status line, a short text body if any, and the connection closes.
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

export function refuseSocket(socket: Duplex, status: number, text = '', headers: Record<string, string> = {}): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = text === '' ? '' : `regcache: ${text}\n`;
  const lines = [`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  if (body !== '') lines.push('Content-Type: text/plain; charset=utf-8');
  lines.push(`Content-Length: ${Buffer.byteLength(body)}`, 'Connection: close');
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

/** The 200 a proxy answers a CONNECT with before the tunnel's bytes flow. */
export const CONNECT_ESTABLISHED = 'HTTP/1.1 200 Connection Established\r\n\r\n';
