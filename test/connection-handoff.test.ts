// tier: unit
// The primary's handoff of connections (src/process/connection-handoff.ts) with real listeners and client
// sockets and fake workers on in-process channels: each connection goes to the next worker with none in
// flight; the primary closes its copy once the worker says it took it; the one in flight is closed when
// its worker exits (the hang Node's round-robin left); a draining worker gets none; connections wait while
// no worker takes any, up to a bound, and are closed when the primary stops.
import assert from 'node:assert/strict';
import type { Worker } from 'node:cluster';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { loadConfig } from '../src/config/config.js';
import type { ProcessChannel } from '../src/ipc/process-channel.js';
import { ConnectionHandoff, HANDOFF_CLOSED, HANDOFF_TAKEN } from '../src/process/connection-handoff.js';
import { createLogger } from '../src/telemetry/log.js';
import { waitFor } from './harness/proc.js';
import { channelPair } from './support/channel-pair.js';

interface Sent {
  message: { id: number; door: string };
  socket: net.Socket;
}

/** What the primary sees of a worker: its id, whether its channel is up, and what it was sent. */
class FakeWorker {
  readonly sent: Sent[] = [];
  connected = true;
  readonly channel: ProcessChannel; // the worker's end
  readonly primaryEnd: ProcessChannel;

  constructor(readonly id: number) {
    [this.primaryEnd, this.channel] = channelPair();
  }

  isConnected(): boolean {
    return this.connected;
  }

  send(message: Sent['message'], socket: net.Socket, _options: unknown, callback: (err: Error | null) => void): boolean {
    this.sent.push({ message, socket });
    callback(null);
    return true;
  }

  /** Says it took the connection sent with this message. */
  take(sent: Sent): void {
    this.channel.notify(HANDOFF_TAKEN, { id: sent.message.id });
  }

  get asWorker(): Worker {
    return this as unknown as Worker;
  }
}

function harness(maxWaiting?: number) {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const log = createLogger('debug', false, 0, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) });
  const handoff = new ConnectionHandoff(log, maxWaiting);
  const clients: net.Socket[] = [];
  const connect = (port: number): net.Socket => {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => undefined); // closed by the primary: what some tests expect
    clients.push(socket);
    return socket;
  };
  const open = (worker: FakeWorker) => handoff.open(worker.asWorker, worker.primaryEnd);
  return { lines, handoff, connect, open, clients };
}

const config = loadConfig({ PORT: '0', MIRROR_PORT: '0', ADMIN_PORT: '0', DISABLE_IPV6: 'true' });
const until = (probe: () => boolean, what: string) => waitFor(() => Promise.resolve(probe()), { timeoutMs: 5_000, intervalMs: 5, what });

describe('the primary hands each connection to a worker', () => {
  const running: ReturnType<typeof harness>[] = [];
  after(() => {
    for (const h of running) {
      h.handoff.close();
      for (const socket of h.clients) socket.destroy(); // a connection in flight stays for its worker: the fakes never take some
    }
  });

  it('in turn, to workers with none in flight; the primary closes its copy once one is taken', async () => {
    const h = harness();
    running.push(h);
    const ports = await h.handoff.listen(config);
    assert.equal(ports.mirror, null);
    const [a, b] = [new FakeWorker(1), new FakeWorker(2)];
    h.open(a);
    h.open(b);
    for (let i = 0; i < 4; i++) {
      h.connect(ports.proxy);
      await until(() => a.sent.length + b.sent.length === i + 1, `connection ${i + 1} handed`);
      const last = [...a.sent, ...b.sent].find((s) => s.message.id === i + 1)!;
      assert.equal(last.message.door, 'proxy');
      assert.ok(!last.socket.destroyed, 'held until taken');
      (a.sent.includes(last) ? a : b).take(last);
      await until(() => last.socket.destroyed, "the primary's copy closed once taken");
    }
    assert.deepEqual(
      [a.sent.map((s) => s.message.id), b.sent.map((s) => s.message.id)],
      [
        [1, 3],
        [2, 4],
      ],
    );
  });

  it('one in flight per worker: a third connection waits for the first worker that takes its own', async () => {
    const h = harness();
    running.push(h);
    const { proxy } = await h.handoff.listen(config);
    const [a, b] = [new FakeWorker(1), new FakeWorker(2)];
    h.open(a);
    h.open(b);
    for (let i = 0; i < 3; i++) h.connect(proxy);
    await until(() => a.sent.length === 1 && b.sent.length === 1 && h.handoff.waiting === 1, 'one connection each, the third waiting');
    assert.equal(a.sent.length + b.sent.length, 2, 'the third waits: neither worker has taken its first');
    b.take(b.sent[0]!);
    await until(() => b.sent.length === 2, 'the third handed to the worker that took its first');
    assert.equal(a.sent.length, 1);
  });

  it('closes the connection a worker had not taken when that worker exits, and says so', async () => {
    const h = harness();
    running.push(h);
    const { proxy } = await h.handoff.listen(config);
    const a = new FakeWorker(7);
    h.open(a);
    const client = h.connect(proxy);
    await until(() => a.sent.length === 1, 'the connection handed');
    a.connected = false;
    h.handoff.exited(a.id);
    await until(() => client.closed, 'the client to see its connection closed');
    assert.ok(a.sent[0]!.socket.destroyed);
    const line = h.lines.find((l) => l.msg === 'a connection handed to a worker that exited was closed');
    assert.deepEqual([line?.workerId, line?.door], [7, 'proxy']);
  });

  it('hands a draining worker nothing; with no worker to take them, connections wait, then go to one that opens', async () => {
    const h = harness();
    running.push(h);
    const { proxy } = await h.handoff.listen(config);
    const a = new FakeWorker(1);
    h.open(a);
    a.channel.notify(HANDOFF_CLOSED, null);
    await new Promise((resolve) => setImmediate(resolve)); // the note arrives on a later turn, as over IPC
    h.connect(proxy);
    h.connect(proxy);
    await until(() => h.handoff.waiting === 2, 'both connections accepted');
    assert.equal(a.sent.length, 0, 'nothing for the draining worker: both wait');
    const b = new FakeWorker(2);
    h.open(b);
    await until(() => b.sent.length === 1, 'a waiting connection handed to the worker that opened');
    b.take(b.sent[0]!);
    await until(() => b.sent.length === 2, 'then the next');
    assert.equal(a.sent.length, 0);
    assert.equal(h.handoff.waiting, 0);
  });

  it('closes connections beyond the bound that wait for a worker (one warning), and the waiting ones on close', async () => {
    const h = harness(2);
    running.push(h);
    const { proxy } = await h.handoff.listen(config);
    const clients = [0, 1, 2, 3].map(() => h.connect(proxy));
    await until(() => clients[2]!.closed && clients[3]!.closed, 'the two beyond the bound closed');
    assert.equal(h.lines.filter((l) => l.msg === 'no worker takes connections: new ones are closed until one does').length, 1);
    assert.ok(!clients[0]!.closed && !clients[1]!.closed, 'the first two still wait');
    h.handoff.close();
    await until(() => clients[0]!.closed && clients[1]!.closed, 'the waiting ones closed');
  });
});
