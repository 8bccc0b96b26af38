// tier: unit
// Tunnels copy downloads through one reused buffer (src/server/reused-buffer-copy.ts): every byte must
// still arrive intact and in order when the client reads slowly (writes pending, reading paused), when
// the origin speaks first (bytes read before the tunnel is set up), and half-closes must still pass both
// ways. regcache in process and plain TCP origins behind CONNECT_TO; the copy on its own for bytes
// that arrive before it is started.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import net from 'node:net';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { ReusedBufferCopy } from '../src/doors/reused-buffer-copy.js';
import { TmpDirs } from './harness/tmp.js';
import { startInProcessRegcache, type InProcessRegcache } from './support/in-process-regcache.js';

const BULK_BYTES = 48 * 1024 * 1024;

/** Deterministic bytes, different in every block (a shifted or repeated block would not hash the same). */
function bulkBlock(i: number): Buffer {
  const block = Buffer.allocUnsafe(64 * 1024);
  for (let k = 0; k < block.length; k += 4) block.writeUInt32LE((i * 2654435761 + k * 40503) >>> 0, k);
  return block;
}

function expectedBulkDigest(): string {
  const hash = createHash('sha256');
  for (let i = 0; i < BULK_BYTES / (64 * 1024); i++) hash.update(bulkBlock(i));
  return hash.digest('hex');
}

/** A TCP origin; `onConnection` gets every accepted socket. */
async function listen(onConnection: (socket: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.on('error', () => socket.destroy());
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** Sends BULK_BYTES as fast as the socket takes them, then ends. */
async function sendBulk(socket: net.Socket): Promise<void> {
  for (let i = 0; i < BULK_BYTES / (64 * 1024); i++) {
    if (!socket.write(bulkBlock(i))) await new Promise((resolve) => socket.once('drain', resolve));
  }
  socket.end();
}

/** CONNECT through the proxy; resolves with the socket and whatever followed the 200 head in its first reads. */
async function openTunnel(proxyPort: number, authority: string): Promise<{ socket: net.Socket; rest: Buffer }> {
  const socket = net.connect(proxyPort, '127.0.0.1');
  socket.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  let head = Buffer.alloc(0);
  return new Promise((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.off('data', onData);
      socket.pause();
      if (!head.subarray(0, end).toString('latin1').startsWith('HTTP/1.1 200')) reject(new Error(head.toString('latin1')));
      else resolve({ socket, rest: head.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

/** Everything until the tunnel closes. */
async function readAll(socket: net.Socket, first: Buffer, slow: boolean): Promise<Buffer> {
  const chunks = [first];
  socket.resume();
  for await (const chunk of socket as AsyncIterable<Buffer>) {
    chunks.push(chunk);
    // A client that reads in bursts: regcache's writes to it back up and its reads from the origin pause.
    if (slow && chunks.length % 64 === 0) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return Buffer.concat(chunks);
}

describe('tunnel relay: a reused read buffer', () => {
  const tmp = new TmpDirs();
  let proxy: InProcessRegcache;
  let bulk: net.Server;
  let banner: net.Server;
  let shout: net.Server;

  before(async () => {
    const root = await tmp.make('regcache-tunnel-relay');
    // The origin sends the bulk once it has the client's first line.
    bulk = await listen((socket) => socket.once('data', () => void sendBulk(socket)));
    // The origin speaks first: its banner is read before regcache has answered the CONNECT.
    banner = await listen((socket) => socket.write('220 banner from the origin\r\n'));
    // The origin answers once the client has finished sending (half-close), then closes.
    shout = await listen((socket) => {
      const got: Buffer[] = [];
      socket.on('data', (d: Buffer) => got.push(d));
      socket.once('end', () => socket.end(Buffer.concat(got).toString('latin1').toUpperCase()));
    });
    const port = (s: net.Server): number => (s.address() as net.AddressInfo).port;
    proxy = await startInProcessRegcache({
      dir: path.join(root, 'proxy'),
      env: {
        CONNECT_TO: [`bulk.test:443:127.0.0.1:${port(bulk)}`, `banner.test:443:127.0.0.1:${port(banner)}`, `shout.test:443:127.0.0.1:${port(shout)}`].join(','),
      },
    });
  });

  after(async () => {
    await proxy?.stop();
    for (const server of [bulk, banner, shout]) server?.close();
    await tmp.cleanup();
  });

  for (const slow of [false, true]) {
    it(`delivers ${BULK_BYTES / 2 ** 20} MiB intact to a ${slow ? 'client reading in bursts' : 'fast client'}, and logs every byte`, async () => {
      const { socket, rest } = await openTunnel(proxy.port, 'bulk.test:443');
      socket.write('go\n');
      const body = await readAll(socket, rest, slow);
      assert.equal(body.length, BULK_BYTES);
      assert.equal(createHash('sha256').update(body).digest('hex'), expectedBulkDigest());
      const line = await proxy.waitForLog(
        (l) => l.msg === 'tunnel closed' && l.tunnel === 'bulk.test:443' && l.bytesDown === BULK_BYTES && l.bytesUp === 3,
        'the tunnel line',
      );
      assert.equal(line.error, undefined);
    });
  }

  it('relays what the origin sends before the client says anything, after the 200', async () => {
    const { socket, rest } = await openTunnel(proxy.port, 'banner.test:443');
    let got = rest.toString('latin1');
    socket.resume();
    while (!got.includes('\r\n')) got += String((await new Promise<Buffer>((resolve) => socket.once('data', resolve))).toString('latin1'));
    assert.equal(got, '220 banner from the origin\r\n');
    socket.destroy();
  });

  it('passes half-closes both ways: the origin answers after the client has ended its side', async () => {
    const { socket, rest } = await openTunnel(proxy.port, 'shout.test:443');
    socket.end('quiet words');
    assert.equal((await readAll(socket, rest, false)).toString('latin1'), 'QUIET WORDS');
  });
});

describe('ReusedBufferCopy', () => {
  it('keeps what the source read before start() and writes it first, then the rest', async () => {
    const server = await listen((socket) => {
      socket.write('early ');
      setTimeout(() => socket.end('late'), 50);
    });
    const out = new PassThrough();
    const copy = new ReusedBufferCopy(out);
    const source = net.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', onread: copy.onread });
    await new Promise((resolve) => setTimeout(resolve, 25)); // 'early ' has been read meanwhile
    copy.start(source);
    const chunks: Buffer[] = [];
    for await (const chunk of out as AsyncIterable<Buffer>) chunks.push(chunk);
    assert.equal(Buffer.concat(chunks).toString(), 'early late');
    assert.equal(copy.bytes, 'early late'.length);
    server.close();
  });
});
