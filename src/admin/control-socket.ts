// CACHE_DIR/control.sock: how `regcache cache ...` reaches a running server, so that one process owns the
// index and the CLI works while the server runs. It doubles as the lock on the cache directory: a server
// that finds a live socket refuses to start. A Unix socket (mode 0600) lets in only those who could
// touch the files anyway. One JSON request line, one JSON response line.
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { errorMessage } from '../telemetry/error-message.js';

export interface ControlRequest {
  cmd: string;
  args: Record<string, unknown>;
}

export type ControlResponse = { ok: true; result: unknown } | { ok: false; error: string };

export type ControlHandler = (request: ControlRequest) => Promise<unknown>;

const MAX_REQUEST_BYTES = 64 * 1024;

export class CacheDirInUseError extends Error {
  override name = 'CacheDirInUseError';
}

export function controlSocketPath(cacheDir: string): string {
  return path.join(cacheDir, 'control.sock');
}

/** Listens on the control socket; fails with CacheDirInUseError if another process answers there. */
export async function listenControl(cacheDir: string, handler: ControlHandler): Promise<net.Server> {
  const socketPath = controlSocketPath(cacheDir);
  await fs.mkdir(cacheDir, { recursive: true, mode: 0o700 }); // owner only, as ContentStore.open keeps it
  if (await answers(socketPath)) {
    throw new CacheDirInUseError(`${cacheDir} is in use by another regcache (${socketPath} answers); give each process its own CACHE_DIR`);
  }
  await fs.rm(socketPath, { force: true }); // left by a process that died
  const server = net.createServer((socket) => {
    let buffered = '';
    socket.setEncoding('utf8');
    socket.on('error', () => socket.destroy());
    socket.on('data', (chunk: string) => {
      buffered += chunk;
      if (buffered.length > MAX_REQUEST_BYTES) return void socket.destroy();
      const end = buffered.indexOf('\n');
      if (end < 0) return;
      socket.removeAllListeners('data');
      void respond(buffered.slice(0, end), handler).then((response) => socket.end(JSON.stringify(response) + '\n'));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await fs.chmod(socketPath, 0o600);
  return server;
}

/** Sends one request to a running server; null when none is listening. */
export async function askControl(cacheDir: string, request: ControlRequest): Promise<ControlResponse | null> {
  const socketPath = controlSocketPath(cacheDir);
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let text = '';
    socket.setEncoding('utf8');
    socket.once('connect', () => socket.write(JSON.stringify(request) + '\n'));
    socket.on('data', (chunk: string) => (text += chunk));
    socket.once('end', () => {
      try {
        resolve(JSON.parse(text) as ControlResponse);
      } catch {
        reject(new Error(`the regcache server at ${socketPath} sent an unreadable answer`));
      }
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') resolve(null);
      else reject(err);
    });
  });
}

async function respond(line: string, handler: ControlHandler): Promise<ControlResponse> {
  let request: ControlRequest;
  try {
    request = JSON.parse(line) as ControlRequest;
    if (typeof request.cmd !== 'string' || typeof request.args !== 'object' || request.args === null) throw new Error('bad shape');
  } catch {
    // answered as malformed: the client gets the error, nothing else is affected.
    return { ok: false, error: 'malformed control request' };
  }
  try {
    return { ok: true, result: await handler(request) };
  } catch (err) {
    return { ok: false, error: errorMessage(err) };
  }
}

function answers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
