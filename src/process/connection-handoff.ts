// The primary listens on PORT, MIRROR_PORT and ADMIN_PORT and hands each connection to a worker in turn;
// the worker says it has it, and only then does the primary close its own copy. Node's cluster round-robin
// does the same but keeps its copy until the worker answers: a worker killed with a connection in flight
// never answers, and that client waited forever (the soak's kill-worker: a pull hung 90 s). Here a
// connection not yet taken by a worker that exits is closed, so its client sees a reset and retries.
// Like Node's, one connection at a time is in flight to a worker: one that hangs holds one client, not all.
import net from 'node:net';
import type { Worker } from 'node:cluster';
import type { ServerPorts } from '../admin/server-ports.js';
import { listen, serverPorts, type Door, type Listeners } from '../assembly/listeners.js';
import type { Config } from '../config/config.js';
import type { ProcessChannel } from '../ipc/process-channel.js';
import type { Logger } from '../telemetry/log.js';
import { errorMessage } from '../telemetry/error-message.js';

/** Notes, worker -> primary. */
export const HANDOFF_OPEN = 'handoff.open'; // null: this worker's doors take connections
export const HANDOFF_TAKEN = 'handoff.taken'; // { id }: the worker has the connection sent with this id
export const HANDOFF_CLOSED = 'handoff.closed'; // null: this worker drains; no new connections for it

/** The message a connection travels with (Node's IPC carries the socket beside it). */
interface Handed {
  regcache: 'connection';
  id: number;
  door: Door;
}

// Connections accepted while no worker can take one (all starting or restarting) wait, up to this many.
const MAX_WAITING = 4_096;

interface Target {
  worker: Worker;
  draining: boolean;
  inFlight: { id: number; door: Door; socket: net.Socket } | null;
}

/** The primary's side: the listeners, and the workers that take connections. */
export class ConnectionHandoff {
  private readonly servers: net.Server[] = [];
  private readonly targets = new Map<number, Target>(); // by worker id, in the order they opened
  private readonly queue: { door: Door; socket: net.Socket }[] = []; // accepted, waiting for a worker
  private nextId = 1;
  private turn = 0;
  private overflowing = false;

  constructor(
    private readonly log: Logger,
    private readonly maxWaiting = MAX_WAITING,
  ) {}

  /** Connections accepted that wait for a worker to take them (regcache_connections_waiting). */
  get waiting(): number {
    return this.queue.length;
  }

  /** Listens on every door the configuration opens; throws (naming the variable) if one cannot. */
  async listen(config: Config): Promise<ServerPorts> {
    const bound = async (door: Door): Promise<number> => {
      // Paused: the bytes are for the worker; the primary never reads them.
      const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => this.accepted(door, socket));
      this.servers.push(server);
      await listen(server, door, config);
      server.on('error', (err: NodeJS.ErrnoException) => this.log.error({ door, error: err.message, code: err.code }, 'listener error'));
      return (server.address() as net.AddressInfo).port;
    };
    const mirror = config.mirrorPort !== 0 ? await bound('mirror') : null;
    const admin = config.adminPort !== 0 ? await bound('admin') : null;
    return serverPorts(config, { proxy: await bound('proxy'), mirror, admin });
  }

  /** The worker said its doors are open: it takes connections from now on. */
  open(worker: Worker, channel: ProcessChannel): void {
    const target: Target = { worker, draining: false, inFlight: null };
    this.targets.set(worker.id, target);
    channel.on(HANDOFF_CLOSED, () => (target.draining = true));
    channel.on<{ id: number }>(HANDOFF_TAKEN, ({ id }) => {
      if (target.inFlight?.id !== id) return;
      target.inFlight.socket.destroy(); // the worker has its own descriptor for it
      target.inFlight = null;
      this.serveWaiting();
    });
    this.serveWaiting();
  }

  /** The worker exited: a connection it had not taken is closed (its client retries), never left open. */
  exited(workerId: number): void {
    const target = this.targets.get(workerId);
    this.targets.delete(workerId);
    if (target?.inFlight) {
      this.log.warn({ workerId, door: target.inFlight.door }, 'a connection handed to a worker that exited was closed');
      target.inFlight.socket.destroy();
    }
  }

  /** Stops accepting; connections still waiting for a worker are closed. */
  close(): void {
    for (const server of this.servers) server.close();
    for (const { socket } of this.queue.splice(0)) socket.destroy();
  }

  private accepted(door: Door, socket: net.Socket): void {
    // A reset while it waits here must not become an uncaught error; the worker that takes it sees it closed.
    socket.on('error', (err) => this.log.debug({ door, error: err.message }, 'a waiting connection failed'));
    if (this.handTo(this.freeTarget(), door, socket)) return;
    if (this.queue.length >= this.maxWaiting) {
      if (!this.overflowing) this.log.warn({ waiting: this.queue.length }, 'no worker takes connections: new ones are closed until one does');
      this.overflowing = true;
      socket.destroy();
      return;
    }
    this.queue.push({ door, socket });
  }

  private serveWaiting(): void {
    while (this.queue.length > 0) {
      const target = this.freeTarget();
      if (!target) return;
      const { door, socket } = this.queue.shift()!;
      this.handTo(target, door, socket);
    }
    this.overflowing = false;
  }

  /** The next worker in turn with no connection in flight. */
  private freeTarget(): Target | null {
    const all = [...this.targets.values()];
    for (let i = 0; i < all.length; i++) {
      const target = all[(this.turn + i) % all.length]!;
      if (target.inFlight === null && !target.draining && target.worker.isConnected()) {
        this.turn = (this.turn + i + 1) % all.length;
        return target;
      }
    }
    return null;
  }

  private handTo(target: Target | null, door: Door, socket: net.Socket): boolean {
    if (!target) return false;
    if (socket.destroyed) return true;
    const message: Handed = { regcache: 'connection', id: this.nextId++, door };
    target.inFlight = { id: message.id, door, socket };
    target.worker.send(message, socket, { keepOpen: true }, (err) => {
      if (!err) return;
      // The channel is closing (the worker is exiting): its exit closes this connection too.
      this.log.debug({ workerId: target.worker.id, error: errorMessage(err) }, 'handing a connection to a worker failed');
    });
    return true;
  }
}

/** A worker's side: the connections its primary hands it, each to the server of its door. */
export function handedListeners(channel: ProcessChannel, ports: ServerPorts): Listeners {
  const servers = new Map<Door, net.Server>();
  process.on('message', (message: unknown, socket: unknown) => {
    if (!isHanded(message)) return;
    channel.notify(HANDOFF_TAKEN, { id: message.id });
    const server = servers.get(message.door);
    if (!(socket instanceof net.Socket)) return;
    if (!server) return void socket.destroy(); // the primary hands only doors this worker opened
    server.emit('connection', socket);
  });
  return {
    take(door, server) {
      servers.set(door, server);
      // Node starts an HTTP server's connection tracking (headersTimeout, closeIdleConnections) on 'listening'.
      server.emit('listening');
      const port = door === 'proxy' ? ports.proxy : door === 'mirror' ? ports.mirror?.port : ports.admin;
      if (port === undefined || port === null) throw new Error(`the primary does not listen for the ${door}`);
      return Promise.resolve(port);
    },
    open: () => channel.notify(HANDOFF_OPEN, null),
    close: () => channel.notify(HANDOFF_CLOSED, null),
  };
}

function isHanded(message: unknown): message is Handed {
  return typeof message === 'object' && message !== null && (message as Handed).regcache === 'connection';
}
